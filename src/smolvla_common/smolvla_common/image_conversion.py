"""Conversion between ROS image messages and RGB numpy arrays, shared by every node that touches images.

Every function returns (or takes) an ``H x W x 3`` ``uint8`` array in RGB order, which is what the cameras
publish (``rgb8``) and what the policy consumes.

Three interchangeable backends, all giving the same pixels (the tests check it):

- ``"cv_bridge"``: the ROS 2 ``cv_bridge`` package, used by default where it is installed (full ROS 2
  installs; it is not on PyPI).
- ``"opencv"``: this module's own conversion with OpenCV's ``cvtColor`` doing the pixel work (fast); the
  default where ``cv_bridge`` is missing and OpenCV is importable.
- ``"numpy"``: this module's own conversion in pure numpy (YUV 4:2:2 reproduces OpenCV's fixed-point
  BT.601 arithmetic bit for bit); the fallback without OpenCV, which is then needed only to decode
  compressed images.

Supported ``sensor_msgs/Image`` encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``, ``mono16``
(scaled to 8 bit like ``cv_bridge``; ``is_bigendian`` honoured), ``yuv422_yuy2`` (alias ``yuyv``, ``yuy2``;
byte order Y0 U Y1 V) and ``yuv422`` (alias ``uyvy``; byte order U Y0 V Y1, which is what ROS means by
``yuv422``). Rows may be padded (``step`` larger than ``width`` x bytes per pixel).
``sensor_msgs/CompressedImage``: ``jpeg`` and ``png`` (including image_transport's ``"rgb8; jpeg compressed
bgr8"`` form).

This module never imports torch.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

try:  # pragma: no cover - depends on the ROS install
    from cv_bridge import CvBridge as _CvBridge
except ImportError:  # cv_bridge is not on PyPI; this module's own conversion takes over.
    _CvBridge = None

try:
    import cv2 as _cv2
except ImportError:  # pragma: no cover - opencv is a dependency of this package, but be tolerant
    _cv2 = None

CV_BRIDGE_AVAILABLE = _CvBridge is not None
OPENCV_AVAILABLE = _cv2 is not None
BACKENDS = ("cv_bridge", "opencv", "numpy")
DEFAULT_BACKEND = "cv_bridge" if CV_BRIDGE_AVAILABLE else "opencv" if OPENCV_AVAILABLE else "numpy"

_UYVY = "uyvy"
_YUYV = "yuyv"
# Canonical layout name for every accepted encoding name (lower case).
_ENCODING_ALIASES = {
    "rgb8": "rgb8",
    "bgr8": "bgr8",
    "rgba8": "rgba8",
    "bgra8": "bgra8",
    "mono8": "mono8",
    "8uc1": "mono8",
    "mono16": "mono16",
    "16uc1": "mono16",
    "yuv422": _UYVY,
    "uyvy": _UYVY,
    "yuv422_yuy2": _YUYV,
    "yuyv": _YUYV,
    "yuy2": _YUYV,
}
# (bytes per pixel, channels in the raw array, element dtype) per canonical layout.
_LAYOUT = {
    "rgb8": (3, 3, np.uint8),
    "bgr8": (3, 3, np.uint8),
    "rgba8": (4, 4, np.uint8),
    "bgra8": (4, 4, np.uint8),
    "mono8": (1, 1, np.uint8),
    "mono16": (2, 1, np.uint16),
    _UYVY: (2, 2, np.uint8),
    _YUYV: (2, 2, np.uint8),
}
SUPPORTED_ENCODINGS = tuple(sorted(_ENCODING_ALIASES))
SUPPORTED_COMPRESSED_FORMATS = ("jpeg", "jpg", "png")

# OpenCV's fixed-point ITU-R BT.601 coefficients for YUV -> RGB (video range), scaled by 2**20.
_SHIFT = 20
_C_Y = 1220542
_C_UB = 2116026
_C_UG = -409993
_C_VG = -852492
_C_VR = 1673527
_ROUND = 1 << (_SHIFT - 1)


class ImageConversionError(ValueError):
    """A message that cannot be converted (unsupported encoding, inconsistent sizes, undecodable data)."""


def canonical_encoding(encoding: str) -> str:
    """Map an encoding name (any supported alias, any case) to its canonical layout name."""
    try:
        return _ENCODING_ALIASES[encoding.strip().lower()]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        ) from None


def image_msg_to_rgb(msg: Image, backend: str | None = None) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to a new ``H x W x 3`` uint8 RGB array.

    ``backend`` is ``"cv_bridge"``, ``"opencv"``, ``"numpy"`` or None (:data:`DEFAULT_BACKEND`). Raises
    :class:`ImageConversionError` for unsupported encodings and inconsistent sizes.
    """
    backend = _resolve_backend(backend)
    raw = _raw_pixels(msg)  # the same size checks and errors whatever the backend
    layout = canonical_encoding(msg.encoding)
    if backend == "cv_bridge":  # pragma: no cover - needs a full ROS 2 install
        try:
            return np.ascontiguousarray(_bridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception:  # older cv_bridge releases lack some conversions; ours gives the same pixels
            backend = "opencv" if OPENCV_AVAILABLE else "numpy"
    if backend == "opencv" and layout in _CV2_CODES:
        return _cv2.cvtColor(np.ascontiguousarray(raw), getattr(_cv2, _CV2_CODES[layout]))
    return _raw_to_rgb(raw, layout)


def compressed_msg_to_rgb(msg: CompressedImage, backend: str | None = None) -> np.ndarray:
    """Decode a jpeg/png ``sensor_msgs/CompressedImage`` to an ``H x W x 3`` uint8 RGB array."""
    backend = _resolve_backend(backend)
    codec = _compressed_codec(msg.format)
    if len(msg.data) == 0:
        raise ImageConversionError(f"compressed image ({codec}) has no data")
    if backend == "cv_bridge":  # pragma: no cover - needs a full ROS 2 install
        bgr = _bridge().compressed_imgmsg_to_cv2(msg, desired_encoding="bgr8")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    import cv2  # decoding needs OpenCV whatever the backend

    buffer = np.frombuffer(_as_bytes(msg.data), dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"could not decode compressed image data as {codec} ({len(buffer)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def msg_to_rgb(msg: Image | CompressedImage, backend: str | None = None) -> np.ndarray:
    """Convert either image message type (rclpy, or as a bag reader gives it) to ``H x W x 3`` uint8 RGB."""
    if isinstance(msg, CompressedImage) or (hasattr(msg, "format") and not hasattr(msg, "encoding")):
        return compressed_msg_to_rgb(msg, backend)
    return image_msg_to_rgb(msg, backend)


def rgb_to_image_msg(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "") -> Image:
    """Build an ``rgb8`` ``sensor_msgs/Image`` (no row padding) from an ``H x W x 3`` uint8 array."""
    rgb = _check_rgb_array(rgb)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(rgb)).cast("B"))  # one copy; the message keeps the array
    msg.data = data
    return msg


def rgb_to_compressed_msg(
    rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "", codec: str = "jpeg", quality: int = 90
) -> CompressedImage:
    """Encode an ``H x W x 3`` uint8 RGB array as a jpeg or png ``sensor_msgs/CompressedImage``."""
    import cv2

    rgb = _check_rgb_array(rgb)
    codec = _compressed_codec(codec)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if codec == "jpeg" else ".png", rgb[:, :, ::-1], params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {rgb.shape} image as {codec}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = codec
    msg.data = encoded.tobytes()
    return msg


def yuv422_to_rgb(packed: np.ndarray, layout: str) -> np.ndarray:
    """Convert packed 4:2:2 pixels (``H x W x 2`` uint8; layout ``"yuyv"`` or ``"uyvy"``) to RGB.

    Uses the same fixed-point BT.601 (video range) arithmetic as OpenCV's ``COLOR_YUV2RGB_YUY2`` /
    ``COLOR_YUV2RGB_UYVY``, so results are identical to OpenCV's and hence to ``cv_bridge``'s.
    """
    height, width = packed.shape[:2]
    if width % 2:
        raise ImageConversionError(f"4:2:2 images need an even width, got {width}")
    pairs = packed.reshape(height, width // 2, 4).astype(np.int32)  # max |sum| < 2**30
    if layout == _YUYV:
        y0, u, y1, v = (pairs[..., i] for i in range(4))
    elif layout == _UYVY:
        u, y0, v, y1 = (pairs[..., i] for i in range(4))
    else:
        raise ImageConversionError(f"unknown 4:2:2 layout {layout!r}; expected 'yuyv' or 'uyvy'")
    u = u - 128
    v = v - 128
    chroma = np.stack(
        (_ROUND + _C_VR * v, _ROUND + _C_VG * v + _C_UG * u, _ROUND + _C_UB * u), axis=-1
    )  # (H, W/2, 3)
    rgb = np.empty((height, width // 2, 2, 3), dtype=np.uint8)
    for k, luma in enumerate((y0, y1)):
        scaled = np.maximum(luma - 16, 0)[..., None] * _C_Y
        rgb[:, :, k, :] = np.clip((scaled + chroma) >> _SHIFT, 0, 255)
    return rgb.reshape(height, width, 3)


def _raw_pixels(msg: Image) -> np.ndarray:
    """View the message data as ``H x W x C`` raw pixels (padding removed, native byte order)."""
    layout = canonical_encoding(msg.encoding)
    bytes_per_pixel, channels, dtype = _LAYOUT[layout]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image ({width}x{height}, encoding {msg.encoding!r})")
    if layout in (_YUYV, _UYVY) and width % 2:
        raise ImageConversionError(f"4:2:2 images ({msg.encoding!r}) need an even width, got {width}")
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width {width} x {bytes_per_pixel} bytes per pixel "
            f"({msg.encoding!r}) = {row_bytes}"
        )
    data = _as_bytes(msg.data)
    if len(data) != height * step:
        raise ImageConversionError(
            f"image data has {len(data)} bytes but height {height} x step {step} = {height * step} "
            f"({width}x{height} {msg.encoding!r})"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    element = np.dtype(dtype)
    if element.itemsize > 1:
        byte_order = ">" if msg.is_bigendian else "<"
        rows = np.ascontiguousarray(rows).view(element.newbyteorder(byte_order)).astype(element)
    else:
        rows = rows.view(element)
    return rows.reshape(height, width, channels)


# OpenCV conversion codes for the "opencv" backend (rgb8 and mono16 take the numpy path: a copy / a scale).
_CV2_CODES = {
    "bgr8": "COLOR_BGR2RGB",
    "bgra8": "COLOR_BGRA2RGB",
    "rgba8": "COLOR_RGBA2RGB",
    "mono8": "COLOR_GRAY2RGB",
    _YUYV: "COLOR_YUV2RGB_YUY2",
    _UYVY: "COLOR_YUV2RGB_UYVY",
}


def _raw_to_rgb(raw: np.ndarray, layout: str) -> np.ndarray:
    if layout == "rgb8":
        return raw.copy()
    if layout in ("bgr8", "bgra8"):
        return np.ascontiguousarray(raw[:, :, 2::-1])
    if layout == "rgba8":
        return np.ascontiguousarray(raw[:, :, :3])
    if layout == "mono8":
        return np.repeat(raw, 3, axis=2)
    if layout == "mono16":
        # cv_bridge scales 16 -> 8 bit by 255/65535 with rounding (i.e. divides by 257; no ties occur).
        mono = np.rint(raw.astype(np.float64) / 257.0).astype(np.uint8)
        return np.repeat(mono, 3, axis=2)
    return yuv422_to_rgb(raw, layout)


def _compressed_codec(fmt: str) -> str:
    """Codec of a ``CompressedImage.format`` (e.g. ``"jpeg"``, ``"rgb8; jpeg compressed bgr8"``)."""
    words = fmt.lower().replace(";", " ").split()
    for word in words:
        if word in ("jpeg", "jpg"):
            return "jpeg"
        if word == "png":
            return "png"
    raise ImageConversionError(
        f"unsupported compressed image format {fmt!r}; supported: {', '.join(SUPPORTED_COMPRESSED_FORMATS)}"
    )


def _check_rgb_array(rgb: Any) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ImageConversionError(
            f"expected a non-empty H x W x 3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}"
        )
    return rgb


def _as_bytes(data: Any) -> bytes | memoryview:
    """The message's data buffer without copying where possible (rclpy gives array.array or bytes)."""
    if isinstance(data, bytes | bytearray):
        return data
    return memoryview(data).cast("B") if not isinstance(data, list) else bytes(data)


def _resolve_backend(backend: str | None) -> str:
    backend = backend or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown image conversion backend {backend!r}; expected one of {', '.join(BACKENDS)}"
        )
    if backend == "cv_bridge" and not CV_BRIDGE_AVAILABLE:
        raise ImageConversionError("backend 'cv_bridge' requested but cv_bridge is not installed")
    if backend == "opencv" and not OPENCV_AVAILABLE:
        raise ImageConversionError("backend 'opencv' requested but OpenCV (cv2) is not installed")
    return backend


_BRIDGE: Any = None


def _bridge() -> Any:  # pragma: no cover - needs a full ROS 2 install
    global _BRIDGE
    if _BRIDGE is None:
        _BRIDGE = _CvBridge()
    return _BRIDGE
