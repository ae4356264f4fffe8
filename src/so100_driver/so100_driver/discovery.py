"""Find the arm's serial port and the cameras: ``so100-find-ports`` and ``so100-find-cameras``.

Serial ports come from pyserial's ``list_ports`` plus their stable ``/dev/serial/by-id`` names (use those in
parameter files: ``/dev/ttyACM0`` can change between boots). Cameras are the ``/dev/video*`` nodes with
their ``/dev/v4l/by-id`` and ``by-path`` names, the driver's name from sysfs and, optionally, what OpenCV
gets when it opens them (UVC cameras expose a second, metadata-only node that cannot capture).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

DEV_DIR = "/dev"
SYS_VIDEO_DIR = "/sys/class/video4linux"


@dataclass
class SerialPort:
    device: str
    by_id: list[str] = field(default_factory=list)
    description: str = ""
    manufacturer: str = ""
    serial_number: str = ""
    vid_pid: str = ""  # "1a86:55d3" for the usual SO-100/SO-101 bus adapter (CH343)


@dataclass
class CameraInfo:
    device: str
    by_id: list[str] = field(default_factory=list)
    by_path: list[str] = field(default_factory=list)
    name: str = ""
    probed: bool = False
    can_capture: bool | None = None  # None when not probed
    width: int = 0
    height: int = 0
    fps: float = 0.0
    fourcc: str = ""
    error: str = ""

    @property
    def stable_path(self) -> str:
        """The path to put in a parameter file: by-id if there is one, else by-path, else the node."""
        return (self.by_id or self.by_path or [self.device])[0]


def links_by_target(link_dir: str) -> dict[str, list[str]]:
    """Map resolved target path -> sorted symlinks in ``link_dir`` (empty if the folder is missing)."""
    result: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(link_dir))
    except OSError:
        return result
    for name in names:
        path = os.path.join(link_dir, name)
        if os.path.islink(path):
            result.setdefault(os.path.realpath(path), []).append(path)
    return result


def list_serial_ports(comports: Iterable | None = None, dev_dir: str = DEV_DIR) -> list[SerialPort]:
    """Serial ports with a driver, sorted by device, each with its by-id links."""
    if comports is None:
        from serial.tools import list_ports

        comports = list_ports.comports()
    by_id = links_by_target(os.path.join(dev_dir, "serial", "by-id"))
    ports = []
    for info in comports:
        vid_pid = f"{info.vid:04x}:{info.pid:04x}" if info.vid is not None and info.pid is not None else ""
        description = info.description if info.description and info.description != "n/a" else ""
        ports.append(
            SerialPort(
                device=info.device,
                by_id=by_id.get(os.path.realpath(info.device), []),
                description=description,
                manufacturer=info.manufacturer or "",
                serial_number=info.serial_number or "",
                vid_pid=vid_pid,
            )
        )
    return sorted(ports, key=lambda p: _natural_key(p.device))


def list_cameras(
    dev_dir: str = DEV_DIR,
    sys_video_dir: str = SYS_VIDEO_DIR,
    probe: bool = True,
    prober: Callable[[str], CameraInfo] | None = None,
) -> list[CameraInfo]:
    """The ``video*`` nodes of ``dev_dir`` in number order, with stable names and optional probe results."""
    try:
        nodes = [n for n in os.listdir(dev_dir) if re.fullmatch(r"video\d+", n)]
    except OSError:
        nodes = []
    by_id = links_by_target(os.path.join(dev_dir, "v4l", "by-id"))
    by_path = links_by_target(os.path.join(dev_dir, "v4l", "by-path"))
    prober = prober or probe_camera
    cameras = []
    for node in sorted(nodes, key=_natural_key):
        device = os.path.join(dev_dir, node)
        real = os.path.realpath(device)
        info = CameraInfo(device=device, by_id=by_id.get(real, []), by_path=by_path.get(real, []))
        info.name = _read_text(os.path.join(sys_video_dir, node, "name"))
        if probe:
            probed = prober(device)
            for attr in ("probed", "can_capture", "width", "height", "fps", "fourcc", "error"):
                setattr(info, attr, getattr(probed, attr))
        cameras.append(info)
    return cameras


def probe_camera(device: str) -> CameraInfo:
    """Open ``device`` with OpenCV (V4L2) and read one frame to learn its default mode."""
    import cv2

    from so100_driver.camera import fourcc_to_str

    info = CameraInfo(device=device, probed=True)
    cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
    try:
        if not cap.isOpened():
            info.can_capture = False
            info.error = "cannot open (metadata node, busy, or no permission)"
            return info
        ok, frame = cap.read()
        info.can_capture = bool(ok and frame is not None)
        info.width, info.height = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        info.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        info.fourcc = fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC))
        if not info.can_capture:
            info.error = "opened but delivered no frame"
    finally:
        cap.release()
    return info


def format_serial_ports(ports: list[SerialPort]) -> str:
    if not ports:
        return (
            "No serial ports found. Is the arm's USB adapter plugged in and powered? On Linux your user "
            "needs to be in the 'dialout' group."
        )
    lines = [f"{len(ports)} serial port(s):"]
    for port in ports:
        details = ", ".join(
            x
            for x in (
                port.description,
                port.manufacturer,
                port.vid_pid and f"USB {port.vid_pid}",
                port.serial_number and f"serial {port.serial_number}",
            )
            if x
        )
        lines.append(f"  {port.device}" + (f"  ({details})" if details else ""))
        lines.extend(f"    stable name: {link}" for link in port.by_id)
    return "\n".join(lines)


def format_cameras(cameras: list[CameraInfo]) -> str:
    if not cameras:
        return (
            "No cameras found (no /dev/video* devices). Is the camera plugged in? "
            "Check `dmesg` for USB errors."
        )
    lines = [f"{len(cameras)} video device(s):"]
    for camera in cameras:
        head = f"  {camera.device}" + (f"  {camera.name}" if camera.name else "")
        if camera.probed:
            if camera.can_capture:
                head += f"  -> {camera.width}x{camera.height} @ {camera.fps:g} fps {camera.fourcc}".rstrip()
            else:
                head += f"  -> not a capture device: {camera.error}"
        lines.append(head)
        lines.extend(f"    by-id:   {link}" for link in camera.by_id)
        lines.extend(f"    by-path: {link}" for link in camera.by_path)
    capture = [c for c in cameras if c.can_capture is not False]
    if capture:
        lines.append("")
        lines.append("Camera node source parameter (stable across reboots):")
        lines.extend(f"  source: {c.stable_path}" for c in capture)
    return "\n".join(lines)


def find_port_by_unplugging(
    list_devices: Callable[[], list[str]], wait_for_user: Callable[[str], object]
) -> tuple[list[str], str]:
    """Which port disappears when the user unplugs the arm? Returns (ports that vanished, message)."""
    before = set(list_devices())
    wait_for_user("Unplug the arm's USB cable, then press Enter...")
    after = set(list_devices())
    gone = sorted(before - after, key=_natural_key)
    if len(gone) == 1:
        return gone, f"The arm is on {gone[0]}. Plug it back in."
    if not gone:
        return gone, "No port disappeared: was the right cable unplugged? Try again."
    return gone, f"Several ports disappeared ({', '.join(gone)}): unplug only the arm and try again."


def main_ports(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="so100-find-ports", description="List serial ports (with stable /dev/serial/by-id names)."
    )
    parser.add_argument(
        "--unplug", action="store_true", help="find the arm's port by unplugging it (interactive)"
    )
    args = parser.parse_args(argv)
    if args.unplug:
        ports, message = find_port_by_unplugging(lambda: [p.device for p in list_serial_ports()], input)
        print(message)
        return 0 if len(ports) == 1 else 1
    print(format_serial_ports(list_serial_ports()))
    return 0


def main_cameras(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="so100-find-cameras", description="List /dev/video* cameras, stable names, default mode."
    )
    parser.add_argument("--no-probe", action="store_true", help="do not open the devices with OpenCV")
    parser.add_argument(
        "--snapshot", metavar="DIR", help="save one frame per capture device as DIR/<videoN>.png"
    )
    args = parser.parse_args(argv)
    cameras = list_cameras(probe=not args.no_probe)
    print(format_cameras(cameras))
    if args.snapshot:
        saved = save_snapshots([c.device for c in cameras if c.can_capture is not False], args.snapshot)
        print("\n".join(f"saved {path}" for path in saved) or "no snapshot saved")
    return 0


def save_snapshots(devices: list[str], folder: str) -> list[str]:
    """One frame of each device as ``folder/<device name>.png`` (to tell which camera is which)."""
    import cv2

    os.makedirs(folder, exist_ok=True)
    saved = []
    for device in devices:
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        cap.release()
        if ok and frame is not None:
            path = os.path.join(folder, f"{os.path.basename(device)}.png")
            cv2.imwrite(path, frame)
            saved.append(path)
    return saved


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


if __name__ == "__main__":
    sys.exit(main_cameras())
