"""ROS-free rosbag2 reading and writing (mcap and sqlite3) on the ``rosbags`` package.

Reading: :class:`BagReader` opens a rosbag2 folder (or the single ``.mcap``/``.db3`` file inside one), checks
that the topics a tool needs exist with an accepted message type, and yields typed messages in log-time
order. Every problem is a :class:`BagError` naming the bag, and where it applies the topic, the message type
and what was expected: a missing or unreadable folder, a truncated or corrupt storage file, a missing topic,
a wrong message type, a message that does not deserialise.

Writing: :class:`BagWriter` writes messages built from the type store (for tests, the recorder and the
synthetic bags of the documentation). The project's own messages (``smolvla_msgs``) are registered from
their ``.msg`` files; types stored in a bag (mcap schemas, rosbag2 ``message_definitions``) are registered
when the bag is opened.

Times: ``log_time_ns`` is the time the recorder received the message (rosbag2's timestamp);
:func:`~smolvla_common.timeutil.header_nanoseconds` reads ``header.stamp``. This module never imports
rclpy or torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_common.timeutil import header_nanoseconds, nanoseconds

JOINT_STATE = "sensor_msgs/msg/JointState"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
ACTION_CHUNK = "smolvla_msgs/msg/ActionChunk"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGE_FORMATS = ("mcap", "sqlite3")


class BagError(ValueError):
    """A bag cannot be used as asked; the message names the bag and, where it applies, topic and type."""


@dataclass
class BagMessage:
    """One deserialised message; ``log_time_ns`` is the recorder's receive time."""

    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


def stamp_or_log_time_ns(msg: Any, log_time_ns: int) -> int:
    """``header.stamp`` when it is set, else the log time (publishers that leave the stamp zero)."""
    stamp = header_nanoseconds(msg)
    return stamp if stamp > 0 else int(log_time_ns)


def _msg_folder_candidates() -> list[Path]:
    """Where ``smolvla_msgs``' ``.msg`` files are: the installed share folder, else the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("smolvla_msgs")) / "msg")
    except Exception:  # not installed / no ament index: fall back to the source tree
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "smolvla_msgs" / "msg")
    return candidates


@lru_cache(maxsize=1)
def typestore():
    """A ROS 2 Kilted type store with ``smolvla_msgs`` registered (when their ``.msg`` files are found)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for folder in _msg_folder_candidates():
        files = sorted(folder.glob("*.msg")) if folder.is_dir() else []
        if not files:
            continue
        types: dict = {}
        for file in files:
            types.update(get_types_from_msg(file.read_text(), f"smolvla_msgs/msg/{file.stem}"))
        store.register(types)
        break
    return store


def _bag_folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        path = path.parent  # the storage file inside a rosbag2 folder
    if not path.exists():
        raise BagError(f"bag {path} does not exist (expected a rosbag2 folder with metadata.yaml)")
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        raise BagError(
            f"bag {path} is not a rosbag2 folder: no metadata.yaml in it "
            "(record with `ros2 bag record` or smolvla-record; single .mcap files need their folder)"
        )
    return path


class BagReader:
    """A rosbag2 folder opened for reading (context manager).

    >>> with BagReader("run1") as bag:
    ...     bag.require({"/joint_states": [JOINT_STATE]})
    ...     for m in bag.messages(["/joint_states"]):
    ...         print(m.log_time_ns, m.msg.position)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = _bag_folder(path)
        self._reader = None

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        from rosbags.rosbag2 import Reader

        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:
            files = ", ".join(p.name for p in sorted(self.path.iterdir()) if p.suffix in (".mcap", ".db3"))
            raise BagError(
                f"bag {self.path}: cannot open it: metadata.yaml or the storage file(s) "
                f"{files or '(none found)'} "
                f"are truncated or corrupt ({type(exc).__name__}: {exc}). A recording that was killed leaves "
                "an unfinished file: repair it with `ros2 bag reindex` (sqlite3) or `mcap recover` (mcap)"
            ) from exc
        self._reader = reader
        self._register_bag_types()

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    def _register_bag_types(self) -> None:
        """Register message types the bag defines but the type store lacks (e.g. a user's own messages)."""
        from rosbags.typesys import get_types_from_msg

        store = typestore()
        for conn in self._reader.connections:
            if conn.msgtype in store.types or not conn.msgdef:
                continue
            definition = conn.msgdef
            text = getattr(definition, "data", definition)
            if not isinstance(text, str):
                continue
            with contextlib.suppress(Exception):  # unregistered types only fail when a tool reads that topic
                store.register(get_types_from_msg(text, conn.msgtype))

    # ------------------------------------------------------------------------------------- inspection

    @property
    def reader(self):
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        return self._reader

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> message type (a topic recorded with several types keeps the first)."""
        topics: dict[str, str] = {}
        for conn in self.reader.connections:
            topics.setdefault(conn.topic, conn.msgtype)
        return topics

    @property
    def storage(self) -> str:
        files = [p.suffix for p in self.path.iterdir()]
        return "mcap" if ".mcap" in files else "sqlite3" if ".db3" in files else "unknown"

    @property
    def start_ns(self) -> int:
        return int(self.reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self.reader.end_time)

    def message_count(self, topic: str) -> int:
        return sum(c.msgcount for c in self.reader.connections if c.topic == topic)

    def require(self, wanted: Mapping[str, Sequence[str]], what: str = "") -> dict[str, str]:
        """Check that each topic exists with one of its accepted types and has messages; topic -> type.

        Raises :class:`BagError` listing every missing topic and wrong type, with the topics the bag has.
        """
        topics = self.topics
        problems = []
        for topic, accepted in wanted.items():
            if topic not in topics:
                problems.append(f"topic {topic} is missing (expected {' or '.join(accepted)})")
            elif topics[topic] not in accepted:
                problems.append(f"topic {topic} has type {topics[topic]}, expected {' or '.join(accepted)}")
            elif self.message_count(topic) == 0:
                problems.append(f"topic {topic} ({topics[topic]}) has no messages")
        if problems:
            available = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
            purpose = f" for {what}" if what else ""
            raise BagError(
                f"bag {self.path}{purpose}: " + "; ".join(problems) + f". Topics in the bag: {available}"
            )
        return {topic: topics[topic] for topic in wanted}

    # ------------------------------------------------------------------------------------- reading

    def raw_messages(self, topics: Iterable[str]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log_time_ns, raw CDR) in log-time order; storage errors become :class:`BagError`."""
        wanted = set(topics)
        connections = [c for c in self.reader.connections if c.topic in wanted]
        if not connections:
            return
        iterator = self.reader.messages(connections=connections)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(
                    f"bag {self.path}: the {self.storage} storage is truncated or corrupt while reading "
                    f"{', '.join(sorted(wanted))} ({type(exc).__name__}: {exc}); re-record it, or repair it "
                    "(`ros2 bag reindex`, `mcap recover`)"
                ) from exc
            yield item

    def decode(self, connection: Any, raw: bytes) -> Any:
        """Deserialise one raw message; a failure names topic, type and bag."""
        try:
            return typestore().deserialize_cdr(raw, connection.msgtype)
        except Exception as exc:
            raise BagError(
                f"bag {self.path}: a message on {connection.topic} ({connection.msgtype}) cannot be "
                f"deserialised ({type(exc).__name__}: {exc}); the bag is corrupt or the type definition "
                "differs"
            ) from exc

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Deserialised messages of ``topics`` in log-time order."""
        for conn, log_time, raw in self.raw_messages(topics):
            yield BagMessage(conn.topic, conn.msgtype, int(log_time), self.decode(conn, raw))

    def read_all(self, topics: Iterable[str]) -> dict[str, list[BagMessage]]:
        """Every message of ``topics``, grouped by topic (each list in log-time order)."""
        out: dict[str, list[BagMessage]] = {t: [] for t in topics}
        for message in self.messages(out):
            out[message.topic].append(message)
        return out


# ----------------------------------------------------------------------------------------- trajectories


@dataclass
class JointSeries:
    """Joint positions over time: ``positions[k]`` (rad, in ``joint_names`` order) at ``times[k]`` (s)."""

    joint_names: list[str]
    times: np.ndarray  # (K,) seconds, increasing
    positions: np.ndarray  # (K, J)

    def at(self, query_times: np.ndarray) -> np.ndarray:
        """Linear interpolation at ``query_times``; NaN outside the recorded time span."""
        query_times = np.asarray(query_times, dtype=np.float64)
        out = np.full((len(query_times), len(self.joint_names)), np.nan)
        if len(self.times) == 0:
            return out
        inside = (query_times >= self.times[0] - 1e-9) & (query_times <= self.times[-1] + 1e-9)
        for j in range(len(self.joint_names)):
            out[inside, j] = np.interp(query_times[inside], self.times, self.positions[:, j])
        return out


def joint_series(
    messages: Sequence[BagMessage], joint_names: Sequence[str], topic: str = "", bag: str = ""
) -> JointSeries:
    """Positions of ``joint_names`` over time from JointState or JointTrajectory messages.

    JointState: one sample at ``header.stamp``. JointTrajectory (``/joint_commands``): the first point counts
    as commanded at ``header.stamp``, later points ``time_from_start - points[0].time_from_start`` after it.
    (The executor publishes, at tick time ``now``, the chunk action meant for ``now``, with one tick of
    ``time_from_start`` for the arm to reach it; so the command stamped ``t`` is the action for ``t``.) A zero
    header stamp falls back to the log time. Repeated times keep the latest message. Missing joints raise
    :class:`BagError`.
    """
    where = f"bag {bag}: topic {topic}" if bag else f"topic {topic}"
    samples: dict[int, np.ndarray] = {}
    for m in messages:
        names = list(m.msg.joint_names if m.msgtype == JOINT_TRAJECTORY else m.msg.name)
        missing = [n for n in joint_names if n not in names]
        if missing:
            raise BagError(f"{where} ({m.msgtype}): message lacks joints {missing} (has {names})")
        index = [names.index(n) for n in joint_names]
        base = stamp_or_log_time_ns(m.msg, m.log_time_ns)
        if m.msgtype == JOINT_TRAJECTORY:
            first = None
            for point in m.msg.points:
                offset = nanoseconds(point.time_from_start)
                first = offset if first is None else first
                offset -= first
                positions = np.asarray(point.positions, dtype=np.float64)
                if len(positions) != len(names):
                    raise BagError(f"{where}: a point has {len(positions)} positions for {len(names)} joints")
                samples[base + offset] = positions[index]
        else:
            positions = np.asarray(m.msg.position, dtype=np.float64)
            if len(positions) != len(names):
                raise BagError(f"{where}: a message has {len(positions)} positions for {len(names)} names")
            samples[base] = positions[index]
    keys = sorted(samples)
    positions = np.array([samples[k] for k in keys]).reshape(len(keys), len(joint_names))
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        keys = [k for k, b in zip(keys, bad, strict=True) if not b]
        positions = positions[~bad]
    return JointSeries(list(joint_names), np.array(keys, dtype=np.float64) * 1e-9, positions)


# ----------------------------------------------------------------------------------------- writing


class BagWriter:
    """A new rosbag2 folder (``storage``: ``mcap`` or ``sqlite3``) written with rosbags (context manager).

    ``write(topic, msgtype, log_time_ns, msg)`` adds a connection on first use. ``custom_data`` (str -> str)
    goes into ``metadata.yaml``'s ``custom_data`` (values as strings), which ``ros2 bag info`` shows.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGE_FORMATS:
            raise BagError(f"storage must be one of {STORAGE_FORMATS}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path} exists already; choose a new folder (rosbag2 never overwrites)")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}
        self.custom_data: dict[str, str] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        self._writer.open()

    def close(self) -> None:
        for key, value in self.custom_data.items():
            self._writer.set_custom_data(key, value)
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Any] = ()) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=qos
            )

    def write(self, topic: str, msgtype: str, log_time_ns: int, msg: Any) -> None:
        self.add_topic(topic, msgtype)
        self.write_raw(topic, log_time_ns, typestore().serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, log_time_ns: int, raw: bytes) -> None:
        self._writer.write(self._connections[topic], int(log_time_ns), raw)
