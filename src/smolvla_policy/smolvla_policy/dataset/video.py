"""One mp4 per camera, encoded with PyAV (:class:`VideoWriter`)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_CODECS = ("libsvtav1", "libx264", "libx264rgb")
_CODEC_NAMES = {"libsvtav1": "av1", "libx264": "h264", "libx264rgb": "h264"}


class VideoWriter:
    """One mp4 per camera; frames of successive episodes are appended (v3.0 packs episodes into one file)."""

    def __init__(self, path: Path, fps: float, vcodec: str, crf: int, gop: int):
        import av

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (its banner floods the terminal)
        if vcodec not in VIDEO_CODECS:
            raise ValueError(f"vcodec must be one of {VIDEO_CODECS}, got {vcodec!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.vcodec, self.crf, self.gop = path, fps, vcodec, crf, gop
        self.container = av.open(str(path), "w")
        self.stream = None
        self.frames = 0
        self.size: tuple[int, int] | None = None

    def _open_stream(self, height: int, width: int) -> None:
        """Create the video stream at the size of the first frame."""
        if height % 2 or width % 2:
            raise ValueError(f"{self.path}: video frames need even sizes, got {width}x{height}")
        self.stream = self.container.add_stream(self.vcodec, rate=Fraction(self.fps).limit_denominator(1000))
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "rgb24" if self.vcodec == "libx264rgb" else "yuv420p"
        options = {"crf": str(self.crf), "g": str(self.gop)}
        if self.vcodec == "libx264rgb" and self.crf == 0:
            options["qp"] = "0"  # mathematically lossless
        self.stream.options = options
        self.size = (height, width)

    def add(self, rgb: np.ndarray) -> None:
        """Encode one RGB frame (H, W, 3 uint8); every frame must have the size of the first."""
        import av

        height, width = rgb.shape[:2]
        if self.stream is None:
            self._open_stream(height, width)
        elif (height, width) != self.size:
            raise ValueError(
                f"{self.path}: frame size changed from {self.size[1]}x{self.size[0]} to {width}x{height}; "
                "a camera must keep one resolution across the exported bags"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()

    def info(self) -> dict:
        """The ``info`` block of this camera's feature in ``meta/info.json``."""
        return {
            "video.height": self.size[0],
            "video.width": self.size[1],
            "video.codec": _CODEC_NAMES[self.vcodec],
            "video.pix_fmt": self.stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": round(self.fps),
            "video.channels": 3,
            "has_audio": False,
        }
