"""MuJoCo simulation of the SO-101 arm with a tabletop scene and cameras (ROS-free).

Importing this package first selects a headless OpenGL backend for MuJoCo (``MUJOCO_GL``), so import
it before anything imports ``mujoco``.
"""

from so100_driver.sim.gl_backend import select_gl_backend

GL_BACKEND = select_gl_backend()
