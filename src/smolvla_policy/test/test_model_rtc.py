"""Real-Time Chunking guidance of the sampler, on a tiny random checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smolvla_policy.model import SmolVLA
from smolvla_policy.model.rtc import guidance_weight, prefix_weights


@pytest.fixture(scope="module")
def setup(tiny_checkpoint_factory):
    policy = SmolVLA.from_pretrained(tiny_checkpoint_factory(chunk_size=20, n_action_steps=20, num_steps=10))
    rng = np.random.default_rng(0)
    images = {k: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for k in policy.image_keys}
    state = rng.normal(size=policy.state_dim) * 10
    noise = rng.normal(size=(policy.chunk_size, policy.max_action_dim)).astype(np.float32)
    base = policy.predict_chunk(images, state, "pick up the cube", noise=noise)
    return policy, images, state, noise, base


def test_linear_schedule_matches_lerobot_definition():
    w = prefix_weights(3, 6, 10, "LINEAR")
    np.testing.assert_allclose(w.numpy(), [1, 1, 1, 0.75, 0.5, 0.25, 0, 0, 0, 0])
    assert prefix_weights(4, 2, 6).tolist() == [1, 1, 0, 0, 0, 0]  # delay beyond the horizon is clipped
    assert prefix_weights(0, 10, 10).tolist()[0] < 1.0
    assert guidance_weight(1.0, 10.0) == 10.0 and guidance_weight(0.5, 10.0) == pytest.approx(2.0)


def test_guided_chunk_follows_pending_actions_over_the_delay(setup):
    policy, images, state, noise, base = setup
    delay = 5
    # Pending actions of a "previous chunk" that differs clearly from what the policy would do on its own.
    target = base + 20.0 * np.sin(np.arange(policy.chunk_size) + 1.0)[:, None]
    guided = policy.predict_chunk(
        images,
        state,
        "pick up the cube",
        noise=noise,
        prev_chunk=target[:15],
        inference_delay=delay,
        execution_horizon=10,
    )
    before = np.abs(base[:delay] - target[:delay]).mean()
    after = np.abs(guided[:delay] - target[:delay]).mean()
    assert after < 0.1 * before, (after, before)
    assert np.abs(guided - base).max() > 1.0  # guidance really changed the chunk


def test_unguided_when_off(setup):
    policy, images, state, noise, base = setup
    again = policy.predict_chunk(images, state, "pick up the cube", noise=noise)
    np.testing.assert_array_equal(again, base)
    zero_weights = policy.predict_chunk(
        images,
        state,
        "pick up the cube",
        noise=noise,
        prev_chunk=base + 50.0,
        inference_delay=0,
        execution_horizon=0,
    )
    np.testing.assert_array_equal(zero_weights, base)


def test_rtc_rejects_bad_pending_actions(setup):
    policy, images, state, noise, base = setup
    with pytest.raises(ValueError, match="prev_chunk"):
        policy.predict_chunk(images, state, "x", noise=noise, prev_chunk=np.zeros((5, policy.action_dim + 1)))
    with pytest.raises(ValueError, match="inference_delay"):
        policy.predict_chunk(images, state, "x", noise=noise, prev_chunk=base, inference_delay=-1)
    assert torch.is_tensor(prefix_weights(2, 4, 8))
