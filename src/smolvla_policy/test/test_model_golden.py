"""Golden test: LeRobot 0.4.4's own outputs (fixture `smolvla_golden_a`) reproduced through `predict_chunk`.

The fixture folder is `$SMOLVLA_GOLDEN_DIR`, or `shared/fixtures/smolvla_golden_a` next to the repository.
Any fixture of the same layout can be checked with `python -m smolvla_policy.model.check_golden <dir>`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from smolvla_policy.model.check_golden import load_fixture, main, run_fixture

TOLERANCE = 5e-5  # the fixture's recommended float32 bound on the final actions


def golden_dir() -> Path:
    env = os.environ.get("SMOLVLA_GOLDEN_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "smolvla_golden_a"


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    path = golden_dir()
    if not (path / "cases.json").is_file():
        pytest.skip(f"golden fixture not found at {path} (set SMOLVLA_GOLDEN_DIR)")
    return path


def test_every_golden_case_matches_lerobot(fixture_dir):
    results = run_fixture(fixture_dir)
    names = [r.name for r in results]
    assert len(names) >= 2 and any(n.startswith("batch") for n in names), names
    for r in results:
        assert r.max_abs_error <= TOLERANCE, f"{r.name}: max |Δ action| = {r.max_abs_error:.3e}"
        assert r.tokens_equal in (None, True), f"{r.name}: token ids differ from LeRobot's"


def test_check_golden_cli(fixture_dir, capsys):
    assert main([str(fixture_dir)]) == 0
    out = capsys.readouterr().out
    assert "ALL PASS" in out and "case0" in out
    assert main([str(fixture_dir), "--tolerance", "1e-12"]) == 1  # the tool can fail


def test_golden_intermediates_match(fixture_dir):
    """Preprocessing and the prefix pass agree with LeRobot's captured intermediates (debug aid)."""
    import torch

    policy, meta, tensors = load_fixture(fixture_dir)
    net = policy.net
    case = "case0"
    task = meta["cases"][0]["task_input"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: as predict_chunk does for small models
    try:
        _check_intermediates(policy, net, tensors, case, task)
    finally:
        torch.set_num_threads(threads)


def _check_intermediates(policy, net, tensors, case, task):
    import torch

    with torch.inference_mode():
        from smolvla_policy.model.preprocess import images_to_model

        size = policy.config.resize_imgs_with_padding
        pixels = {
            k: images_to_model([tensors[f"{case}.input.{k}.uint8_hwc"]], size, policy.device)
            for k in policy.image_keys
        }
        for key, pix in pixels.items():
            np.testing.assert_allclose(pix.numpy(), tensors[f"{case}.model.images.{key}"], atol=1e-6)
            emb = net.embed_images(pix)
            np.testing.assert_allclose(emb.numpy(), tensors[f"{case}.model.img_emb.{key}"], atol=1e-5)
        state = policy.state_norm.normalize(torch.from_numpy(tensors[f"{case}.input.observation.state"]))
        np.testing.assert_allclose(state.numpy(), tensors[f"{case}.pre.observation.state"], atol=1e-6)
        tokens, mask = policy.tokenizer([task], policy.device)
        np.testing.assert_array_equal(tokens.numpy(), tensors[f"{case}.pre.observation.language.tokens"])
        np.testing.assert_array_equal(
            mask.numpy(), tensors[f"{case}.pre.observation.language.attention_mask"] > 0
        )
        padded = torch.nn.functional.pad(state, (0, policy.config.max_state_dim - policy.state_dim))
        embs = [net.embed_images(p) for p in pixels.values()]
        masks = [torch.ones(1, dtype=torch.bool)] * len(embs)
        prefix, pad, flags = net.embed_prefix(embs, masks, tokens, mask, padded)
        np.testing.assert_allclose(prefix.numpy(), tensors[f"{case}.model.prefix_embs"], atol=1e-5)
        np.testing.assert_array_equal(pad.numpy(), tensors[f"{case}.model.prefix_pad_masks"] > 0)
        np.testing.assert_array_equal(flags.numpy(), tensors[f"{case}.model.prefix_att_masks"] > 0)
        cache = net.fill_cache(prefix, pad, flags)
        x = torch.from_numpy(tensors[f"{case}.noise"])
        step_time = float(tensors[f"{case}.model.step0.time"][0])
        t_emb = net.time_embeddings([step_time], 1, policy.device)[0]
        v = net.velocity(x, t_emb, cache)
        np.testing.assert_allclose(v.numpy(), tensors[f"{case}.model.step0.v_t"], atol=1e-5)
