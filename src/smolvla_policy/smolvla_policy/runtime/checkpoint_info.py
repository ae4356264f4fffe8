"""What a checkpoint expects (features, sizes, fps, dataset statistics), read without loading the weights.

Reading this first lets the policy node validate its configuration in milliseconds, before spending
seconds to minutes loading a 450M-parameter model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smolvla_policy.features import ACTION_KEY, STATE_KEY

__all__ = ["ACTION_KEY", "STATE_KEY", "CheckpointInfo"]


@dataclass(frozen=True)
class CheckpointInfo:
    """The checkpoint's contract: image features in config order, state/action sizes, chunk, fps, stats."""

    image_shapes: dict[str, tuple[int, int, int]]  # feature key -> (C, H, W), in the checkpoint's order
    state_dim: int
    action_dim: int
    chunk_size: int
    fps: float | None = None
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # feature -> stat -> values
    path: str = ""

    @property
    def image_keys(self) -> list[str]:
        return list(self.image_shapes)

    @classmethod
    def from_checkpoint(cls, path_or_repo_id: str) -> CheckpointInfo:
        """Read ``config.json`` and the normaliser statistics of a local folder or a (cached) hub repo."""
        from smolvla_policy.model.checkpoint import load_processor_steps, read_json, resolve_checkpoint_dir
        from smolvla_policy.model.config import PolicyConfig

        folder = resolve_checkpoint_dir(path_or_repo_id)
        raw = read_json(Path(folder) / "config.json")
        config = PolicyConfig.from_dict(raw)
        _, norm = load_processor_steps(Path(folder))
        stats = {
            feature: {name: np.asarray(t.numpy(), dtype=np.float64) for name, t in values.items()}
            for feature, values in norm["stats"].items()
            if feature in (STATE_KEY, ACTION_KEY)
        }
        return cls(
            image_shapes={k: tuple(int(s) for s in config.image_features[k]) for k in config.camera_keys},
            state_dim=config.state_dim,
            action_dim=config.action_dim,
            chunk_size=config.chunk_size,
            fps=config.fps,
            stats=stats,
            path=str(path_or_repo_id),
        )
