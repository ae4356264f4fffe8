"""rosbag2 reading/writing helpers on rosbags: typed iteration, the project's own messages, time series."""

from __future__ import annotations

import numpy as np
import pytest

import synthetic_bags
from smolvla_common import bags
from smolvla_common.bags import BagError, BagReader, BagWriter
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.timeutil import duration_msg, header_nanoseconds, time_msg_ns


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_messages_come_typed_and_in_log_time_order(tmp_path, storage):
    path = synthetic_bags.write_synthetic_bag(tmp_path / "b", storage, duration_s=0.5, cameras=("top",))
    with BagReader(path / ("b.mcap" if storage == "mcap" else "b.db3")) as bag:  # the storage file works too
        assert bag.storage == storage
        assert bag.message_count("/joint_states") == 15
        times = [m.log_time_ns for m in bag.messages(bag.topics)]
        assert times == sorted(times)
        states = bag.read_all(["/joint_states"])["/joint_states"]
        assert list(states[3].msg.name) == list(SO101_JOINTS)
        assert np.allclose(states[3].msg.position, synthetic_bags.synthetic_command(3 / 30 - 1 / 30))
        assert header_nanoseconds(states[3].msg) == states[3].log_time_ns


def test_project_messages_round_trip(tmp_path):
    """smolvla_msgs types are registered from their .msg files, so ActionChunks can be written and read."""
    store = bags.typestore()
    chunk_type = store.types[bags.ACTION_CHUNK]
    trajectory = synthetic_bags.joint_trajectory_msg(0, ["a", "b"], [(0.0, [1.0, 2.0]), (0.1, [1.5, 2.5])])
    msg = chunk_type(
        header=synthetic_bags.header_msg(5_000_000_000),
        chunk_id=7,
        request_id=3,
        task="pick",
        policy_id="ckpt",
        trajectory=trajectory,
        dt=duration_msg(0.1, store.types["builtin_interfaces/msg/Duration"]),
        inference_start=time_msg_ns(5_010_000_000, store.types["builtin_interfaces/msg/Time"]),
        inference_latency=duration_msg(0.02, store.types["builtin_interfaces/msg/Duration"]),
    )
    with BagWriter(tmp_path / "chunks", "mcap") as writer:
        writer.write("/smolvla/action_chunk", bags.ACTION_CHUNK, 5_000_000_000, msg)
    with BagReader(tmp_path / "chunks") as bag:
        (read,) = list(bag.messages(["/smolvla/action_chunk"]))
    assert read.msg.chunk_id == 7 and read.msg.task == "pick"
    assert np.allclose(read.msg.trajectory.points[1].positions, [1.5, 2.5])


def test_joint_series_from_commands_and_states(tmp_path):
    commands = [
        bags.BagMessage(
            "/c",
            bags.JOINT_TRAJECTORY,
            0,
            synthetic_bags.joint_trajectory_msg(
                1_000_000_000, ["b", "a"], [(0.5, [2.0, 1.0]), (0.6, [4.0, 3.0])]
            ),
        )
    ]
    series = bags.joint_series(commands, ["a", "b"], "/c")
    # the first point is the action for header.stamp, the next one 0.1 s later; joints reordered by name
    assert series.times == pytest.approx([1.0, 1.1])
    assert series.positions.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert series.at(np.array([1.05, 2.0]))[0] == pytest.approx([2.0, 3.0])
    assert np.isnan(series.at(np.array([2.0]))).all()
    state = bags.BagMessage("/s", bags.JOINT_STATE, 7, synthetic_bags.joint_state_msg(0, ["a"], [0.5]))
    assert bags.joint_series([state], ["a"]).times == pytest.approx([7e-9])  # zero stamp: log time
    with pytest.raises(BagError, match=r"topic /s .*lacks joints \['b'\]"):
        bags.joint_series([state], ["a", "b"], "/s")


def test_writer_refuses_to_overwrite(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists already"):
        BagWriter(tmp_path / "exists")
    with pytest.raises(BagError, match="storage must be one of"):
        BagWriter(tmp_path / "new", "rosbag1")
