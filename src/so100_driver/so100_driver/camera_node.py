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
from sensor_msgs.msg import Image

from smolvla_common.image_conversion import rgb_to_image_msg
from smolvla_common.node_main import run_node
from smolvla_common.parameters import declare_parameters, invalid, require
from smolvla_common.qos import sensor_qos
from so100_driver.camera import (
    ERROR,
    WARN,
    CameraConfig,
    CaptureLoop,
    CaptureStats,
    assess,
    validate_camera_name,
)

PARAMETERS = {
    "name": "camera",
    "width": 0,
    "height": 0,
    "fps": 30.0,
    "fourcc": "",
    "loop": True,
    "frame_id": "",
    "resize_width": 0,
    "resize_height": 0,
    "reliability": "best_effort",
    "qos_depth": 1,
    "reconnect_min_s": 0.5,
    "reconnect_max_s": 5.0,
    "diagnostics_period": 1.0,
}
DESCRIPTIONS = {
    "name": "camera name; topic cameras/<name>/image_raw",
    "source": "/dev/videoN, /dev/v4l/by-id/..., device index, video file or image folder",
    "width": "requested capture width (devices; 0 = driver default)",
    "height": "requested capture height (devices; 0 = driver default)",
    "fps": "publish rate; 0 = the source's own rate (device mode, video file fps, 30 for folders)",
    "fourcc": "device pixel format, e.g. MJPG (needed for 720p/1080p at 30 fps on USB 2) or YUYV",
    "loop": "replay video files and image folders from the start at their end",
    "frame_id": "header.frame_id; default <name>_optical_frame",
    "resize_width": "publish at this width (0 = captured size)",
    "resize_height": "publish at this height (0 = captured size)",
    "reliability": "image QoS reliability: best_effort or reliable",
    "qos_depth": "image QoS history depth",
    "reconnect_min_s": "first retry delay after the source is lost",
    "reconnect_max_s": "retry delay cap (doubles from reconnect_min_s)",
    "diagnostics_period": "seconds between /diagnostics messages",
}


class CameraNode(Node):
    def __init__(self, node_name: str = "camera", **kwargs):
        """``node_name``: ``camera_<name>`` like in the graphs, when several cameras share a process."""
        super().__init__(node_name, **kwargs)
        p = declare_parameters(self, PARAMETERS, DESCRIPTIONS)
        # a device index (YAML `source: 0`) is as good as a path
        descriptor = ParameterDescriptor(description=DESCRIPTIONS["source"], dynamic_typing=True)
        source = self.declare_parameter("source", "/dev/video0", descriptor).value
        if isinstance(source, bool) or not isinstance(source, str | int):
            raise invalid("source", "a path or a device index", source)
        self.camera_name = validate_camera_name(p["name"])
        self._frame_id = p["frame_id"] or f"{self.camera_name}_optical_frame"
        names = ("width", "height", "fps", "fourcc", "loop", "resize_width", "resize_height")
        config = CameraConfig(
            source=str(source),
            **{k: p[k] for k in names},
            reconnect_min_s=p["reconnect_min_s"],
            reconnect_max_s=p["reconnect_max_s"],
        ).validated()
        qos = sensor_qos(p["reliability"], p["qos_depth"])
        require(
            p["diagnostics_period"] > 0, "diagnostics_period", "a period > 0 (s)", p["diagnostics_period"]
        )
        self._source = config.source
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.topic = f"cameras/{self.camera_name}/image_raw"
        self._publisher = self.create_publisher(Image, self.topic, qos)
        self._loop = CaptureLoop(
            config, self._publish_frame, lambda: self.get_clock().now().to_msg(), on_event=self._log_event
        )
        self._loop.start()
        self.get_logger().info(
            f"camera '{self.camera_name}': {config.source} -> {self._publisher.topic_name} "
            f"({config.fps or 'source'} fps, {p['reliability']} QoS)"
        )
        self._diag_timer = self.create_timer(p["diagnostics_period"], self._publish_diagnostics)

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
        return self._loop.stats()

    def diagnostic_status(self) -> DiagnosticStatus:
        status = DiagnosticStatus(
            name=f"{self.get_name()}: camera {self.camera_name}", hardware_id=self._source
        )
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
        if hasattr(self, "_loop") and not self._loop.stop(timeout=5.0):
            self.get_logger().warning("capture thread did not stop within 5 s (blocked in the camera driver)")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, "camera_node", args)


if __name__ == "__main__":
    sys.exit(main())
