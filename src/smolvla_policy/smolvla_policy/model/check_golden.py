"""Reproduce a LeRobot golden fixture (layout of `smolvla_golden_a`) and print the error per case.

Usage: python -m smolvla_policy.model.check_golden <fixture_dir> [--tolerance 5e-5] [--dtype float32]
Exit status 0 when every case is within tolerance.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from .policy import SmolVLA


@dataclass
class CaseResult:
    name: str
    max_abs_error: float
    tokens_equal: bool | None


def load_fixture(fixture_dir: Path, dtype: str = "float32") -> tuple[SmolVLA, dict, dict]:
    meta = json.loads((fixture_dir / "cases.json").read_text())
    policy = SmolVLA.from_pretrained(
        fixture_dir / meta.get("checkpoint", "checkpoint"),
        vlm_path=fixture_dir / meta.get("tiny_vlm", "tiny_vlm"),
        dtype=dtype,
    )
    return policy, meta, load_file(str(fixture_dir / "cases.safetensors"))


def run_fixture(fixture_dir: str | Path, dtype: str = "float32") -> list[CaseResult]:
    """Every single case and every batched run of the fixture, through the public API."""
    fixture_dir = Path(fixture_dir)
    policy, meta, tensors = load_fixture(fixture_dir, dtype)
    results = []
    inputs = []
    for i, case in enumerate(meta["cases"]):
        prefix = f"case{case.get('case', i)}"
        images = {k: tensors[f"{prefix}.input.{k}.uint8_hwc"] for k in policy.image_keys}
        state = tensors[f"{prefix}.input.observation.state"][0]
        noise = tensors[f"{prefix}.noise"][0]
        task = case["task_input"]
        inputs.append((images, state, task, noise))
        actions = policy.predict_chunk(images, state, task, noise=noise)
        expected = tensors[f"{prefix}.output.actions"][0]
        tokens_key = f"{prefix}.pre.observation.language.tokens"
        tokens_equal = None
        if tokens_key in tensors:
            ids, _ = policy.tokenizer([task], policy.device)
            tokens_equal = bool(np.array_equal(ids.cpu().numpy(), tensors[tokens_key]))
        results.append(CaseResult(prefix, float(np.abs(actions - expected).max()), tokens_equal))
    for key in sorted(tensors):
        match = re.fullmatch(r"(batch(\d+))\.output\.actions", key)
        if not match:
            continue
        n = int(match.group(2))
        chosen = inputs[:n]
        actions = policy.predict_chunks(
            {k: [c[0][k] for c in chosen] for k in policy.image_keys},
            np.stack([c[1] for c in chosen]),
            [c[2] for c in chosen],
            noise=np.stack([c[3] for c in chosen]),
        )
        results.append(CaseResult(match.group(1), float(np.abs(actions - tensors[key]).max()), None))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixture_dir", type=Path)
    parser.add_argument("--tolerance", type=float, default=5e-5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    args = parser.parse_args(argv)
    results = run_fixture(args.fixture_dir, args.dtype)
    ok = True
    for r in results:
        passed = r.max_abs_error <= args.tolerance and r.tokens_equal is not False
        ok &= passed
        tokens = "" if r.tokens_equal is None else f"  tokens_equal={r.tokens_equal}"
        print(f"{r.name:8s} max_abs_error={r.max_abs_error:.3e}{tokens}  {'PASS' if passed else 'FAIL'}")
    print("ALL PASS" if ok else f"FAILED (tolerance {args.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
