"""The demo's report: summary numbers, the console summary, the trajectory plot and camera frames.

Predicted chunks are drawn where the policy meant them (action ``i`` at the observation's stamp + ``i * dt``);
the executed and commanded trajectories show when the executor really ran them (after inference, and with
its stall compensation when the plan had run dry).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from smolvla_bringup.demo.model import ModelChoice
from smolvla_bringup.demo.probe import Recording
from smolvla_common.joints import SO101_JOINTS


def motion_ranges(states: list[tuple[float, list[float]]]) -> dict[str, float]:
    """Per joint: max - min of the measured position over the run (rad)."""
    if not states:
        return {j: 0.0 for j in SO101_JOINTS}
    positions = np.array([row for _, row in states])
    return {j: float(np.ptp(positions[:, i])) for i, j in enumerate(SO101_JOINTS)}


def summarize(data: Recording, t0: float, t_end: float, model: ModelChoice, load_s: float) -> dict:
    latencies = [c["latency"] for c in data.chunks]
    status = data.executor
    run_states = [(t, p) for t, p in data.joint_states if t0 <= t <= t_end]
    idle = int(status.idle_ticks) if status is not None else 0
    return {
        "model": model.description,
        "checkpoint": model.checkpoint,
        "untrained": model.untrained,
        "instruction": None,  # filled by the caller
        "duration_s": round(t_end - t0, 2),  # from the start of the attempts
        "first_chunk_after_s": round(data.chunks[0]["received"] - t0, 2) if data.chunks else None,
        "model_load_s": round(load_s, 1),
        "chunks_published": len(data.chunks),
        "chunks_received": int(status.chunks_received) if status else 0,
        "chunks_dropped": int(status.chunks_dropped) if status else 0,
        "executed_steps": int(status.executed_steps) if status else 0,
        "idle_ticks": idle,
        "idle_ticks_after_first_chunk": idle - data.idle_at_first_chunk
        if data.idle_at_first_chunk is not None
        else None,
        "inference_latency_s": {
            "min": round(min(latencies), 3),
            "median": round(statistics.median(latencies), 3),
            "max": round(max(latencies), 3),
        }
        if latencies
        else None,
        "max_boundary_jump_rad": round(float(status.max_boundary_jump), 4) if status else None,
        "joint_motion_range_rad": {j: round(v, 4) for j, v in motion_ranges(run_states).items()},
        "executor_message": status.message if status else "",
        "policy_message": data.policy.message if data.policy is not None else "",
    }


def print_summary(summary: dict, report: Path) -> None:
    lat = summary["inference_latency_s"]
    print("\n==================== SmolVLA simulation demo: summary ====================")
    print(f"model              {summary['model']}{'   <- UNTRAINED' if summary['untrained'] else ''}")
    print(f"instruction        {summary['instruction']!r}")
    attempts = summary["attempts"]
    times = [f"{a['time_to_success_s']:.1f} s" for a in attempts if a["success"]]
    print(
        f"task               {summary['successes']} of {len(attempts)} attempts succeeded (cube held 3 cm up "
        f"for 1 s; attempts end after {summary['attempt_timeout_s']:g} s)"
        + (f"; time to success {', '.join(times)}" if times else "")
    )
    pictures = [a["picture"] for a in attempts if "picture" in a]
    if pictures:
        print(f"success pictures   {', '.join(pictures)} (in the report folder)")
    print(
        f"pipeline time      {summary['duration_s']:.1f} s of attempts (model loaded in "
        f"{summary['model_load_s']:.0f} s, first chunk after {summary['first_chunk_after_s'] or '-'} s)"
    )
    print(
        f"chunks             {summary['chunks_published']} published, {summary['chunks_received']} "
        f"received by the executor, {summary['chunks_dropped']} dropped"
    )
    if lat:
        print(
            f"inference latency  min {lat['min']:.3f} s | median {lat['median']:.3f} s | "
            f"max {lat['max']:.3f} s"
        )
    after = summary["idle_ticks_after_first_chunk"]
    print(
        f"executor           {summary['executed_steps']} steps executed, {summary['idle_ticks']} idle ticks"
        + (f" ({after} after the first chunk)" if after is not None else "")
    )
    print(
        "joint motion range "
        + ", ".join(f"{j} {v:.3f}" for j, v in summary["joint_motion_range_rad"].items())
        + " rad"
    )
    print(f"report             {report}")
    print("==========================================================================\n")


def plot_trajectories(data: Recording, t0: float, t_end: float, path: Path) -> None:
    """Executed (/joint_states), commanded (/joint_commands) and every predicted chunk, per joint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    start = t0 - 2.0  # a little of the still arm before the instruction
    state_rows = [(t, row) for t, row in data.joint_states if start <= t <= t_end]
    command_rows = [(t, row) for t, row in data.commands if start <= t <= t_end]
    states = np.array([row for _, row in state_rows]) if state_rows else None
    state_t = np.array([t for t, _ in state_rows]) - t0
    commands = np.array([row for _, row in command_rows]) if command_rows else None
    command_t = np.array([t for t, _ in command_rows]) - t0
    for j, (ax, name) in enumerate(zip(axes.flat, SO101_JOINTS, strict=True)):
        for k, chunk in enumerate(data.chunks):
            if not chunk["positions"]:
                continue
            rows = np.array(chunk["positions"])
            times = chunk["stamp"] - t0 + np.arange(len(rows)) * chunk["dt"]
            ax.plot(
                times,
                rows[:, j],
                color="tab:orange",
                alpha=0.5,
                lw=1,
                label="predicted chunks (at their observation's time)" if k == 0 else None,
            )
        if commands is not None:
            ax.plot(command_t, commands[:, j], color="tab:green", lw=1, ls="--", label="commanded")
        if states is not None:
            ax.plot(state_t, states[:, j], color="tab:blue", lw=1.5, label="executed (measured)")
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xlim(start - t0, t_end - t0)
        ax.set_title(name)
        ax.set_ylabel("rad")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("time since the instruction (s)")
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle("SmolVLA in simulation: executed vs predicted joint trajectories")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_frames(frames: dict[str, np.ndarray], folder: Path, label: str) -> list[str]:
    import cv2

    written = []
    for name, rgb in frames.items():
        path = folder / f"camera_{name}_{label}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(path.name)
    return written


def save_montage(frames: dict[str, np.ndarray], path: Path, height: int = 384) -> str:
    """The cameras side by side, each scaled (nearest pixel) to ``height`` rows: one picture of a moment."""
    import cv2

    scaled = [
        cv2.resize(
            rgb, (round(rgb.shape[1] * height / rgb.shape[0]), height), interpolation=cv2.INTER_NEAREST
        )
        for rgb in frames.values()
    ]
    cv2.imwrite(str(path), cv2.cvtColor(np.hstack(scaled), cv2.COLOR_RGB2BGR))
    return path.name
