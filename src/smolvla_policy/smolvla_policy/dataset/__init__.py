"""Bags -> LeRobotDataset v3.0 folder (``smolvla-export-dataset``), for fine-tuning SmolVLA with LeRobot.

Each bag is one episode. Frames are taken on a fixed ``fps`` grid from the first time every input has a
message to the last time the joint states and the actions both have one; at frame time ``t`` every feature is
the newest message received at or before ``t`` (the same rule the policy node and ``smolvla-eval`` use):

- ``observation.state``: ``/joint_states`` converted to the chosen LeRobot units (``degrees``: body joints in
  degrees, gripper 0..100; ``range``: -100..100 and gripper 0..100, which needs the calibration; ``radians``),
  with the policy runtime's own converter, so a policy trained on the export sees what the node feeds it;
- ``action``: the ground-truth topic (``/joint_commands`` JointTrajectory: the first point; or a JointState
  topic such as ``/leader/joint_states``) in the same units;
- ``observation.images.<camera>``: one mp4 per camera, by default every image topic of the bags
  (``/cameras/<name>/...`` -> ``<name>``) (PyAV; LeRobot's default AV1 ``libsvtav1``, or ``libx264`` /
  lossless ``libx264rgb`` with ``crf 0``);
- the task: ``--task``, else the bag's recorded episode task (recorder metadata), else the newest
  ``/instruction``.

Layout written (LeRobot ``CODEBASE_VERSION`` ``v3.0``): ``meta/info.json``, ``meta/stats.json``,
``meta/tasks.parquet``, ``meta/episodes/chunk-000/file-000.parquet``, ``data/chunk-000/file-000.parquet``,
``videos/<image key>/chunk-000/file-000.mp4``. All episodes go into one data file and one video file per
camera. Every file has the columns, types, shapes and statistics LeRobot 0.4.4's ``LeRobotDataset.create`` +
``add_frame`` + ``save_episode`` write for the same frames (see :mod:`~smolvla_policy.dataset.stats` for the
one deliberate difference, the image ``std``).

Modules: :mod:`~smolvla_policy.dataset.settings` (:class:`ExportSettings`),
:mod:`~smolvla_policy.dataset.episode` (one bag -> one episode), :mod:`~smolvla_policy.dataset.video` (mp4
per camera), :mod:`~smolvla_policy.dataset.stats` (statistics), :mod:`~smolvla_policy.dataset.layout` (the
folder, :func:`export_dataset`), :mod:`~smolvla_policy.dataset.cli` (the command line).
"""

from smolvla_policy.dataset.cli import build_parser, main
from smolvla_policy.dataset.episode import (
    Episode,
    discover_cameras,
    export_episode,
    read_episode_metadata,
)
from smolvla_policy.dataset.layout import (
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    VIDEO_PATH,
    export_dataset,
)
from smolvla_policy.dataset.settings import ExportSettings
from smolvla_policy.dataset.stats import (
    QUANTILES,
    aggregate_stats,
    episode_feature_stats,
    episode_image_stats,
)
from smolvla_policy.dataset.video import VIDEO_CODECS

__all__ = [
    "CODEBASE_VERSION",
    "DATA_PATH",
    "EPISODES_PATH",
    "QUANTILES",
    "VIDEO_CODECS",
    "VIDEO_PATH",
    "Episode",
    "ExportSettings",
    "aggregate_stats",
    "build_parser",
    "discover_cameras",
    "episode_feature_stats",
    "episode_image_stats",
    "export_dataset",
    "export_episode",
    "main",
    "read_episode_metadata",
]
