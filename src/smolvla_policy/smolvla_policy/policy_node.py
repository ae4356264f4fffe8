"""SmolVLA policy node: camera images + /joint_states + /instruction -> ActionChunk, on its own worker thread.

Wiring around :mod:`smolvla_policy.runtime`. Subscription callbacks only store the newest message of each
input (latest wins, no backlog); the worker thread loads the model (the node reports LOADING at once and
stays alive with ERROR if loading fails), then answers the newest ChunkRequest (``trigger: request``) or runs
back to back (``trigger: continuous``), converting the newest observation at inference time.

ActionChunk time base: ``header.stamp`` is the stamp of the joint state used (the state the chunk continues
from; camera frames are checked against ``max_observation_age_s`` separately) and action ``i`` is meant for
``header.stamp + i * dt``.
"""

from __future__ import annotations

import math
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # ROS 2 Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from smolvla_common.calibration import load_calibration
from smolvla_common.chunk import Chunk, chunk_msg
from smolvla_common.joints import GRIPPER, SO101_JOINTS
from smolvla_common.node_main import run_node
from smolvla_common.parameters import declare_parameters, require
from smolvla_common.qos import RELIABLE, sensor_qos
from smolvla_common.timeutil import clock_seconds, duration_msg, seconds
from smolvla_msgs.msg import ActionChunk, ChunkRequest, PolicyStatus
from smolvla_policy.runtime import (
    CheckpointInfo,
    InferredChunk,
    Observation,
    PendingActions,
    PolicyRuntime,
    RuntimeConfig,
    resolve_device,
)
from smolvla_policy.runtime.latency import added_latency_problem, hold_back
from smolvla_policy.runtime.observation import assemble_observation

STATE_NAMES = {
    PolicyStatus.STATE_LOADING: "loading",
    PolicyStatus.STATE_READY: "ready",
    PolicyStatus.STATE_INFERRING: "inferring",
    PolicyStatus.STATE_ERROR: "error",
}
TRIGGERS = ("request", "continuous")
RETRY_PERIOD_S = 0.1  # a refused request is retried on fresher data at most this often

# name: (default, description). String lists default to [].
PARAMETERS: dict[str, tuple[object, str]] = {
    "checkpoint": ("", "LeRobot SmolVLA checkpoint folder or hub repo id (required)"),
    "vlm_path": (
        "",
        "local SmolVLM backbone folder (config + tokenizer); default: the checkpoint's vlm_model_name",
    ),
    "device": ("auto", "torch device: auto (a CUDA GPU when present, else cpu), cpu, cuda, cuda:1"),
    "dtype": ("float32", "float32 | bfloat16 (bfloat16 on GPU is LeRobot's layout)"),
    "policy_id": ("", "name reported in chunks and status; default: the checkpoint"),
    "cameras": ([], "camera names, optionally name:feature (e.g. top, or cam0:observation.images.top)"),
    "camera_topics": ([], "one topic per camera; default cameras/<name>/image_raw; */compressed = jpeg"),
    "compressed_cameras": ([], "cameras subscribed as sensor_msgs/CompressedImage whatever their topic"),
    "joint_names": (list(SO101_JOINTS), "joints of joint_states fed to the policy, in checkpoint order"),
    "units": ("degrees", "checkpoint joint units: degrees (LeRobot degree mode) | range | radians"),
    "joint_units": ([], "per-joint override of units: rad | deg | range_m100_100 | range_0_100"),
    "gripper_joint": (GRIPPER, "joint kept in LeRobot's 0..100 range by the degrees and range modes"),
    "calibration_file": ("", "LeRobot calibration JSON of the arm (needed for the gripper and range mode)"),
    "units_check": ("strict", "checkpoint stats vs units: strict (refuse) | warn | off"),
    "task": ("", "default instruction, used while instruction has not given one"),
    "max_task_chars": (1000, "longest accepted instruction"),
    "trigger": ("request", "request: answer smolvla/request | continuous: infer back to back"),
    "continuous_period_s": (0.0, "continuous mode: minimum time between inference starts"),
    "max_observation_age_s": (0.5, "refuse images/joint states older than this (0 = no limit)"),
    "request_timeout_s": (1.0, "keep retrying a refused request on fresher data for this long"),
    "image_resize": ("refuse", "images not of the checkpoint's size: refuse | resize"),
    "fps": (0.0, "action rate; 0 = the checkpoint's (LeRobot default 30 if unknown)"),
    "actions_per_chunk": (0, "publish this many actions per chunk; 0 = chunk_size"),
    "rtc": (False, "Real-Time Chunking guided by the request's pending actions (continuous: the last chunk)"),
    "rtc_execution_horizon": (0, "RTC execution horizon in steps; 0 = the checkpoint's"),
    "sensor_qos": ("best_effort", "camera and joint-state subscriptions: best_effort | reliable"),
    "status_period_s": (1.0, "PolicyStatus and /diagnostics period"),
    "warmup": (True, "run one inference on blank inputs after loading"),
    "added_latency_s": (0.0, "hold each chunk back this long after inference (s), counted in its latency"),
    "noise_seed": (-1, "seed of the sampling noise, for repeatable evaluations; -1: fresh noise each run"),
    "noise_scale": (1.0, "scale of the sampling noise: 1 samples as LeRobot does, 0 = no noise (>= 0)"),
}


def camera_map(cameras: list[str], topics: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(camera -> checkpoint feature, camera -> topic) from the parameters cameras and camera_topics."""
    require(
        not topics or len(topics) == len(cameras),
        "camera_topics",
        f"one topic per camera {cameras}, or none",
        topics,
    )
    features: dict[str, str] = {}
    camera_topics: dict[str, str] = {}
    for i, entry in enumerate(cameras):
        name, _, feature = str(entry).partition(":")
        name, feature = name.strip(), feature.strip() or name.strip()
        require(bool(name) and name not in features, "cameras", "distinct, non-empty camera names", cameras)
        features[name] = feature
        camera_topics[name] = topics[i] if topics else f"cameras/{name}/image_raw"
    return features, camera_topics


class PolicyNode(Node):
    """Threads: subscription callbacks on the node's executor only store the newest inputs; the worker
    thread loads the model and runs every inference, so the executor is never blocked by the model."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "policy"), **kwargs)
        defaults = {name: default for name, (default, _) in PARAMETERS.items()}
        descriptions = {name: description for name, (_, description) in PARAMETERS.items()}
        self.p = declare_parameters(self, defaults, descriptions)
        require(self.p["trigger"] in TRIGGERS, "trigger", f"one of {TRIGGERS}", self.p["trigger"])
        added_latency = float(self.p["added_latency_s"])
        problem = added_latency_problem(added_latency)
        require(problem is None, "added_latency_s", problem or "", added_latency)
        scale = float(self.p["noise_scale"])
        require(math.isfinite(scale) and scale >= 0, "noise_scale", "a finite number >= 0", scale)
        self.camera_features, self.camera_topics = camera_map(self.p["cameras"], self.p["camera_topics"])
        unknown = [c for c in self.p["compressed_cameras"] if c not in self.camera_features]
        require(not unknown, "compressed_cameras", f"cameras among {list(self.camera_features)}", unknown)
        self.policy_id = self.p["policy_id"] or self.p["checkpoint"]
        self.device_name = f"{self.p['device']}/{self.p['dtype']}"

        self._lock = threading.Condition()
        self._stop = False
        self._joint_state: JointState | None = None
        self._images: dict[str, Image | CompressedImage] = {}
        self._instruction: str | None = None
        self._request: ChunkRequest | None = None
        self._request_received = 0.0  # monotonic time of the pending request
        self._data_version = 0  # bumped by every new joint state / image, to retry refused requests
        self.runtime: PolicyRuntime | None = None
        self.state = PolicyStatus.STATE_LOADING
        self.message = "starting"
        self.counters = {"requests_received": 0, "chunks_published": 0, "observations_refused": 0}
        self.last_age = 0.0
        self.last_latency = 0.0
        self.last_image_ages: dict[str, float] = {}
        self.last_chunk: InferredChunk | None = None
        self.chunk_id = 0

        self.chunk_pub = self.create_publisher(ActionChunk, "smolvla/action_chunk", RELIABLE)
        self.status_pub = self.create_publisher(PolicyStatus, "smolvla/policy_status", RELIABLE)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self._subscribe()
        self.create_timer(max(0.05, float(self.p["status_period_s"])), self._publish_periodic)
        self._worker = threading.Thread(target=self._work, name="smolvla_policy_worker", daemon=True)
        self._set_state(PolicyStatus.STATE_LOADING, f"loading {self.policy_id}")
        self._worker.start()

    # ------------------------------------------------------------------------------------------- setup

    def _subscribe(self) -> None:
        p = self.p
        sensor = sensor_qos(p["sensor_qos"])
        for name, topic in self.camera_topics.items():
            compressed = topic.rstrip("/").endswith("/compressed") or name in p["compressed_cameras"]
            msg_type = CompressedImage if compressed else Image
            subscription = self.create_subscription(
                msg_type, topic, lambda msg, name=name: self._on_image(name, msg), sensor
            )
            self.camera_topics[name] = subscription.topic_name  # resolved: errors name the real topic
        self.create_subscription(JointState, "joint_states", self._on_joint_state, sensor)
        # Two instruction subscriptions: transient-local receives the latched instruction of a transient-local
        # publisher after a late start; volatile also matches plain publishers (e.g. `ros2 topic pub`). Such
        # a publisher is incompatible with the transient-local one by design: that event is not a warning.
        for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE):
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=1,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=durability,
            )
            events = None
            if durability == DurabilityPolicy.TRANSIENT_LOCAL:
                events = SubscriptionEventCallbacks(incompatible_qos=self._on_volatile_instruction_publisher)
            self.create_subscription(String, "instruction", self._on_instruction, qos, event_callbacks=events)
        self.create_subscription(ChunkRequest, "smolvla/request", self._on_request, RELIABLE)

    def _runtime_config(self) -> RuntimeConfig:
        p = self.p
        calibration = load_calibration(p["calibration_file"]) if p["calibration_file"] else None
        return RuntimeConfig(
            cameras=dict(self.camera_features),
            joint_names=list(p["joint_names"]),
            units=p["units"],
            joint_units=list(p["joint_units"]) or None,
            gripper_joint=p["gripper_joint"],
            calibration=calibration,
            default_task=p["task"],
            max_task_chars=int(p["max_task_chars"]),
            max_observation_age_s=float(p["max_observation_age_s"]),
            image_resize=p["image_resize"],
            units_check=p["units_check"],
            fps=float(p["fps"]) or None,
            actions_per_chunk=int(p["actions_per_chunk"]),
            rtc_execution_horizon=int(p["rtc_execution_horizon"]),
            added_latency_s=float(p["added_latency_s"]),
        )

    # ------------------------------------------------------------------------------------------- callbacks

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        with self._lock:
            self._images[camera] = msg
            self._data_version += 1
            self._lock.notify_all()

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            self._joint_state = msg
            self._data_version += 1
            self._lock.notify_all()

    def _on_instruction(self, msg: String) -> None:
        text = msg.data
        with self._lock:
            if text == self._instruction:
                return  # the same latched message through both subscriptions
            self._instruction = text
        if len(text.strip()) > int(self.p["max_task_chars"]):
            self._note(
                f"instruction refused: {len(text.strip())} characters, more than max_task_chars "
                f"{self.p['max_task_chars']}; observations are refused until a valid instruction arrives"
            )
        elif not text.strip() and not self.p["task"].strip():
            self._note("empty instruction and no default task parameter: observations are refused")
        else:
            self._note(f"instruction: {text.strip() or self.p['task']!r}")

    def _on_volatile_instruction_publisher(self, _event) -> None:
        self.get_logger().debug("a volatile instruction publisher: served by the volatile subscription")

    def _on_request(self, msg: ChunkRequest) -> None:
        with self._lock:
            self.counters["requests_received"] += 1
            if self.p["trigger"] != "request":
                return
            if self._request is not None and self._request.must_go:
                msg.must_go = True  # latest wins, but a pending must-go keeps its urgency
            self._request = msg
            self._request_received = time.monotonic()
            self._lock.notify_all()

    # ------------------------------------------------------------------------------------------- worker

    def _work(self) -> None:
        try:
            self._load()
        except Exception as exc:  # any failure is reported; the node stays up for diagnosis
            self.get_logger().error(f"cannot start the policy: {exc}")
            self._set_state(PolicyStatus.STATE_ERROR, f"cannot start the policy: {type(exc).__name__}: {exc}")
            return
        last_start = 0.0
        while True:
            with self._lock:
                request, version = self._wait_for_trigger(last_start)
                if self._stop:
                    return
            last_start = time.monotonic()
            answered = self._infer(request)
            with self._lock:
                if answered or (
                    request is not None
                    and time.monotonic() - self._request_received > float(self.p["request_timeout_s"])
                ):
                    if self._request is request:
                        self._request = None  # answered, or given up on: the executor asks again
                    continue
                # Refused: retry on fresher data (or a newer request), at most every RETRY_PERIOD_S.
                self._lock.wait(RETRY_PERIOD_S)
                deadline = time.monotonic() + 1.0
                while (
                    not self._stop
                    and self._data_version == version
                    and self._request is request
                    and time.monotonic() < deadline
                ):
                    self._lock.wait(RETRY_PERIOD_S)

    def _wait_for_trigger(self, last_start: float) -> tuple[ChunkRequest | None, int]:
        """Block (lock held) until a request is pending, or in continuous mode until the next start is due."""
        while not self._stop:
            if self.p["trigger"] == "continuous":
                delay = last_start + float(self.p["continuous_period_s"]) - time.monotonic()
                if delay <= 0:
                    return None, self._data_version
                self._lock.wait(delay)
            elif self._request is not None:
                return self._request, self._data_version
            else:
                self._lock.wait(0.5)
        return None, self._data_version

    def _load(self) -> None:
        p = self.p
        if not p["checkpoint"]:
            raise ValueError(
                "parameter checkpoint is empty: set it to a LeRobot SmolVLA checkpoint folder or repo id"
            )
        info = CheckpointInfo.from_checkpoint(p["checkpoint"])
        runtime = PolicyRuntime(info, self._runtime_config())  # validates before the slow weight loading
        for warning in runtime.warnings:
            self.get_logger().warning(warning)
        device = resolve_device(p["device"])
        self.device_name = f"{device}/{p['dtype']}"
        runtime.load_model(p["checkpoint"], vlm_path=p["vlm_path"] or None, device=device, dtype=p["dtype"])
        if p["warmup"]:
            images = {k: np.zeros((s[1], s[2], 3), np.uint8) for k, s in info.image_shapes.items()}
            runtime.model.predict_chunk(images, np.zeros(info.state_dim), "warm up")
        if hasattr(runtime.model, "seed_noise"):  # a SmolVLA (an attached analytic model samples nothing)
            runtime.model.seed_noise(None if p["noise_seed"] < 0 else p["noise_seed"])
            runtime.model.noise_scale = float(p["noise_scale"])
        self.runtime = runtime
        message = f"ready: {len(info.image_keys)} cameras, {info.state_dim} joints, {runtime.fps:g} fps"
        if runtime.warnings:
            message += "; warnings: " + "; ".join(runtime.warnings)
        self._set_state(PolicyStatus.STATE_READY, message)

    def _infer(self, request: ChunkRequest | None) -> bool:
        """Infer on the newest observation and publish the chunk; False when the observation was refused."""
        observation, joint_stamp, reason = self._snapshot(request)
        now = clock_seconds(self)
        if observation is None:
            return self._refuse(reason)
        pending = self._pending(request)
        result = self.runtime.infer(
            observation,
            now,
            pending=pending,
            rtc=bool(self.p["rtc"]),
            on_model_start=lambda: self._set_state(PolicyStatus.STATE_INFERRING, self.message),
        )
        if not result.ok:
            return self._refuse(result.refusal)
        chunk = hold_back(result.chunk, float(self.p["added_latency_s"]), self._wait_unless_stopping)
        if chunk is None:
            return True  # the node is stopping: nothing more is published
        self._publish_chunk(chunk, joint_stamp, request)
        note = f"chunk {self.chunk_id} published" + (f" ({'; '.join(result.notes)})" if result.notes else "")
        self._set_state(PolicyStatus.STATE_READY, note)
        return True

    def _wait_unless_stopping(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s on the worker; False as soon as the node is being destroyed."""
        with self._lock:
            self._lock.wait_for(lambda: self._stop, timeout)
            return not self._stop

    def _refuse(self, reason: str) -> bool:
        with self._lock:
            self.counters["observations_refused"] += 1
        self.get_logger().warning(f"observation refused: {reason}", throttle_duration_sec=2.0)
        self._set_state(PolicyStatus.STATE_READY, f"observation refused: {reason}")
        return False

    def _snapshot(self, request: ChunkRequest | None) -> tuple[Observation | None, object, str]:
        """The newest inputs as an Observation (images decoded here, on the worker), its joint state's stamp,
        or a refusal reason."""
        with self._lock:
            joint_state, images, instruction = self._joint_state, dict(self._images), self._instruction
        task = request.task if request is not None else ""
        observation, reason = assemble_observation(joint_state, images, instruction, self.camera_topics, task)
        return observation, joint_state.header.stamp if observation else None, reason

    def _pending(self, request: ChunkRequest | None) -> PendingActions | None:
        """RTC guidance: the request's pending actions; in continuous mode, the last chunk published."""
        if request is None:
            last = self.last_chunk
            if last is None:
                return None
            return PendingActions(last.joint_names, last.stamp + last.time_from_start(), last.positions)
        if not request.pending.points:
            return None
        start = seconds(request.header.stamp)
        points = request.pending.points
        try:
            return PendingActions(
                joint_names=list(request.pending.joint_names),
                times=np.array([start + seconds(p.time_from_start) for p in points]),
                positions=np.array([list(p.positions) for p in points], dtype=np.float64),
            )
        except ValueError:  # ragged positions: reported by the runtime as malformed
            return PendingActions(list(request.pending.joint_names), np.zeros(len(points)), np.zeros((0, 0)))

    # ------------------------------------------------------------------------------------------- output

    def _publish_chunk(self, chunk: InferredChunk, stamp, request: ChunkRequest | None) -> None:
        self.chunk_id += 1
        request_id = request.request_id if request else 0
        plain = Chunk.regular(
            self.chunk_id, request_id, chunk.stamp, chunk.dt, chunk.joint_names, chunk.positions
        )
        msg = chunk_msg(plain, stamp, chunk.task, self.policy_id, chunk.inference_start, chunk.latency)
        self._publish(self.chunk_pub, msg)
        with self._lock:
            self.counters["chunks_published"] += 1
            self.last_age, self.last_latency = chunk.observation_age, chunk.latency
            self.last_image_ages = dict(chunk.image_ages)
            self.last_chunk = chunk

    def _note(self, message: str) -> None:
        """Record a notable event in the status message (published at once)."""
        self._set_state(self.state, message)

    def _set_state(self, state: int, message: str) -> None:
        with self._lock:
            changed = state != self.state or message != self.message
            self.state, self.message = state, message
        if changed:
            self._publish_status()

    def _current_task(self) -> str:
        if self.runtime is not None:
            task, _ = self.runtime.resolve_task(self._instruction)
            return task or ""
        return (self._instruction or "").strip() or self.p["task"]

    def _publish_status(self) -> None:
        with self._lock:
            msg = PolicyStatus(
                state=self.state, message=self.message, policy_id=self.policy_id, device=self.device_name
            )
            msg.task = self._current_task()[: int(self.p["max_task_chars"])]
            msg.requests_received = self.counters["requests_received"]
            msg.chunks_published = self.counters["chunks_published"]
            msg.observations_refused = self.counters["observations_refused"]
            msg.last_observation_age = duration_msg(max(0.0, self.last_age))
            msg.last_inference_latency = duration_msg(self.last_latency)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publish(self.status_pub, msg)

    def _publish(self, publisher, msg) -> None:
        """Publish unless the node or its context is shutting down (the worker may finish after Ctrl-C)."""
        if self.context.ok() and not self._stop:
            try:
                publisher.publish(msg)
            except Exception:  # rclpy's RCLError when the context became invalid meanwhile
                if self.context.ok():
                    raise

    def _publish_periodic(self) -> None:
        self._publish_status()
        with self._lock:
            state, message = self.state, self.message
            values = {**self.counters, "last_observation_age_s": f"{self.last_age:.3f}"}
            values["last_inference_latency_s"] = f"{self.last_latency:.3f}"
            values.update({f"last_image_age_{c}_s": f"{age:.3f}" for c, age in self.last_image_ages.items()})
        level = {
            PolicyStatus.STATE_ERROR: DiagnosticStatus.ERROR,
            PolicyStatus.STATE_LOADING: DiagnosticStatus.WARN,
        }.get(
            state, DiagnosticStatus.WARN if message.startswith("observation refused") else DiagnosticStatus.OK
        )
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: policy",
            message=f"{STATE_NAMES[state]}: {message}"[:1000],
            hardware_id=self.policy_id,
        )
        values.update(state=STATE_NAMES[state], device=self.device_name, trigger=self.p["trigger"])
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.get_clock().now().to_msg()
        self._publish(self.diag_pub, diag)

    def destroy_node(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(PolicyNode, "policy_node", argv)


if __name__ == "__main__":
    sys.exit(main())
