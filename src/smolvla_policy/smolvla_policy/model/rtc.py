"""Real-Time Chunking guidance for the flow-matching sampler (LeRobot 0.4.4's schedule and weight)."""

from __future__ import annotations

import math

import torch


def prefix_weights(delay: int, horizon: int, total: int, schedule: str = "LINEAR") -> torch.Tensor:
    """Per-step guidance weights (total,): 1 over the delay, a ramp down to the horizon, then 0."""
    start = min(delay, horizon)
    schedule = schedule.upper()
    if schedule == "ZEROS":
        w = torch.zeros(total)
        w[:start] = 1.0
        return w
    if schedule == "ONES":
        w = torch.ones(total)
        w[horizon:] = 0.0
        return w
    if schedule not in ("LINEAR", "EXP"):
        raise ValueError(f"unknown RTC prefix schedule {schedule!r}")
    ramp_len = total - max(total - horizon, 0) - start
    ramp = torch.linspace(1, 0, ramp_len + 2)[1:-1] if horizon > start and ramp_len > 0 else torch.zeros(0)
    if schedule == "EXP":
        ramp = ramp * torch.expm1(ramp) / (math.e - 1)
    parts = [torch.ones(min(start, total)), ramp, torch.zeros(max(total - horizon, 0))]
    return torch.cat(parts)[:total]


def guidance_weight(time: float, max_weight: float) -> float:
    """min(max_w, t/(1-t) * (t^2 + (1-t)^2) / t^2) with t the flow time (1 = noise)."""
    if time >= 1.0:
        return max_weight
    if time <= 0.0:
        return 0.0
    value = time / (1 - time) * (time**2 + (1 - time) ** 2) / time**2
    return min(value, max_weight)


def guide_velocity(
    v: torch.Tensor,
    x_t: torch.Tensor,
    time: float,
    target: torch.Tensor,
    weights: torch.Tensor,
    max_weight: float,
) -> torch.Tensor:
    """Pull the predicted clean chunk x_t - t*v toward the target over the weighted steps."""
    predicted = x_t - time * v
    error = (target - predicted) * weights[None, :, None]
    return v - guidance_weight(time, max_weight) * error
