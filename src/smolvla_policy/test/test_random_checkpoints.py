"""Tests of the offline random SmolVLA checkpoint generator (``smolvla_policy.model.generate``).

The layout is checked against modules that ``transformers`` itself builds from the written backbone config
(the way LeRobot 0.4.4 assembles SmolVLA: truncated SmolVLM + a narrower Llama expert whose cross-attention
layers take k/v of width kv_heads*head_dim), built on the meta device so that no weights are allocated.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from smolvla_policy.model import generate as rc


def transformers_layout(policy: dict, backbone: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of SmolVLA's state dict, assembled from transformers modules like LeRobot does."""
    from transformers import LlamaModel, SmolVLMConfig, SmolVLMForConditionalGeneration

    config = SmolVLMConfig(**copy.deepcopy(backbone))
    with torch.device("meta"):
        vlm = SmolVLMForConditionalGeneration(config)
        vlm.model.text_model.layers = vlm.model.text_model.layers[: policy["num_vlm_layers"]]
        expert_config = copy.deepcopy(config.text_config)
        hidden = int(config.text_config.hidden_size * policy["expert_width_multiplier"])
        expert_config.hidden_size = hidden
        expert_config.intermediate_size = rc.expert_intermediate_size(hidden)
        expert_config.num_hidden_layers = len(vlm.model.text_model.layers)
        expert = LlamaModel(expert_config)
        kv_width = config.text_config.num_key_value_heads * config.text_config.head_dim
        for i, layer in enumerate(expert.layers):
            if i % policy["self_attn_every_n_layers"]:
                layer.self_attn.k_proj = torch.nn.Linear(kv_width, kv_width, bias=False)
                layer.self_attn.v_proj = torch.nn.Linear(kv_width, kv_width, bias=False)
        expert.embed_tokens = None
    layout = {rc.VLM_PREFIX + k: tuple(v.shape) for k, v in vlm.state_dict().items()}
    layout.update({rc.EXPERT_PREFIX + k: tuple(v.shape) for k, v in expert.state_dict().items()})
    th, eh = config.text_config.hidden_size, hidden
    for name, (out_dim, in_dim) in {
        "state_proj": (th, policy["max_state_dim"]),
        "action_in_proj": (eh, policy["max_action_dim"]),
        "action_out_proj": (policy["max_action_dim"], eh),
        "action_time_mlp_in": (eh, 2 * eh),
        "action_time_mlp_out": (eh, eh),
    }.items():
        layout[f"model.{name}.weight"] = (out_dim, in_dim)
        layout[f"model.{name}.bias"] = (out_dim,)
    return layout


def read_json(path) -> dict:
    return json.loads(path.read_text())


def file_layout(path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), "pt") as f:
        names = f.keys()
        return {k: tuple(f.get_slice(k).get_shape()) for k in names}


FEATURE_SETS = [
    pytest.param(("front",), (3, 480, 640), 5, 3, id="1cam-state5-action3"),
    pytest.param(("top", "wrist"), [(3, 240, 320), (3, 180, 120)], 6, 6, id="2cams-fixture-like"),
    pytest.param(("observation.images.a", "b", "c"), (3, 31, 47), 7, 11, id="3cams-odd-sizes"),
]


@pytest.mark.parametrize(("cameras", "image_shape", "state_dim", "action_dim"), FEATURE_SETS)
def test_tiny_checkpoint_has_lerobot_layout(tmp_path, cameras, image_shape, state_dim, action_dim):
    ckpt = rc.make_tiny_checkpoint(
        tmp_path / "ckpt",
        cameras=cameras,
        image_shape=image_shape,
        state_dim=state_dim,
        action_dim=action_dim,
    )
    policy = read_json(ckpt / "config.json")
    backbone = read_json(ckpt / policy["vlm_model_name"] / "config.json")

    expected_keys = [rc.image_feature_key(c) for c in cameras]
    assert list(policy["input_features"]) == [*expected_keys, "observation.state"]
    shapes = [image_shape] * len(cameras) if isinstance(image_shape[0], int) else image_shape
    assert [policy["input_features"][k]["shape"] for k in expected_keys] == [list(s) for s in shapes]
    assert policy["input_features"]["observation.state"] == {"type": "STATE", "shape": [state_dim]}
    assert policy["output_features"] == {"action": {"type": "ACTION", "shape": [action_dim]}}

    on_disk = file_layout(ckpt / "model.safetensors")
    assert on_disk == transformers_layout(policy, backbone)
    assert on_disk == rc.state_dict_shapes(policy, backbone)
    # the backbone keeps more layers than the policy uses: only the first num_vlm_layers are stored
    assert backbone["text_config"]["num_hidden_layers"] > policy["num_vlm_layers"]
    layers = {k.split(".")[6] for k in on_disk if ".text_model.layers." in k}
    assert layers == {str(i) for i in range(policy["num_vlm_layers"])}


def test_config_has_every_lerobot_field_with_its_default(tmp_path):
    ckpt = rc.make_tiny_checkpoint(tmp_path / "c", chunk_size=12, n_action_steps=8, num_steps=3)
    policy = read_json(ckpt / "config.json")
    for field, default in rc.SMOLVLA_DEFAULTS.items():
        if field in (
            "chunk_size",
            "n_action_steps",
            "num_steps",
            "vlm_model_name",
            "resize_imgs_with_padding",
        ):
            continue
        if field == "num_vlm_layers":
            continue
        assert policy[field] == default, field
    assert (policy["chunk_size"], policy["n_action_steps"], policy["num_steps"]) == (12, 8, 3)
    assert policy["type"] == "smolvla" and policy["n_obs_steps"] == 1
    assert policy["resize_imgs_with_padding"] == [rc.TINY_BACKBONE.image_size] * 2
    assert "fps" not in policy  # not a LeRobot field: only written on request
    assert (ckpt / policy["vlm_model_name"]).is_dir()


def test_processor_files_hold_the_given_statistics(tmp_path):
    stats = {
        "observation.state": {"mean": [1, 2, 3], "std": [0.5, 1, 2]},
        "action": {"mean": [10, 20, 30, 40]},
    }
    ckpt = rc.make_tiny_checkpoint(tmp_path / "c", cameras=("top",), state_dim=3, action_dim=4, stats=stats)
    pre, post = read_json(ckpt / "policy_preprocessor.json"), read_json(ckpt / "policy_postprocessor.json")
    assert [s["registry_name"] for s in pre["steps"]] == [
        "rename_observations_processor",
        "to_batch_processor",
        "smolvla_new_line_processor",
        "tokenizer_processor",
        "device_processor",
        "normalizer_processor",
    ]
    assert [s["registry_name"] for s in post["steps"]] == ["unnormalizer_processor", "device_processor"]
    tokenizer_step = pre["steps"][3]["config"]
    assert tokenizer_step["tokenizer_name"] == read_json(ckpt / "config.json")["vlm_model_name"]
    assert tokenizer_step["max_length"] == 48 and tokenizer_step["padding"] == "longest"
    assert pre["steps"][5]["config"]["eps"] == 1e-8
    assert pre["steps"][5]["state_file"] == rc.PREPROCESSOR_STATE_FILE
    assert post["steps"][0]["state_file"] == rc.POSTPROCESSOR_STATE_FILE
    assert list(post["steps"][0]["config"]["features"]) == ["action"]

    for name in (rc.PREPROCESSOR_STATE_FILE, rc.POSTPROCESSOR_STATE_FILE):
        with safe_open(str(ckpt / name), "pt") as f:
            names = f.keys()
            saved = {k: f.get_tensor(k) for k in names}
        np.testing.assert_array_equal(saved["observation.state.mean"].numpy(), [1, 2, 3])
        np.testing.assert_array_equal(saved["observation.state.std"].numpy(), [0.5, 1, 2])
        np.testing.assert_array_equal(saved["action.mean"].numpy(), [10, 20, 30, 40])
        assert saved["action.std"].shape == (4,) and bool((saved["action.std"] > 0).all())
        assert saved["observation.images.top.mean"].shape == (3, 1, 1)
        assert {"observation.state.min", "observation.state.q99", "action.max"} <= set(saved)
        assert all(t.dtype == torch.float32 for t in saved.values())


def test_tokenizer_follows_smolvlm2_conventions(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    ckpt = rc.make_tiny_checkpoint(tmp_path / "c")
    vlm = ckpt / "tiny_vlm"
    tokenizer = AutoTokenizer.from_pretrained(str(vlm))
    config = AutoConfig.from_pretrained(str(vlm))
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert tokenizer.convert_tokens_to_ids("<image>") == config.image_token_id
    assert len(tokenizer) == config.text_config.vocab_size
    assert tokenizer.fake_image_token_id == tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    assert tokenizer.global_image_token_id == tokenizer.convert_tokens_to_ids("<global-img>")
    assert tokenizer.convert_tokens_to_ids("<end_of_utterance>") == len(tokenizer) - 1
    encoded = tokenizer("pick up the red cube\n", padding="max_length", max_length=16, truncation=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    n = sum(mask)
    assert 1 < n < 16 and ids[n - 1] == tokenizer.convert_tokens_to_ids("Ċ")  # the newline, no EOS appended
    assert ids[n:] == [2] * (16 - n) and ids[0] != 1  # right padding with <|im_end|>, no BOS
    assert tokenizer.decode(ids[:n]) == "pick up the red cube\n"
    assert config.vision_config.hidden_size == rc.TINY_BACKBONE.vision_hidden  # written out, not defaults
    assert config.text_config.head_dim == rc.TINY_BACKBONE.head_dim


def test_weights_are_deterministic_and_follow_the_dtype_layout(tmp_path):
    a = rc.make_tiny_checkpoint(tmp_path / "a", seed=3)
    b = rc.make_tiny_checkpoint(tmp_path / "b", seed=3)
    c = rc.make_tiny_checkpoint(tmp_path / "c", seed=4, dtype="bfloat16")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    key = rc.VLM_PREFIX + "model.text_model.layers.0.self_attn.q_proj.weight"
    with (
        safe_open(str(a / "model.safetensors"), "pt") as fa,
        safe_open(str(c / "model.safetensors"), "pt") as fc,
    ):
        wa, wc = fa.get_tensor(key), fc.get_tensor(key)
        assert wa.dtype == torch.float32 and wc.dtype == torch.bfloat16
        torch.testing.assert_close(wa, rc.random_tensor(key, wa.shape, seed=3), rtol=0, atol=0)
        assert not torch.allclose(wa, wc.float(), atol=1e-2)
        # smolvla_base's layout: projections and the expert's cross-attention k/v stay float32
        assert fc.get_tensor("model.state_proj.weight").dtype == torch.float32
        assert fc.get_tensor(rc.EXPERT_PREFIX + "layers.1.self_attn.k_proj.weight").dtype == torch.float32
        assert fc.get_tensor(rc.EXPERT_PREFIX + "layers.0.self_attn.k_proj.weight").dtype == torch.bfloat16
        norm = fa.get_tensor(rc.EXPERT_PREFIX + "norm.weight")
        assert 0.7 < float(norm.mean()) < 1.3 and float(norm.std()) > 0  # ~1, perturbed


def test_real_size_layout_counts_450m_parameters_without_allocating():
    policy = rc.policy_config(
        {"observation.images.camera1": [3, 256, 256]}, 6, 6, num_expert_layers=0, prefix_length=0
    )
    backbone = rc.backbone_config(rc.SMOLVLM2_500M, vocab_size=49280, image_token_id=49190)
    shapes = rc.state_dict_shapes(policy, backbone)
    assert len(shapes) == 500
    assert rc.count_parameters(shapes) == rc.REAL_SIZE_PARAMETERS == 450_046_176

    def block(prefix: str) -> int:
        return sum(math.prod(s) for k, s in shapes.items() if k.startswith(prefix))

    # the per-block counts of the reference (counted from LeRobot's state dict)
    assert block(rc.VLM_PREFIX + "model.vision_model.") == 86_433_024
    assert block(rc.VLM_PREFIX + "model.connector.") == 11_796_480
    assert block(rc.VLM_PREFIX + "model.text_model.layers.") == 157_317_120
    assert block(rc.VLM_PREFIX) == 350_165_184
    assert block(rc.EXPERT_PREFIX) == 98_245_840
    assert block(rc.EXPERT_PREFIX + "layers.0.") == 6_268_320
    assert block(rc.EXPERT_PREFIX + "layers.1.") == 6_012_320
    # the on-disk bfloat16 layout of smolvla_base: 906,639,456 bytes of tensors
    cross_kv = rc._cross_kv_keys(shapes)
    assert len(cross_kv) == 16

    def itemsize(key: str) -> int:
        dtype = torch.float32 if key in cross_kv else rc.stored_dtype(key, "bfloat16")
        return torch.empty((), dtype=dtype).element_size()

    assert sum(math.prod(s) * itemsize(k) for k, s in shapes.items()) == 906_639_456
    # and transformers' own modules agree on every name and shape
    assert transformers_layout(policy, backbone) == shapes


def test_real_size_tokenizer_has_smolvlm2_special_ids(tmp_path):
    tokenizer = rc.build_tokenizer(rc.SMOLVLM2_500M.base_vocab_size, rc.SMOLVLM2_500M.reserved_tokens)
    assert tokenizer.get_vocab_size(with_added_tokens=True) == 49280
    ids = {t: tokenizer.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert ids == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert tokenizer.token_to_id("<global-img>") == 49152
    assert tokenizer.token_to_id("<row_1_col_1>") == 49153 and tokenizer.token_to_id("<row_6_col_6>") == 49188
    assert tokenizer.token_to_id("<fake_token_around_image>") == 49189
    assert tokenizer.token_to_id("<image>") == 49190
    assert tokenizer.token_to_id("<|reserved_special_token_0|>") == 49191
    assert tokenizer.token_to_id("<end_of_utterance>") == 49279
    assert max(tokenizer.encode("Pick up the red cube 42\n").ids) < 49152


def test_streaming_writer_roundtrip(tmp_path):
    shapes = {"b": (3, 5), "a": (7,), "c": (2, 2, 2)}
    dtypes = {"a": torch.bfloat16, "b": torch.float32, "c": torch.float16}
    path = tmp_path / "x.safetensors"
    size = rc.write_safetensors_streaming(
        path,
        shapes,
        dtypes.__getitem__,
        lambda k, s: torch.arange(math.prod(s), dtype=torch.float32).reshape(s),
    )
    assert size == 7 * 2 + 15 * 4 + 8 * 2
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        for key, shape in shapes.items():
            tensor = f.get_tensor(key)
            assert tensor.dtype == dtypes[key]
            torch.testing.assert_close(
                tensor.float(), torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
            )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_shape": (480, 640)}, "must be (3, H, W)"),
        ({"image_shape": [(3, 8, 8)]}, "1 image shapes for 2 cameras"),
        ({"cameras": ()}, "at least one camera"),
        ({"cameras": ("top", "observation.images.top")}, "unique"),
        ({"chunk_size": 5}, "n_action_steps (50) must be <= chunk_size (5)"),
        ({"num_vlm_layers": 9}, "num_vlm_layers 9 > backbone text layers 6"),
        ({"resize_imgs_with_padding": [512, 512]}, "must equal the backbone's image_size"),
        ({"not_a_field": 1}, "unknown SmolVLA config field"),
        ({"state_dim": 40}, "exceed max_state_dim"),
        ({"stats": {"action": {"std": [1, 1]}}}, "stats['action']['std'] has shape (2,), expected (6,)"),
        ({"stats": {"action": {"std": [0, 1, 1, 1, 1, 1]}}}, "must be positive"),
        ({"stats": {"observation.images.side": {}}}, "unknown feature"),
    ],
)
def test_bad_arguments_give_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=None) as error:
        rc.make_tiny_checkpoint(tmp_path / "c", **kwargs)
    assert message in str(error.value)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        rc.main(
            [
                "tiny",
                str(out),
                "--cameras",
                "left",
                "right",
                "--image-shape",
                "60x80",
                "--state-dim",
                "4",
                "--action-dim",
                "5",
                "--chunk-size",
                "7",
                "--num-steps",
                "2",
                "--fps",
                "15",
            ]
        )
        == 0
    )
    policy = read_json(out / "config.json")
    assert policy["chunk_size"] == policy["n_action_steps"] == 7 and policy["num_steps"] == 2
    assert policy["input_features"]["observation.images.right"]["shape"] == [3, 60, 80]
    assert policy["output_features"]["action"]["shape"] == [5] and policy["fps"] == 15.0
    assert "wrote tiny SmolVLA checkpoint" in capsys.readouterr().out


def _load_smolvla():
    try:
        from smolvla_policy.model import SmolVLA
    except ImportError as error:  # the model implementation lands separately
        pytest.skip(f"smolvla_policy.model.SmolVLA is not importable yet: {error}")
    return SmolVLA


@pytest.mark.parametrize(("cameras", "image_shape", "state_dim", "action_dim"), FEATURE_SETS)
def test_generated_checkpoint_runs_through_smolvla(tmp_path, cameras, image_shape, state_dim, action_dim):
    smolvla = _load_smolvla()
    action_mean = np.linspace(-50.0, 50.0, action_dim)
    stats = {"action": {"mean": action_mean, "std": np.full(action_dim, 1e-6)}}
    ckpt = rc.make_tiny_checkpoint(
        tmp_path / "c",
        cameras=cameras,
        image_shape=image_shape,
        state_dim=state_dim,
        action_dim=action_dim,
        chunk_size=9,
        n_action_steps=9,
        num_steps=3,
        stats=stats,
    )
    policy = smolvla.from_pretrained(str(ckpt))
    keys = [rc.image_feature_key(c) for c in cameras]
    assert list(policy.image_keys) == keys
    assert (policy.state_dim, policy.action_dim, policy.chunk_size) == (state_dim, action_dim, 9)
    rng = np.random.default_rng(0)
    images = {
        k: rng.integers(0, 256, (50 + 7 * i, 70 - 5 * i, 3), dtype=np.uint8) for i, k in enumerate(keys)
    }
    actions = np.asarray(policy.predict_chunk(images, rng.normal(size=state_dim), "pick up the cube"))
    assert actions.shape == (9, action_dim) and np.isfinite(actions).all()
    # with a tiny action std the unnormalised output sits on the stored mean: the checkpoint's units
    np.testing.assert_allclose(actions, np.broadcast_to(action_mean, actions.shape), atol=1e-3)


def test_real_size_builder_refuses_a_layout_that_is_not_smolvla_base(tmp_path):
    with pytest.raises(AssertionError, match="expected 450,046,176"):
        rc.make_real_size_checkpoint(tmp_path / "r", num_vlm_layers=8)
    assert not (tmp_path / "r").exists()  # checked before anything is written
