"""Pick MuJoCo's offscreen OpenGL backend before `mujoco` is imported.

MuJoCo reads ``MUJOCO_GL`` once, when it is first imported. On a headless machine the default (GLFW)
needs a display, so we choose surfaceless EGL when libEGL is present and fall back to OSMesa. A value
the user already set is always respected. Our renderer also creates its context with the chosen
backend explicitly, so the order of imports does not matter for the simulation itself.
"""

from __future__ import annotations

import ctypes.util
import os

_CANDIDATES = (("egl", "EGL"), ("osmesa", "OSMesa"))


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` (if unset) to the first headless backend whose library exists; return the choice."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not chosen:
        chosen = next((backend for backend, library in _CANDIDATES if ctypes.util.find_library(library)), "")
        if chosen:
            os.environ["MUJOCO_GL"] = chosen
    return chosen


def gl_context_class(backend: str):
    """MuJoCo's GL context class for ``backend`` (our renderer picks it explicitly, so the choice holds
    even when something imported ``mujoco`` before ``MUJOCO_GL`` was set)."""
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.glfw import GLContext
    return GLContext


def gl_help(backend: str) -> str:
    """An actionable hint to show when creating an offscreen renderer failed."""
    return (
        f"MuJoCo could not create an offscreen OpenGL context (MUJOCO_GL={backend or 'unset'}). "
        "Headless rendering needs EGL (apt install libegl1 libgl1-mesa-dri, then MUJOCO_GL=egl) or "
        "OSMesa (apt install libosmesa6, then MUJOCO_GL=osmesa); set MUJOCO_GL before starting the node."
    )
