"""The evaluation report: ``report.json``, ``report.md``, ``report.html`` and PNG plots.

The Markdown and HTML pages are two renderings of one list of blocks (headings, bullet lists, tables,
images), so they always say the same.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_policy.evaluation.evaluate import EvaluationResult

DEG = 180 / math.pi
STYLE = "body{font-family:sans-serif;max-width:960px;margin:auto}td,th{border:1px solid #ccc;padding:2px 8px}"


@dataclass(frozen=True)
class Block:
    kind: str  # "title", "heading", "list", "table", "images"
    items: tuple = ()  # the heading text, list lines, table rows (header first) or image files


def report_dict(result: EvaluationResult) -> dict:
    return {
        "summary": result.summary(),
        "metrics": result.metrics,
        "chunks": [
            {
                "stamp": r.stamp,
                "dt": r.dt,
                "latency": r.latency if math.isfinite(r.latency) else None,
                "task": r.task,
                "mae": _finite_or_none(float(np.nanmean(r.abs_error())))
                if np.isfinite(r.truth).any()
                else None,
                "predicted": np.round(r.predicted, 6).tolist(),
            }
            for r in result.records
        ],
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _fmt(value: Any, scale: float = 1.0, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value * scale:.{digits}g}"


def blocks(result: EvaluationResult, plots: Sequence[str]) -> list[Block]:
    """The report's content, independent of the format."""
    m, s = result.metrics, result.summary()
    overview = (
        f"policy: {result.policy_id}; mode: {result.mode}",
        f"observations sampled: {s['samples']}, chunks: {s['chunks']}, refused: {s['refused']}",
        f"bag duration {s['bag_duration_s']:.2f} s, evaluated in {s['wall_time_s']:.2f} s "
        f"(real-time factor {_fmt(s['real_time_factor'], digits=3)})",
        f"compared actions: {m.get('compared_actions', 0)} "
        f"(without ground truth: {m.get('actions_without_ground_truth', 0)})",
    )
    errors = [("joint", "MAE", "RMSE")]
    for name in ["all", *result.joint_names]:
        mae, rmse = m.get("mae", {}).get(name), m.get("rmse", {}).get(name)
        errors.append((name, f"{_fmt(mae)} ({_fmt(mae, DEG, 3)}°)", f"{_fmt(rmse)} ({_fmt(rmse, DEG, 3)}°)"))
    content = [
        Block("title", (f"SmolVLA evaluation: {Path(result.bag).name}",)),
        Block("list", overview),
        Block("heading", ("Error per joint (rad; degrees in brackets)",)),
        Block("table", tuple(errors)),
        Block("heading", ("Gripper, smoothness, boundaries, latency",)),
        Block("list", _behaviour_lines(m)),
    ]
    if result.refusals:
        refused = sorted(result.refusals.items(), key=lambda item: -item[1])
        content += [
            Block("heading", ("Refused observations",)),
            Block("list", tuple(f"{n} x {r}" for r, n in refused)),
        ]
    return [*content, Block("heading", ("Plots",)), Block("images", tuple(plots))]


def _behaviour_lines(m: dict) -> tuple[str, ...]:
    g, jumps, lat = m.get("gripper", {}), m.get("boundary_jumps", {}), m.get("latency", {})
    smooth = m.get("smoothness", {})

    def second(which: str):
        return smooth.get(which, {}).get("mean_abs_second_difference")

    return (
        f"gripper open/closed agreement: {_fmt(g.get('agreement'))} over {g.get('steps', 0)} steps "
        f"(threshold {_fmt(g.get('threshold'))} rad)",
        f"mean |second difference| per step: predicted {_fmt(second('predicted'))} rad, "
        f"recorded {_fmt(second('recorded'))} rad",
        f"boundary jumps between consecutive chunks: mean {_fmt(jumps.get('mean'))} rad, "
        f"p95 {_fmt(jumps.get('p95'))}, max {_fmt(jumps.get('max'))} ({jumps.get('count', 0)} boundaries)",
        f"inference latency: mean {_fmt(lat.get('mean'), 1e3)} ms, p50 {_fmt(lat.get('p50'), 1e3)} ms, "
        f"p95 {_fmt(lat.get('p95'), 1e3)} ms, max {_fmt(lat.get('max'), 1e3)} ms",
    )


def markdown_report(result: EvaluationResult, plots: Sequence[str]) -> str:
    lines: list[str] = []
    for block in blocks(result, plots):
        if block.kind == "title":
            lines += [f"# {block.items[0]}", ""]
        elif block.kind == "heading":
            lines += ["", f"## {block.items[0]}", ""]
        elif block.kind == "list":
            lines += [f"- {item}" for item in block.items]
        elif block.kind == "table":
            header, *rows = block.items
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
        else:
            lines += [f"![{p}]({p})" for p in block.items]
    return "\n".join(lines) + "\n"


def html_report(result: EvaluationResult, plots: Sequence[str]) -> str:
    body: list[str] = []
    for block in blocks(result, plots):
        items = [html.escape(str(item)) for item in block.items]
        if block.kind == "title":
            body.append(f"<h1>{items[0]}</h1>")
        elif block.kind == "heading":
            body.append(f"<h2>{items[0]}</h2>")
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>")
        elif block.kind == "table":
            header, *rows = block.items
            cells = ["".join(f"<th>{html.escape(c)}</th>" for c in header)]
            cells += ["".join(f"<td>{html.escape(c)}</td>" for c in row) for row in rows]
            body.append("<table>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>")
        else:
            body += [f'<p><img src="{item}" style="max-width:100%"></p>' for item in items]
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>\n"
    return head + "\n".join(body) + "\n</body></html>\n"


def write_plots(result: EvaluationResult, out: Path) -> list[str]:
    """Predicted vs recorded trajectories, error by horizon step and latency histogram as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, draw, size in (
        ("predicted_vs_recorded.png", _draw_trajectories, (10, 1.8 * len(result.joint_names))),
        ("error_by_horizon.png", _draw_horizon_error, (8, 4)),
        ("latency_histogram.png", _draw_latency, (8, 4)),
    ):
        fig = plt.figure(figsize=size)
        draw(fig, result)
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def _draw_trajectories(fig, result: EvaluationResult) -> None:
    names = result.joint_names
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)
    t0 = result.truth.times[0] if len(result.truth.times) else 0.0
    for j, name in enumerate(names):
        ax = axes[j, 0]
        ax.plot(
            result.truth.times - t0, result.truth.positions[:, j], color="black", lw=1.2, label="recorded"
        )
        for k, r in enumerate(result.records):
            label = "predicted chunks" if k == 0 else None
            ax.plot(r.times - t0, r.predicted[:, j], color="tab:orange", lw=0.8, alpha=0.7, label=label)
        ax.set_ylabel(f"{name}\n[rad]", fontsize=8)
    if result.records or len(result.truth.times):
        axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time since first command [s]")


def _draw_horizon_error(fig, result: EvaluationResult) -> None:
    ax = fig.subplots()
    mae = np.array(result.metrics.get("mae_by_step", []), dtype=float)
    if mae.size:
        steps = np.arange(mae.shape[0])
        for j, name in enumerate(result.joint_names):
            ax.plot(steps, mae[:, j], label=name)
        ax.legend(fontsize=8)
    ax.set_xlabel("horizon step (action index in the chunk)")
    ax.set_ylabel("MAE [rad]")
    ax.set_title("error by horizon step")


def _draw_latency(fig, result: EvaluationResult) -> None:
    ax = fig.subplots()
    latencies = [r.latency * 1e3 for r in result.records if math.isfinite(r.latency)]
    if latencies:
        ax.hist(latencies, bins=min(30, max(5, len(latencies) // 2)), color="tab:blue")
    ax.set_xlabel("inference latency [ms]")
    ax.set_ylabel("chunks")
    ax.set_title("inference latency")


#: Every file a report consists of (plots included), so an overwrite leaves nothing stale behind.
REPORT_FILES = (
    "report.json",
    "report.md",
    "report.html",
    "predicted_vs_recorded.png",
    "error_by_horizon.png",
    "latency_histogram.png",
)


def report_files(folder: Path) -> list[str]:
    """The report files present in ``folder``."""
    return [name for name in REPORT_FILES if (folder / name).exists()]


def write_report(result: EvaluationResult, out_dir: str | Path, plots: bool = True) -> Path:
    """Write report.json, report.md, report.html and the PNG plots into ``out_dir``; returns report.json.

    The files of an earlier report in ``out_dir`` are removed first (plots included, also with
    ``plots=False``), so the folder never mixes two runs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in report_files(out):
        (out / name).unlink()
    files = write_plots(result, out) if plots else []
    (out / "report.json").write_text(json.dumps(report_dict(result), indent=1))
    (out / "report.md").write_text(markdown_report(result, files))
    (out / "report.html").write_text(html_report(result, files))
    return out / "report.json"
