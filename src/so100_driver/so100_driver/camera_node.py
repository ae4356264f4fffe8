"""Camera node: publishes a V4L2 camera, a video file or an image folder as ``rgb8`` images.

Thin wiring around :mod:`so100_driver.camera`: the capture runs on its own thread (never in a ROS
callback), every frame is stamped at capture time with the node clock and published on
``cameras/<name>/image_raw`` (``/cameras/<name>/image_raw`` in the root namespace) with best-effort,
keep-last-1 QoS; a timer publishes fps, drops and source health on ``/diagnostics``.
"""

from __future__ import annotations

import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from so100_driver.camera import (
    ERROR,
    WARN,
    CameraConfig,
    CameraConfigError,
    CaptureLoop,
    CaptureStats,
    assess,
    validate_camera_name,
)
from so100_driver.image_conversion import rgb_to_image_msg
from so100_driver.node_main import run_node

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def image_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Sensor-data QoS for camera images: keep only the newest frame; best effort unless asked otherwise."""
    if reliability not in _RELIABILITY:
        raise CameraConfigError(
            f"parameter 'reliability' must be 'best_effort' or 'reliable', got {reliability!r}"
        )
    if depth < 1:
        raise CameraConfigError(f"parameter 'qos_depth' must be >= 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=_RELIABILITY[reliability])


_TYPE_WORDS = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}

# name: (default, type, description). Declared with dynamic typing so that YAML's `fps: 30` (an int)
# or `source: 0` is accepted and converted, and a wrong type is a clear error instead of a crash.
PARAMETERS: dict[str, tuple[object, type, str]] = {
    "name": ("camera", str, "camera name; topic cameras/<name>/image_raw"),
    "source": (
        "/dev/video0",
        str,
        "/dev/videoN, /dev/v4l/by-id/..., device index, video file or image folder",
    ),
    "width": (0, int, "requested capture width (devices; 0 = driver default)"),
    "height": (0, int, "requested capture height (devices; 0 = driver default)"),
    "fps": (
        30.0,
        float,
        "publish rate; 0 = the source's own rate (device mode, video file fps, 30 for folders)",
    ),
    "fourcc": ("", str, "device pixel format, e.g. MJPG (needed for 720p/1080p at 30 fps on USB 2) or YUYV"),
    "loop": (True, bool, "replay video files and image folders from the start at their end"),
    "frame_id": ("", str, "header.frame_id; default <name>_optical_frame"),
    "resize_width": (0, int, "publish at this width (0 = captured size)"),
    "resize_height": (0, int, "publish at this height (0 = captured size)"),
    "reliability": ("best_effort", str, "image QoS reliability: best_effort or reliable"),
    "qos_depth": (1, int, "image QoS history depth"),
    "reconnect_min_s": (0.5, float, "first retry delay after the source is lost"),
    "reconnect_max_s": (5.0, float, "retry delay cap (doubles from reconnect_min_s)"),
    "diagnostics_period": (1.0, float, "seconds between /diagnostics messages"),
}


class CameraNode(Node):
    def __init__(self, node_name: str = "camera", **kwargs):
        """``node_name``: give each camera its own (e.g. ``front_camera``) when several share a process."""
        super().__init__(node_name, **kwargs)
        for name, (default, _, description) in PARAMETERS.items():
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, dynamic_typing=True)
            )
        self._config_error = ""
        self._loop: CaptureLoop | None = None
        self._publisher = None
        self.camera_name = str(self.get_parameter("name").value)
        self._source = str(self.get_parameter("source").value)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        try:
            p = self._param
            self.camera_name = validate_camera_name(p("name"))
            self._frame_id = p("frame_id") or f"{self.camera_name}_optical_frame"
            config = CameraConfig(
                source=p("source"),
                width=p("width"),
                height=p("height"),
                fps=p("fps"),
                fourcc=p("fourcc"),
                loop=p("loop"),
                resize_width=p("resize_width"),
                resize_height=p("resize_height"),
                reconnect_min_s=p("reconnect_min_s"),
                reconnect_max_s=p("reconnect_max_s"),
            ).validated()
            qos = image_qos(p("reliability"), p("qos_depth"))
            diagnostics_period = p("diagnostics_period")
            if diagnostics_period <= 0:
                raise CameraConfigError(
                    f"parameter 'diagnostics_period' must be > 0, got {diagnostics_period}"
                )
        except CameraConfigError as exc:
            # Stay alive and say what is wrong on /diagnostics; capturing with a bad config helps nobody.
            self._config_error = str(exc)
            self.get_logger().error(f"camera not started: {exc}")
            diagnostics_period = 1.0
        else:
            self._source = config.source
            self.topic = f"cameras/{self.camera_name}/image_raw"
            self._publisher = self.create_publisher(Image, self.topic, qos)
            self._loop = CaptureLoop(
                config, self._publish_frame, lambda: self.get_clock().now().to_msg(), on_event=self._log_event
            )
            self._loop.start()
            self.get_logger().info(
                f"camera '{self.camera_name}': {config.source} -> {self._publisher.topic_name} "
                f"({config.fps or 'source'} fps, {p('reliability')} QoS)"
            )
        self._diag_timer = self.create_timer(diagnostics_period, self._publish_diagnostics)

    def _param(self, name: str):
        """The parameter converted to its documented type, or :class:`CameraConfigError` naming it."""
        value = self.get_parameter(name).value
        kind = PARAMETERS[name][1]
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is str:
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (kind is float or float(value).is_integer())
        ):
            return kind(value)
        raise CameraConfigError(f"parameter '{name}' must be {_TYPE_WORDS[kind]}, got {value!r}")

    def _publish_frame(self, rgb, stamp) -> None:
        self._publisher.publish(rgb_to_image_msg(rgb, stamp, self._frame_id))

    def _log_event(self, level: int, text: str) -> None:
        text = f"camera '{self.camera_name}': {text}"
        if level >= ERROR:  # one call site per severity: rclpy refuses mixed severities at one site
            self.get_logger().error(text)
        elif level == WARN:
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)

    def capture_stats(self) -> CaptureStats | None:
        return self._loop.stats() if self._loop else None

    def diagnostic_status(self) -> DiagnosticStatus:
        status = DiagnosticStatus(
            name=f"{self.get_name()}: camera {self.camera_name}", hardware_id=self._source
        )
        if self._loop is None:
            status.level = DiagnosticStatus.ERROR
            status.message = f"not started: {self._config_error}"
            return status
        stats = self._loop.stats()
        level, message = assess(stats)
        status.level = bytes([level])
        status.message = message
        since = "never" if stats.seconds_since_frame is None else f"{stats.seconds_since_frame:.3f}"
        values = {
            "state": stats.state,
            "source": stats.source,
            "source_kind": stats.source_kind,
            "topic": self._publisher.topic_name,
            "settings": stats.settings,
            "target_fps": f"{stats.target_fps:.2f}",
            "measured_fps": f"{stats.measured_fps:.2f}",
            "frames_published": str(stats.frames_published),
            "frames_dropped": str(stats.frames_dropped),
            f"frames_dropped_last_{stats.window_s:.0f}s": str(stats.recent_drops),
            "reconnects": str(stats.reconnects),
            "seconds_since_last_frame": since,
            "resolution": f"{stats.width}x{stats.height}",
            "last_error": stats.last_error,
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.diagnostic_status()]
        self._diagnostics.publish(array)

    def destroy_node(self) -> None:
        if self._loop is not None and not self._loop.stop(timeout=5.0):
            self.get_logger().warning("capture thread did not stop within 5 s (blocked in the camera driver)")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, "camera_node", args)


if __name__ == "__main__":
    sys.exit(main())
