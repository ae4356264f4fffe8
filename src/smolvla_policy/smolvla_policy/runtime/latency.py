"""Added inference latency (ROS-free): hold a computed chunk back to make the model look slower.

For closed-loop experiments: the policy node's ``added_latency_s`` holds every chunk that long after its
inference before publishing it, and counts the time held in the chunk's reported latency, so the executor
(sync or async) and the RTC delay estimate see a slower model, as if the inference itself took that long.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from smolvla_policy.runtime.core import InferredChunk


def added_latency_problem(value: float) -> str | None:
    """Why ``value`` (s) cannot be an added latency, or None when it can (finite and >= 0)."""
    if not math.isfinite(value) or value < 0.0:
        return "a finite value >= 0 (s)"
    return None


def hold_back(
    chunk: InferredChunk,
    added_latency_s: float,
    wait: Callable[[float], bool],
    clock: Callable[[], float] = time.perf_counter,
) -> InferredChunk | None:
    """``chunk`` after waiting ``added_latency_s``, its ``latency`` increased by the time really held.

    ``wait(seconds)`` sleeps at most that long and returns False when the caller is stopping (then None is
    returned and nothing should be published); it may return early, the rest is waited again.
    """
    if added_latency_s <= 0.0:
        return chunk
    started = clock()
    while (remaining := added_latency_s - (clock() - started)) > 0.0:
        if not wait(remaining):
            return None
    return dataclasses.replace(chunk, latency=chunk.latency + (clock() - started))
