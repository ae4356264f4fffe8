"""Public API of `smolvla_policy.model.SmolVLA`: loading, properties, input validation, config variants."""

from __future__ import annotations

import ast
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import smolvla_policy.model
from smolvla_policy.model import CheckpointError, SmolVLA
from smolvla_policy.model.network import SmolVLANet

TASK = "pick up the red cube"


def observation(policy: SmolVLA, seed: int = 0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for k in policy.image_keys}
    state = rng.normal(size=policy.state_dim) * 10
    noise = rng.normal(size=(policy.chunk_size, policy.max_action_dim)).astype(np.float32)
    return images, state, noise


@pytest.fixture(scope="module")
def policy(tiny_checkpoint):
    return SmolVLA.from_pretrained(tiny_checkpoint)


def test_properties_and_output(policy, tiny_checkpoint):
    raw = json.loads((tiny_checkpoint / "config.json").read_text())
    assert policy.image_keys == [k for k, v in raw["input_features"].items() if v["type"] == "VISUAL"]
    assert (policy.state_dim, policy.action_dim, policy.chunk_size) == (6, 6, raw["chunk_size"])
    assert policy.fps is None
    # lm_head, and what the last VLM layer never runs (it only provides keys and values) and the final norm
    last = f"model.vlm_with_expert.vlm.model.text_model.layers.{raw['num_vlm_layers'] - 1}."
    assert sorted(policy.load_report.ignored) == sorted(
        [
            "model.vlm_with_expert.vlm.lm_head.weight",
            "model.vlm_with_expert.vlm.model.text_model.norm.weight",
            f"{last}post_attention_layernorm.weight",
            *(f"{last}self_attn.{p}_proj.weight" for p in ("q", "o")),
            *(f"{last}mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
        ]
    )
    assert policy.load_report.unexpected == []
    images, state, noise = observation(policy)
    actions = policy.predict_chunk(images, state, TASK, noise=noise)
    assert actions.shape == (policy.chunk_size, policy.action_dim) and np.isfinite(actions).all()
    np.testing.assert_array_equal(actions, policy.predict_chunk(images, state, TASK, noise=noise))
    sampled = policy.predict_chunk(images, state, TASK)
    assert sampled.shape == actions.shape and not np.array_equal(sampled, actions)
    # Images of any size are accepted (resize with padding), and the batched variant agrees.
    other = {k: np.ascontiguousarray(np.rot90(v)) for k, v in images.items()}
    batched = policy.predict_chunks(
        {k: [images[k], other[k]] for k in policy.image_keys},
        np.stack([state, state]),
        [TASK, "open"],
        noise=np.stack([noise, noise]),
    )
    np.testing.assert_allclose(batched[0], actions, atol=1e-4)
    assert batched.shape == (2, policy.chunk_size, policy.action_dim)


def test_seeded_noise_repeats_a_sequence_of_chunks(tiny_checkpoint):
    """A seeded model gives the same sequence of sampled chunks after each reseed, another seed another one,
    and explicit noise still wins; noise_scale 0 removes the noise; unseeding goes back to torch's RNG."""
    policy = SmolVLA.from_pretrained(tiny_checkpoint)
    images, state, noise = observation(policy)

    def two_chunks(seed):
        policy.seed_noise(seed)
        return [policy.predict_chunk(images, state, TASK) for _ in range(2)]

    first, again, other = two_chunks(7), two_chunks(7), two_chunks(8)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # draws go on: chunks of one run differ
    assert not np.array_equal(first[0], other[0])
    policy.seed_noise(7)
    np.testing.assert_array_equal(
        policy.predict_chunk(images, state, TASK, noise=noise),
        SmolVLA.from_pretrained(tiny_checkpoint).predict_chunk(images, state, TASK, noise=noise),
    )
    # noise_scale 0: every chunk starts from the mean of the noise, whatever the seed
    policy.noise_scale = 0.0
    np.testing.assert_array_equal(two_chunks(7)[0], two_chunks(8)[1])
    np.testing.assert_array_equal(
        two_chunks(7)[0], policy.predict_chunk(images, state, TASK, noise=np.zeros_like(noise))
    )
    policy.noise_scale = 1.0
    policy.seed_noise(None)
    torch.manual_seed(7)
    unseeded = policy.predict_chunk(images, state, TASK)
    torch.manual_seed(7)
    np.testing.assert_array_equal(unseeded, policy.predict_chunk(images, state, TASK))


def test_model_package_never_imports_ros():
    """Static check of every module of smolvla_policy.model (cheaper than a fresh interpreter)."""
    package = Path(smolvla_policy.model.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.split(".")[0] in ("rclpy", "rosidl_runtime_py")], path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda i, s: ({"observation.images.front": next(iter(i.values()))}, s),
            "expected \\['observation.images",
        ),
        (lambda i, s: (i, s[:-1]), "state must have 6 values"),
        (lambda i, s: (i, np.where(np.arange(6) == 2, np.nan, s)), "NaN"),
        (lambda i, s: ({k: v.astype(np.float32) for k, v in i.items()}, s), "must be uint8"),
        (lambda i, s: ({k: v[..., :1] for k, v in i.items()}, s), "shape \\(H, W, 3\\)"),
        (lambda i, s: (i, s.reshape(2, 3)), "1-D array"),
    ],
)
def test_bad_inputs_are_rejected_clearly(policy, mutate, match):
    images, state, _ = observation(policy)
    bad_images, bad_state = mutate(images, state)
    with pytest.raises(ValueError, match=match):
        policy.predict_chunk(bad_images, bad_state, TASK)


def test_bad_noise_shape(policy):
    images, state, _ = observation(policy)
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.predict_chunk(images, state, TASK, noise=np.zeros((3, 3)))


def test_loading_errors(tmp_path, tiny_checkpoint, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        SmolVLA.from_pretrained(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"lacks model\.safetensors"):
        SmolVLA.from_pretrained(broken)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        SmolVLA.from_pretrained("someone/not-cached-smolvla")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        SmolVLA.from_pretrained(tiny_checkpoint, vlm_path=tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        SmolVLA.from_pretrained(tiny_checkpoint, dtype="int8")
    with pytest.raises(ValueError, match="cuda_graph"):
        SmolVLA.from_pretrained(tiny_checkpoint, cuda_graph=True)


def test_missing_and_unexpected_tensors(tmp_path, tiny_checkpoint):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    tensors = load_file(ckpt / "model.safetensors")
    tensors["model.some_new_head.weight"] = torch.zeros(2)
    save_file(tensors, ckpt / "model.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = SmolVLA.from_pretrained(ckpt)
    assert loaded.load_report.unexpected == ["model.some_new_head.weight"]
    assert any("some_new_head" in str(w.message) for w in caught)
    del tensors["model.action_out_proj.bias"]
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks 1 tensors.*action_out_proj\.bias"):
        SmolVLA.from_pretrained(ckpt)


def test_reduced_precision_layouts_agree_loosely(policy, tiny_checkpoint):
    images, state, noise = observation(policy)
    ref = policy.predict_chunk(images, state, TASK, noise=noise)
    scale = np.abs(ref).max()
    for dtype in ("bfloat16", "auto"):
        low = SmolVLA.from_pretrained(tiny_checkpoint, dtype=dtype)
        out = low.predict_chunk(images, state, TASK, noise=noise)
        assert np.abs(out - ref).max() < 0.1 * scale, dtype
    low = SmolVLA.from_pretrained(tiny_checkpoint, dtype="bfloat16")
    assert low.net.text.layers[0].self_attn.qkv.dtype == torch.bfloat16
    assert low.net.action_out_proj.dtype == torch.float32
    cross = sorted(low.net.expert_cross_layers)[0]
    assert low.net.expert.layers[cross].self_attn.k_in.dtype == torch.float32


def test_masked_padding_does_not_change_actions(tiny_checkpoint_factory):
    """Language padding to max_length and prefix padding are masked: same actions as without them."""
    plain = SmolVLA.from_pretrained(tiny_checkpoint_factory())
    padded = SmolVLA.from_pretrained(
        tiny_checkpoint_factory(pad_language_to="max_length", tokenizer_max_length=30, prefix_length=60)
    )
    images, state, noise = observation(plain)
    a = plain.predict_chunk(images, state, TASK, noise=noise)
    b = padded.predict_chunk(images, state, TASK, noise=noise)
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(a).max())


def test_config_variants_run(tiny_checkpoint_factory):
    """Other layer counts, intervals, cameras, sizes, special tokens and empty cameras build and run."""
    variants = [
        {
            "add_image_special_tokens": True,
            "cameras": ("a", "b", "c"),
            "state_dim": 4,
            "action_dim": 7,
            "stats": {},
        },
        {"self_attn_every_n_layers": 3, "num_vlm_layers": 6, "chunk_size": 7, "n_action_steps": 7},
        {"empty_cameras": 1, "cameras": ("front",), "expert_width_multiplier": 0.5},
        {"attention_mode": "self_attn", "fps": 15.0},
    ]
    for options in variants:
        policy = SmolVLA.from_pretrained(tiny_checkpoint_factory(**options))
        images, state, noise = observation(policy, size=(30, 90))
        out = policy.predict_chunk(images, state, TASK, noise=noise)
        assert out.shape == (policy.chunk_size, options.get("action_dim", 6)) and np.isfinite(out).all()
        assert policy.fps == options.get("fps")


def test_real_size_architecture_parameter_count():
    """The smolvla_base architecture built on the meta device: 450,046,176 parameters with lm_head."""
    from transformers import SmolVLMConfig

    from smolvla_policy.model.config import PolicyConfig
    from smolvla_policy.model.generate import SMOLVLM2_500M, backbone_config, policy_config

    raw = policy_config({"observation.images.camera1": (3, 256, 256)}, 6, 6, num_expert_layers=0)
    with torch.device("meta"):
        net = SmolVLANet(
            PolicyConfig.from_dict(raw), SmolVLMConfig(**backbone_config(SMOLVLM2_500M, 49280, 49190))
        )
    lm_head = 49280 * 960
    assert sum(p.numel() for p in net.parameters()) + lm_head == 450_046_176
