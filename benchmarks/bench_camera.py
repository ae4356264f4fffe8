"""Camera path figures: image conversion cost per encoding/backend, and the camera node end to end.

Prints (1) milliseconds per conversion of one frame, (2) the camera node's publish rate and the age of
each image at the subscriber (capture stamp -> callback, node clock) over real DDS, for a generated
MJPG video played at the requested rate.

    python benchmarks/bench_camera.py [--width 640 --height 480 --fps 30 --seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from smolvla_common import image_conversion as ic
from so100_driver.camera_node import CameraNode


def time_ms(function, repeats: int = 50) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1e3


def bench_conversion(width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    print(f"image conversion, {width}x{height}, ms per frame")
    print(f"  rgb_to_image_msg: {time_ms(lambda: ic.rgb_to_image_msg(rgb)):.3f}")
    backends = [b for b in ic.BACKENDS if b != "cv_bridge" or ic.CV_BRIDGE_AVAILABLE]
    backends = [b for b in backends if b != "opencv" or ic.OPENCV_AVAILABLE]
    for encoding, channels in (("rgb8", 3), ("bgr8", 3), ("mono8", 1), ("yuv422_yuy2", 2), ("yuv422", 2)):
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        msg = Image(height=height, width=width, encoding=encoding, step=width * channels)
        msg.data = pixels.tobytes()
        figures = ", ".join(
            f"{backend} {time_ms(lambda m=msg, b=backend: ic.image_msg_to_rgb(m, backend=b)):.3f}"
            for backend in backends
        )
        print(f"  image_msg_to_rgb {encoding:12s}: {figures}")
    smooth = cv2.GaussianBlur(rgb, (9, 9), 3)
    jpeg = ic.rgb_to_compressed_msg(smooth)
    decode_ms = time_ms(lambda: ic.compressed_msg_to_rgb(jpeg))
    print(f"  compressed_msg_to_rgb jpeg ({len(jpeg.data) // 1024} KiB): {decode_ms:.3f}")


def bench_node(width: int, height: int, fps: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        video = str(Path(folder) / "clip.avi")
        writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        rng = np.random.default_rng(1)
        for _ in range(int(fps * 2)):
            writer.write(
                cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3)
            )
        writer.release()

        context = rclpy.Context()
        rclpy.init(context=context)
        executor = SingleThreadedExecutor(context=context)
        camera = CameraNode(
            context=context,
            parameter_overrides=[
                Parameter("name", value="bench"),
                Parameter("source", value=video),
                Parameter("fps", value=float(fps)),
            ],
        )
        probe = rclpy.create_node("camera_bench_probe", context=context)
        ages: list[float] = []
        arrivals: list[float] = []

        def on_image(msg: Image) -> None:
            now = probe.get_clock().now().nanoseconds
            ages.append((now - rclpy.time.Time.from_msg(msg.header.stamp).nanoseconds) / 1e6)
            arrivals.append(time.monotonic())
            ic.image_msg_to_rgb(msg)

        probe.create_subscription(Image, "/cameras/bench/image_raw", on_image, qos_profile_sensor_data)
        executor.add_node(camera)
        executor.add_node(probe)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        time.sleep(seconds)
        stats = camera.capture_stats()
        executor.shutdown()
        camera.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(5.0)

    warm = max(1, len(ages) // 5)  # skip start-up
    age = np.array(ages[warm:])
    arrival = np.array(arrivals[warm:])
    rate = (len(arrival) - 1) / (arrival[-1] - arrival[0]) if len(arrival) > 1 else 0.0
    print(f"camera node, {width}x{height} MJPG video at {fps:g} fps for {seconds:g} s")
    print(f"  received {len(ages)} images, rate {rate:.2f} fps; dropped (node count) {stats.frames_dropped}")
    print(
        f"  capture -> subscriber age ms: median {np.median(age):.2f}, p90 {np.percentile(age, 90):.2f}, "
        f"p99 {np.percentile(age, 99):.2f}, max {age.max():.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    bench_conversion(args.width, args.height)
    bench_node(args.width, args.height, args.fps, args.seconds)


if __name__ == "__main__":
    main()
