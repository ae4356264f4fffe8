"""Finding and reading LeRobot SmolVLA checkpoints: files, processor stats and a low-memory tensor reader."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

CHECKPOINT_PATTERNS = ["config.json", "model.safetensors", "policy_preprocessor*", "policy_postprocessor*"]
VLM_PATTERNS = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
]
_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(RuntimeError):
    """A checkpoint or backbone folder is missing, incomplete or inconsistent."""


def _download(repo_id: str, patterns: list[str], what: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, no network: all end here
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (HF_HUB_OFFLINE is set and the files are not in the local cache)" if offline else ""
        raise CheckpointError(
            f"{what} {repo_id!r} is not a local folder and could not be fetched from the Hugging Face hub"
            f"{hint}: {type(exc).__name__}: {exc}. Pass a local directory instead."
        ) from exc


def resolve_checkpoint_dir(path_or_repo_id: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub repo id downloaded (only the policy files, no VLM weights)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        ckpt = path
    elif path.exists():
        raise CheckpointError(
            f"checkpoint path {str(path)!r} is a file; expected a LeRobot pretrained_model dir"
        )
    elif str(path_or_repo_id).startswith((".", "/", "~")) or str(path_or_repo_id).count("/") != 1:
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    else:
        ckpt = _download(str(path_or_repo_id), CHECKPOINT_PATTERNS, "checkpoint")
    for name in ("config.json", "model.safetensors"):
        if not (ckpt / name).is_file():
            raise CheckpointError(
                f"checkpoint directory {str(ckpt)!r} lacks {name}; expected a LeRobot pretrained_model "
                "folder (config.json, model.safetensors, policy_preprocessor*, policy_postprocessor*)"
            )
    return ckpt


def resolve_vlm_dir(name: str, checkpoint_dir: Path, override: str | os.PathLike | None = None) -> Path:
    """The backbone folder (config + tokenizer only): override, a folder next to the checkpoint, or hub."""
    if override is not None:
        path = Path(override).expanduser()
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"vlm_path {str(path)!r} has no config.json (expected a SmolVLM model folder)"
            )
        return path
    for candidate in (Path(name).expanduser(), checkpoint_dir / name, checkpoint_dir.parent / name):
        if (candidate / "config.json").is_file():
            return candidate
    return _download(name, VLM_PATTERNS, "vlm_model_name")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


class SafetensorsReader:
    """Reads tensors one at a time with plain file reads (no mmap), so loading never holds a second copy."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries = header
        self._data_start = 8 + header_len

    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.entries[key]["shape"])

    def dtype(self, key: str) -> torch.dtype:
        return _ST_DTYPES[self.entries[key]["dtype"]]

    def read(self, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        with open(self.path, "rb", buffering=0) as f:
            for key in keys:
                entry = self.entries[key]
                start, end = entry["data_offsets"]
                tensor = torch.empty(entry["shape"], dtype=_ST_DTYPES[entry["dtype"]])
                nbytes = end - start
                if nbytes:
                    f.seek(self._data_start + start)
                    view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
                    got = 0
                    while got < nbytes:
                        n = f.readinto(view[got:])
                        if not n:
                            raise CheckpointError(f"{self.path} is truncated (tensor {key})")
                        got += n
                yield key, tensor


def _load_stats_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    reader = SafetensorsReader(path)
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in reader.read(reader.names()):
        feature, _, stat = key.rpartition(".")
        stats.setdefault(feature, {})[stat] = tensor.to(torch.float32)
    return stats


def load_processor_steps(checkpoint_dir: Path) -> tuple[dict, dict]:
    """The tokenizer step config and the normalisation setup (stats, norm map, eps) from processor files."""
    tokenizer_step: dict = {}
    norm: dict = {"stats": {}, "norm_map": None, "eps": 1e-8}
    pre = checkpoint_dir / "policy_preprocessor.json"
    post = checkpoint_dir / "policy_postprocessor.json"
    for path in (pre, post):
        if not path.is_file():
            continue
        for step in read_json(path).get("steps", []):
            name = step.get("registry_name", "")
            config = step.get("config") or {}
            if name == "tokenizer_processor" and path == pre:
                tokenizer_step = config
            if name in ("normalizer_processor", "unnormalizer_processor"):
                if config.get("norm_map"):
                    norm["norm_map"] = config["norm_map"]
                if path == pre and config.get("eps") is not None:
                    norm["eps"] = float(config["eps"])
                if step.get("state_file"):
                    state_path = checkpoint_dir / step["state_file"]
                    if not state_path.is_file():
                        raise CheckpointError(f"{path.name} refers to {step['state_file']}, which is missing")
                    for feature, values in _load_stats_file(state_path).items():
                        norm["stats"].setdefault(feature, {}).update(values)
    return tokenizer_step, norm


def legacy_stats(reader: SafetensorsReader) -> dict[str, dict[str, torch.Tensor]]:
    """Normaliser buffers kept inside model.safetensors by pre-processor-pipeline checkpoints."""
    keys = [k for k in reader.names() if k.startswith(("normalize_inputs.", "unnormalize_outputs."))]
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in reader.read(keys):
        buffer, _, stat = key.split(".", 1)[1].rpartition(".")
        feature = buffer.removeprefix("buffer_").replace("_", ".")
        stats.setdefault(feature, {})[stat] = tensor.to(torch.float32)
    return stats
