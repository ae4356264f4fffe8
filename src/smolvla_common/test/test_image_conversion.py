"""Image message <-> RGB array conversion: every encoding, row padding, byte order, errors, backends."""

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from smolvla_common import image_conversion as ic

RNG = np.random.default_rng(7)
OWN_BACKENDS = ["numpy"] + (["opencv"] if ic.OPENCV_AVAILABLE else [])


@pytest.fixture(params=OWN_BACKENDS)
def backend(request):
    """This module's own conversions: pure numpy, and numpy + cv2.cvtColor."""
    return request.param


HEIGHT, WIDTH = 6, 10


def _image_msg(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    """Pack ``H x W x C`` pixels into a message, with ``padding`` junk bytes at the end of every row."""
    height, width = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    junk = RNG.integers(0, 256, (height, padding), dtype=np.uint8)
    data = np.hstack([rows, junk])
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian))
    msg.step = data.shape[1]
    msg.data = data.tobytes()
    return msg


def _rgb() -> np.ndarray:
    return RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.mark.parametrize("padding", [0, 3, 32])
def test_rgb8_bgr8_rgba8_bgra8(padding, backend):
    rgb = _rgb()
    alpha = RNG.integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        out = ic.image_msg_to_rgb(_image_msg(pixels, encoding, padding), backend=backend)
        assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)


@pytest.mark.parametrize("padding", [0, 5])
def test_mono8_is_replicated_to_three_channels(padding, backend):
    mono = RNG.integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8)
    out = ic.image_msg_to_rgb(_image_msg(mono, "mono8", padding), backend=backend)
    np.testing.assert_array_equal(out, np.repeat(mono, 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("padding", [0, 4])
def test_mono16_honours_byte_order_and_scales_like_opencv(bigendian, padding, backend):
    mono16 = RNG.integers(0, 65536, (HEIGHT, WIDTH, 1), dtype=np.uint16)
    mono16[0, :4, 0] = [0, 128, 65535, 257 * 7 + 128]  # edges and a value just above a half step
    out = ic.image_msg_to_rgb(_image_msg(mono16, "mono16", padding, bigendian), backend=backend)
    expected = cv2.convertScaleAbs(mono16[:, :, 0], alpha=255.0 / 65535.0)  # what cv_bridge does
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], expected)


@pytest.mark.parametrize(
    ("encoding", "code"),
    [
        ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2),
        ("yuyv", cv2.COLOR_YUV2RGB_YUY2),
        ("yuv422", cv2.COLOR_YUV2RGB_UYVY),  # ROS's "yuv422" is UYVY byte order
        ("uyvy", cv2.COLOR_YUV2RGB_UYVY),
    ],
)
@pytest.mark.parametrize("padding", [0, 6])
def test_yuv422_matches_opencv_exactly(encoding, code, padding, backend):
    packed = RNG.integers(0, 256, (HEIGHT, WIDTH, 2), dtype=np.uint8)
    packed[0, :, :] = [
        [0, 0],
        [255, 255],
        [16, 128],
        [235, 240],
        [0, 255],
        [255, 0],
        [128, 16],
        [16, 240],
    ] + [[128, 128]] * (WIDTH - 8)
    out = ic.image_msg_to_rgb(_image_msg(packed, encoding, padding), backend=backend)
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, code))


def test_yuv422_matches_opencv_for_every_luma_and_chroma_value():
    u, v = (g.ravel().astype(np.uint8) for g in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    for luma in (0, 15, 16, 17, 100, 235, 255):
        y0 = np.full(u.size, luma, np.uint8)
        y1 = np.full(u.size, 255 - luma, np.uint8)
        for layout, code, order in (
            ("yuyv", cv2.COLOR_YUV2RGB_YUY2, (y0, u, y1, v)),
            ("uyvy", cv2.COLOR_YUV2RGB_UYVY, (u, y0, v, y1)),
        ):
            packed = np.stack(order, axis=-1).reshape(1, 2 * u.size, 2)
            np.testing.assert_array_equal(ic.yuv422_to_rgb(packed, layout), cv2.cvtColor(packed, code))


@pytest.mark.parametrize(
    ("encoding", "channels", "dtype"),
    [
        ("rgb8", 3, np.uint8),
        ("bgr8", 3, np.uint8),
        ("rgba8", 4, np.uint8),
        ("bgra8", 4, np.uint8),
        ("mono8", 1, np.uint8),
        ("mono16", 1, np.uint16),
        ("yuyv", 2, np.uint8),
        ("uyvy", 2, np.uint8),
    ],
)
def test_own_backends_agree(encoding, channels, dtype):
    if len(OWN_BACKENDS) < 2:
        pytest.skip("OpenCV not importable: only the numpy backend exists")
    high = 65536 if dtype == np.uint16 else 256
    pixels = RNG.integers(0, high, (48, 64, channels), dtype=dtype)
    msg = _image_msg(pixels, encoding, padding=16)
    np.testing.assert_array_equal(
        ic.image_msg_to_rgb(msg, backend="numpy"), ic.image_msg_to_rgb(msg, backend="opencv")
    )


def test_encoding_names_are_case_insensitive(backend):
    rgb = _rgb()
    np.testing.assert_array_equal(
        ic.image_msg_to_rgb(_image_msg(rgb[:, :, ::-1], "BGR8"), backend=backend), rgb
    )


@pytest.mark.parametrize("codec", ["jpeg", "png", "rgb8; jpeg compressed bgr8"])
def test_compressed_roundtrip(codec):
    smooth = cv2.resize(_rgb(), (64, 48), interpolation=cv2.INTER_CUBIC)  # smooth content: jpeg error small
    msg = ic.rgb_to_compressed_msg(
        smooth, Time(sec=3, nanosec=4), "cam", codec="png" if codec == "png" else "jpeg"
    )
    msg.format = codec
    out = ic.compressed_msg_to_rgb(msg, backend="numpy")
    assert out.shape == smooth.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - smooth.astype(int))
    if codec == "png":
        assert error.max() == 0
    else:
        assert error.mean() < 4.0 and error.max() < 48  # codec loss, but the colours are not swapped
    np.testing.assert_array_equal(ic.msg_to_rgb(msg, backend="numpy"), out)


def test_compressed_rgb_order_is_preserved():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = ic.compressed_msg_to_rgb(ic.rgb_to_compressed_msg(red), backend="numpy")
    assert out[..., 0].min() > 240 and out[..., 2].max() < 15


def test_rgb_to_image_msg_roundtrip_and_header():
    rgb = _rgb()
    msg = ic.rgb_to_image_msg(rgb, Time(sec=12, nanosec=345), "wrist_optical_frame")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (HEIGHT, WIDTH, WIDTH * 3, "rgb8")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        12,
        345,
        "wrist_optical_frame",
    )
    np.testing.assert_array_equal(ic.image_msg_to_rgb(msg, backend="numpy"), rgb)
    np.testing.assert_array_equal(ic.msg_to_rgb(msg, backend="numpy"), rgb)
    # Non-contiguous input (a channel-reversed view) is packed correctly.
    np.testing.assert_array_equal(
        ic.image_msg_to_rgb(ic.rgb_to_image_msg(rgb[:, :, ::-1]), backend="numpy"), rgb[:, :, ::-1]
    )


def test_result_does_not_alias_message_data():
    rgb = _rgb()
    msg = ic.rgb_to_image_msg(rgb)
    out = ic.image_msg_to_rgb(msg, backend="numpy")
    out[:] = 0
    np.testing.assert_array_equal(ic.image_msg_to_rgb(msg, backend="numpy"), rgb)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported image encoding 'bayer_rggb8'"),
        (lambda m: setattr(m, "step", m.step + 1), r"has 180 bytes but height 6 x step 31 = 186"),
        (lambda m: setattr(m, "step", 29), "step 29 is smaller than width 10 x 3 bytes per pixel"),
        (lambda m: setattr(m, "data", bytes(100)), "has 100 bytes but height 6 x step 30 = 180"),
        (lambda m: setattr(m, "height", 0), "empty image"),
    ],
)
def test_inconsistent_messages_raise_clear_errors(mutate, match, backend):
    msg = ic.rgb_to_image_msg(_rgb())
    mutate(msg)
    with pytest.raises(ic.ImageConversionError, match=match):
        ic.image_msg_to_rgb(msg, backend=backend)


def test_odd_width_yuv_is_rejected(backend):
    with pytest.raises(ic.ImageConversionError, match="even width"):
        ic.image_msg_to_rgb(_image_msg(np.zeros((2, 3, 2), np.uint8), "yuyv"), backend=backend)


def test_compressed_errors():
    with pytest.raises(ic.ImageConversionError, match="unsupported compressed image format 'tiff'"):
        ic.compressed_msg_to_rgb(CompressedImage(format="tiff", data=b"abc"), backend="numpy")
    with pytest.raises(ic.ImageConversionError, match="could not decode"):
        ic.compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg"), backend="numpy")
    with pytest.raises(ic.ImageConversionError, match="no data"):
        ic.compressed_msg_to_rgb(CompressedImage(format="jpeg"), backend="numpy")


def test_bad_arrays_and_backends_are_rejected():
    with pytest.raises(ic.ImageConversionError, match="H x W x 3 uint8"):
        ic.rgb_to_image_msg(np.zeros((4, 4), np.uint8))
    with pytest.raises(ic.ImageConversionError, match="H x W x 3 uint8"):
        ic.rgb_to_image_msg(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="unknown image conversion backend"):
        ic.image_msg_to_rgb(ic.rgb_to_image_msg(_rgb()), backend="pillow")


def test_default_backend_reflects_cv_bridge_availability():
    expected = "cv_bridge" if ic.CV_BRIDGE_AVAILABLE else "opencv" if ic.OPENCV_AVAILABLE else "numpy"
    assert expected == ic.DEFAULT_BACKEND
    if not ic.CV_BRIDGE_AVAILABLE:
        with pytest.raises(ic.ImageConversionError, match="cv_bridge is not installed"):
            ic.image_msg_to_rgb(ic.rgb_to_image_msg(_rgb()), backend="cv_bridge")


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, smolvla_common.image_conversion; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


_ALL_RAW = [
    ("rgb8", 3),
    ("bgr8", 3),
    ("rgba8", 4),
    ("bgra8", 4),
    ("mono8", 1),
    ("yuv422_yuy2", 2),
    ("yuv422", 2),
]


@pytest.mark.skipif(
    not ic.CV_BRIDGE_AVAILABLE, reason="cv_bridge is not installed (not on PyPI; full ROS 2 installs only)"
)
@pytest.mark.parametrize(("encoding", "channels"), _ALL_RAW)
@pytest.mark.parametrize("padding", [0, 8])
def test_cv_bridge_and_numpy_backends_agree(
    encoding, channels, padding
):  # pragma: no cover - needs cv_bridge
    pixels = RNG.integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8)
    msg = _image_msg(pixels, encoding, padding)
    np.testing.assert_array_equal(
        ic.image_msg_to_rgb(msg, backend="cv_bridge"), ic.image_msg_to_rgb(msg, backend="numpy")
    )
    jpeg = ic.rgb_to_compressed_msg(_rgb())
    np.testing.assert_array_equal(
        ic.compressed_msg_to_rgb(jpeg, backend="cv_bridge"), ic.compressed_msg_to_rgb(jpeg, backend="numpy")
    )
