"""SmolVLA chunk latency and memory at real size: ours (``smolvla_policy.model``) vs LeRobot 0.4.4.

Setup: the exact ``lerobot/smolvla_base`` architecture (450,046,176 parameters, random weights) generated
offline into ``.cache/bench_model/`` (reused between runs), 2 cameras at 480x640, state 6, action 6, chunk 50,
10 denoising steps, one fixed observation, task and noise for both implementations.

Each implementation runs in its own process (clean peak-RSS figures):

- ours: this script in worker mode, with the project venv (``SmolVLA.from_pretrained`` + ``predict_chunk``);
- LeRobot: ``benchmarks/lerobot_reference.py --serve`` with ``.venv-lerobot``
  (``bash scripts/setup_lerobot_reference.sh``): preprocessor + ``predict_action_chunk`` + postprocessor.

Both are loaded, then their chunks are **interleaved** (ours, LeRobot, LeRobot, ours, ...), one at a time,
so that a machine shared with other work slows both alike and the ratio stays meaningful.

Phases, same definition on both sides: ``denoise`` is the time spent in the per-step velocity calls
(ours: ``net.velocity``; LeRobot: ``denoise_step``); ``prefix`` is the rest of the chunk (preprocessing,
vision tower, prefix pass, unnormalising). "float32" is all-float32 on both sides; "bfloat16" is the layout
smolvla_base loads in (bf16 VLM and expert, float32 projections). The max abs difference of the two float32
outputs is printed (golden tolerance: 5e-5).

Usage: ``python benchmarks/bench_model.py [--runs 5] [--dtype float32 bfloat16] [--device cpu|cuda]
[--skip-lerobot] [--skip-hub-layout] [--threads N] [--json OUT]``. On CUDA only ours runs (bfloat16,
CUDA-synchronised timing). On CPU it ends with the load of a checkpoint stored in the hub layout (bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench_model"
LEROBOT_PYTHON = ROOT / ".venv-lerobot" / "bin" / "python"
CAMERAS = ("top", "wrist")
IMAGE_SHAPE = (3, 480, 640)
TASK = "pick up the red cube and place it in the box"
GOLDEN_TOLERANCE = 5e-5


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepare(cache: Path) -> tuple[Path, Path]:
    """Generate (once) the real-size checkpoint and the fixed inputs."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    checkpoint = real_size_checkpoint(cache, "float32")
    inputs = cache / "inputs.safetensors"
    if not inputs.is_file():
        rng = np.random.default_rng(1234)
        tensors = {
            f"observation.images.{c}": torch.from_numpy(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
            for c in CAMERAS
        }
        tensors["observation.state"] = torch.from_numpy(rng.normal(0, 20, 6).astype(np.float32))
        tensors["noise"] = torch.randn(50, 32, generator=torch.Generator().manual_seed(99))
        save_file(tensors, str(inputs), metadata={"task": TASK})
    return checkpoint, inputs


def real_size_checkpoint(cache: Path, stored: str) -> Path:
    """The real-size checkpoint with its tensors stored in float32 or in the hub's bfloat16 layout (once)."""
    from smolvla_policy.model.generate import make_real_size_checkpoint

    checkpoint = cache / f"real_size_{stored}"
    if not (checkpoint / ".complete").is_file():
        print(f"generating the real-size {stored} checkpoint in {checkpoint} (once, ~10 s)", flush=True)
        make_real_size_checkpoint(checkpoint, seed=0, dtype=stored, cameras=CAMERAS, image_shape=IMAGE_SHAPE)
        (checkpoint / ".complete").write_text("ok\n")
    return checkpoint


def hub_layout_load(cache: Path) -> str:
    """Load peak of ours for a checkpoint stored like smolvla_base (bf16 VLM and expert, 907 MB)."""
    checkpoint = real_size_checkpoint(cache, "bfloat16")
    command = [sys.executable, __file__, "--worker", "--load-only", "--checkpoint", str(checkpoint)]
    command += ["--inputs", str(cache / "inputs.safetensors")]
    out = subprocess.run([*command, "--dtype", "bfloat16"], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return f"hub-layout load failed: {out.stderr[-2000:]}"
    info = json.loads(lines[-1])
    stored = (checkpoint / "model.safetensors").stat().st_size / 2**20
    peak, before = info["load_peak_rss_mb"], info["rss_before_load_mb"]
    return (
        f"ours     hub layout (bfloat16 stored, {stored:.0f} MB model.safetensors) -> bfloat16: load "
        f"{info['load_s']:.1f} s, load peak RSS {peak:.0f} MB = {peak / stored:.2f}x the checkpoint's "
        f"weights ({(peak - before) / stored:.2f}x counting only what loading added)"
    )


def weights_mb(checkpoint: Path, dtype: str) -> float:
    """Size of the weights the policy holds (without lm_head and the other tensors inference never uses)
    in the dtype layout it runs in."""
    import torch

    from smolvla_policy.model import generate as rc
    from smolvla_policy.model.network import unused_by_inference

    policy = json.loads((checkpoint / "config.json").read_text())
    backbone = json.loads((checkpoint / policy["vlm_model_name"] / "config.json").read_text())
    shapes = rc.state_dict_shapes(policy, backbone)
    cross_kv = rc._cross_kv_keys(shapes)
    unused = tuple(f"model.{prefix}" for prefix in unused_by_inference(policy["num_vlm_layers"]))
    total = 0
    for key, shape in shapes.items():
        if key.endswith("lm_head.weight") or key.startswith(unused):
            continue
        layout = torch.float32 if key in cross_kv else rc.stored_dtype(key, dtype)
        total += math.prod(shape) * torch.empty((), dtype=layout).element_size()
    return total / 2**20


def summary(values: list[float]) -> dict[str, object]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


# ------------------------------------------------------------------------------------------------- ours
def worker(args: argparse.Namespace) -> int:
    """Ours, in a fresh process: load, answer one JSON line, then serve 'run' / 'finish' commands on stdin."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from smolvla_policy.model import SmolVLA

    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = current_rss_mb()
    start = time.perf_counter()
    policy = SmolVLA.from_pretrained(str(args.checkpoint), device=args.device, dtype=args.dtype[0])
    load_s = time.perf_counter() - start
    load_peak = peak_rss_mb()

    with safe_open(str(args.inputs), "pt") as f:
        names = f.keys()
        tensors = {k: f.get_tensor(k) for k in names}
        task = (f.metadata() or {}).get("task", "")
    images = {k: tensors[k].numpy() for k in policy.image_keys}
    state = tensors["observation.state"].numpy()
    noise = tensors["noise"].numpy()

    cuda = policy.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    spent = [0.0]
    velocity = policy.net.velocity

    def timed_velocity(*a, **kw):  # a pure timer around the per-step call
        sync()
        t0 = time.perf_counter()
        out = velocity(*a, **kw)
        sync()
        spent[0] += time.perf_counter() - t0
        return out

    policy.net.velocity = timed_velocity
    print(
        json.dumps(
            {
                "implementation": "ours",
                "dtype": args.dtype[0],
                "device": str(policy.device),
                "threads": torch.get_num_threads(),
                "parameters": sum(p.numel() for p in policy.net.parameters()),
                "load_s": load_s,
                "rss_before_load_mb": baseline,
                "load_peak_rss_mb": load_peak,
            }
        ),
        flush=True,
    )
    if args.load_only:
        return 0
    actions = None
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            spent[0] = 0.0
            sync()
            t0 = time.perf_counter()
            actions = policy.predict_chunk(images, state, task, noise=noise)
            sync()
            total = time.perf_counter() - t0
            print(json.dumps({"prefix": total - spent[0], "denoise": spent[0], "total": total}), flush=True)
        elif command == "finish":
            if args.out and actions is not None:
                save_file({"actions": torch.from_numpy(actions).float().contiguous()}, str(args.out))
            final = {"peak_rss_mb": peak_rss_mb()}
            if cuda:
                final["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            print(json.dumps(final), flush=True)
            return 0
    return 0


# --------------------------------------------------------------------------------------------- driver
class Server:
    """One implementation in a child process, driven line by line (JSON answers; other output is skipped)."""

    def __init__(self, label: str, command: list[str]):
        self.label = label
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the child
        print(f"  loading {label} ...", flush=True)
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT
        )
        self.info = self._answer()
        self.timings: dict[str, list[float]] = {}
        print(f"  {label} loaded in {self.info['load_s']:.1f} s", flush=True)

    def _answer(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.log.seek(0)
        raise RuntimeError(f"{self.label} exited with {self.proc.wait()}:\n{self.log.read()[-3000:]}")

    def run(self, record: bool) -> None:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if record:
            for name in ("prefix", "denoise", "total"):
                self.timings.setdefault(name, []).append(answer[name])

    def finish(self) -> dict:
        self.proc.stdin.write("finish\n")
        self.proc.stdin.flush()
        final = self._answer()
        self.proc.wait(timeout=120)
        self.log.close()
        result = dict(self.info)
        result.update(final)
        result["timings_s"] = {name: summary(v) for name, v in self.timings.items()}
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def max_abs_diff(a: Path, b: Path) -> tuple[float, float]:
    """Max |a - b| and max |b| of two saved action chunks."""
    from safetensors.torch import load_file

    x, y = load_file(str(a))["actions"], load_file(str(b))["actions"]
    return float((x - y).abs().max()), float(y.abs().max())


def machine_load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


def print_table(results: dict[tuple[str, str], dict], diffs: dict[str, tuple[float, float]], weights) -> None:
    print()
    print(
        f"{'dtype':9} {'phase':8} | {'ours min / median / max (s)':>28} | "
        f"{'LeRobot min / median / max (s)':>31} | ours/LeRobot (median, min)"
    )
    print("-" * 110)
    for dtype in sorted({d for _, d in results}):
        ours, ref = results.get(("ours", dtype)), results.get(("lerobot", dtype))
        for phase in ("prefix", "denoise", "total"):
            cells, medians, minima = [], [], []
            for result in (ours, ref):
                if result is None:
                    cells.append("-")
                    continue
                timing = result["timings_s"][phase]
                cells.append(f"{timing['min']:.3f} / {timing['median']:.3f} / {timing['max']:.3f}")
                medians.append(timing["median"])
                minima.append(timing["min"])
            ratio = (
                f"{medians[0] / medians[1]:.2f}x, {minima[0] / minima[1]:.2f}x" if len(medians) == 2 else "-"
            )
            print(f"{dtype:9} {phase:8} | {cells[0]:>28} | {cells[1]:>31} | {ratio}")
    print()
    for dtype, (diff, scale) in diffs.items():
        verdict = "within" if diff <= GOLDEN_TOLERANCE else "outside"
        note = "" if dtype == "float32" else "; bf16 arithmetic differs by design"
        print(
            f"max |ours - LeRobot| on the {dtype} actions: {diff:.3g} (max |action| {scale:.3g}; {verdict} "
            f"the float32 golden tolerance {GOLDEN_TOLERANCE:g}{note})"
        )
    for (impl, dtype), result in sorted(results.items()):
        line = f"{impl:8} {dtype:9} load {result['load_s']:.1f} s, "
        line += f"load peak RSS {result['load_peak_rss_mb']:.0f} MB"
        if impl == "ours":
            size = weights[dtype]
            above = result["load_peak_rss_mb"] - result["rss_before_load_mb"]
            line += (
                f" for {size:.0f} MB of weights: {result['load_peak_rss_mb'] / size:.2f}x absolute, "
                f"{above / size:.2f}x counting only the {above:.0f} MB added to the "
                f"{result['rss_before_load_mb']:.0f} MB the process held before loading"
            )
        line += f"; peak RSS {result['peak_rss_mb']:.0f} MB after the runs"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed chunks per implementation and dtype")
    parser.add_argument("--warmup", type=int, default=1, help="untimed chunks first")
    parser.add_argument(
        "--dtype", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"]
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: ours only, bfloat16)")
    parser.add_argument("--skip-lerobot", action="store_true", help="time ours only")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both (0: torch's default)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the checkpoint and inputs are kept")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--skip-hub-layout", action="store_true", help="skip the load of a bf16-stored checkpoint"
    )
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint, inputs = prepare(args.cache)
    dtypes = args.dtype if args.device == "cpu" else ["bfloat16"]
    run_lerobot = not args.skip_lerobot and args.device == "cpu"
    if run_lerobot and not LEROBOT_PYTHON.exists():
        print(
            "LeRobot reference venv missing: run `bash scripts/setup_lerobot_reference.sh` "
            "(or pass --skip-lerobot)",
            file=sys.stderr,
        )
        return 2
    print(
        f"SmolVLA real size (450,046,176 parameters), cameras {list(CAMERAS)} at 480x640, 10 steps, "
        f"chunk 50, device {args.device}, {args.runs} interleaved runs after {args.warmup} warm-up; "
        f"{os.cpu_count()} CPUs, {machine_load()} at start"
    )
    threads = ["--threads", str(args.threads)] if args.threads else []
    results: dict[tuple[str, str], dict] = {}
    diffs: dict[str, tuple[float, float]] = {}
    for dtype in dtypes:
        ours_out = args.cache / f"actions_ours_{dtype}.safetensors"
        ref_out = args.cache / f"actions_lerobot_{dtype}.safetensors"
        servers: list[Server] = []
        try:
            common = ["--inputs", str(inputs), "--dtype", dtype, *threads]
            ours_cmd = [sys.executable, __file__, "--worker", "--checkpoint", str(checkpoint), *common]
            ours_cmd += ["--out", str(ours_out), "--device", args.device]
            servers.append(Server(f"ours {dtype}", ours_cmd))
            if run_lerobot:
                harness = str(ROOT / "benchmarks" / "lerobot_reference.py")
                ref_cmd = [
                    str(LEROBOT_PYTHON),
                    harness,
                    str(checkpoint),
                    "--serve",
                    *common,
                    "--out",
                    str(ref_out),
                ]
                servers.append(Server(f"LeRobot {dtype}", ref_cmd))
            for _ in range(args.warmup):
                for server in servers:
                    server.run(record=False)
            for i in range(args.runs):
                for server in servers if i % 2 == 0 else servers[::-1]:
                    server.run(record=True)
                print(f"  {dtype}: run {i + 1}/{args.runs} done ({machine_load()})", flush=True)
            finished = [server.finish() for server in servers]
        finally:
            for server in servers:
                server.kill()
        results[("ours", dtype)] = finished[0]
        if run_lerobot:
            results[("lerobot", dtype)] = finished[1]
            diffs[dtype] = max_abs_diff(ours_out, ref_out)
    weights = {dtype: weights_mb(checkpoint, dtype) for dtype in dtypes}
    print_table(results, diffs, weights)
    if args.device == "cpu" and not args.skip_hub_layout:
        print(hub_layout_load(args.cache))
    print(f"\n{machine_load()} at the end (other processes on this machine inflate the timings)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": {f"{i}/{d}": r for (i, d), r in results.items()},
                    "max_abs_diff": diffs,
                    "weights_mb": weights,
                    "machine": machine_load(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
