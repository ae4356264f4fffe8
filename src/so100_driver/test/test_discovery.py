"""Port and camera discovery.

CI machines have no USB serial adapter and no camera, so the listing logic is exercised on a fake
``/dev`` + ``/sys`` tree in a tmp dir (real files and symlinks, like udev creates them) and with port records
built from pyserial's own ``ListPortInfo`` class. OpenCV probing is replaced by a scripted prober where a
test says so; the real prober is run against a missing device.
"""

import os

from serial.tools.list_ports_common import ListPortInfo

from so100_driver import discovery


def _port(device, vid=None, pid=None, serial=None, manufacturer=None, description="n/a"):
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.manufacturer, info.description = (
        vid,
        pid,
        serial,
        manufacturer,
        description,
    )
    return info


def _fake_dev(tmp_path):
    dev = tmp_path / "dev"
    (dev / "serial" / "by-id").mkdir(parents=True)
    (dev / "v4l" / "by-id").mkdir(parents=True)
    (dev / "v4l" / "by-path").mkdir(parents=True)
    for node in (
        "ttyACM0",
        "ttyACM1",
        "ttyUSB10",
        "video0",
        "video1",
        "video2",
        "video10",
        "video-not-a-node",
    ):
        (dev / node).write_text("")
    (dev / "serial" / "by-id" / "usb-1a86_USB_Single_Serial_58FA0823-if00").symlink_to("../../ttyACM1")
    (dev / "v4l" / "by-id" / "usb-Cam_A_123-video-index0").symlink_to("../../video0")
    (dev / "v4l" / "by-id" / "usb-Cam_A_123-video-index1").symlink_to("../../video1")
    (dev / "v4l" / "by-path" / "pci-0000:00:14.0-usb-0:2:1.0-video-index0").symlink_to("../../video0")
    (dev / "v4l" / "by-path" / "pci-0000:00:14.0-usb-0:3:1.0-video-index0").symlink_to("../../video2")
    sys_dir = tmp_path / "sys"
    for node, name in (("video0", "Cam A: Cam A"), ("video1", "Cam A: Cam A"), ("video2", "Wrist cam")):
        (sys_dir / node).mkdir(parents=True)
        (sys_dir / node / "name").write_text(name + "\n")
    return str(dev), str(sys_dir)


def test_serial_ports_get_their_by_id_names_and_sort_naturally(tmp_path):
    dev, _ = _fake_dev(tmp_path)
    ports = discovery.list_serial_ports(
        [
            _port(os.path.join(dev, "ttyUSB10")),
            _port(os.path.join(dev, "ttyACM1"), 0x1A86, 0x55D3, "58FA0823", "QinHeng", "USB Single Serial"),
            _port(os.path.join(dev, "ttyACM0")),
        ],
        dev_dir=dev,
    )
    assert [os.path.basename(p.device) for p in ports] == ["ttyACM0", "ttyACM1", "ttyUSB10"]
    arm = ports[1]
    assert (
        arm.vid_pid == "1a86:55d3"
        and arm.serial_number == "58FA0823"
        and arm.description == "USB Single Serial"
    )
    assert arm.by_id == [os.path.join(dev, "serial", "by-id", "usb-1a86_USB_Single_Serial_58FA0823-if00")]
    assert ports[0].by_id == [] and ports[0].description == ""
    text = discovery.format_serial_ports(ports)
    assert "3 serial port(s)" in text and "USB 1a86:55d3" in text and "stable name: " + arm.by_id[0] in text


def test_empty_port_list_explains_what_to_check():
    assert discovery.list_serial_ports([], dev_dir="/nonexistent") == []
    assert "No serial ports found" in discovery.format_serial_ports([])
    assert "dialout" in discovery.format_serial_ports([])


def test_real_port_listing_runs_on_this_machine():
    """Whatever this machine has (usually nothing useful): the real pyserial call must work and format."""
    ports = discovery.list_serial_ports()
    assert all(p.device for p in ports)
    assert discovery.format_serial_ports(ports)


def test_cameras_with_stable_names_sysfs_names_and_probe_results(tmp_path):
    """Probing is scripted here (no camera on CI): video1 behaves like a UVC metadata node."""
    dev, sys_dir = _fake_dev(tmp_path)

    def prober(device):
        if device.endswith("video1"):
            return discovery.CameraInfo(device, probed=True, can_capture=False, error="cannot open")
        return discovery.CameraInfo(
            device, probed=True, can_capture=True, width=640, height=480, fps=30.0, fourcc="MJPG"
        )

    cameras = discovery.list_cameras(dev_dir=dev, sys_video_dir=sys_dir, prober=prober)
    assert [os.path.basename(c.device) for c in cameras] == ["video0", "video1", "video2", "video10"]
    cam0, cam1, cam2, cam10 = cameras
    assert cam0.name == "Cam A: Cam A" and cam2.name == "Wrist cam" and cam10.name == ""
    assert cam0.stable_path.endswith("v4l/by-id/usb-Cam_A_123-video-index0")
    assert cam2.stable_path.endswith("v4l/by-path/pci-0000:00:14.0-usb-0:3:1.0-video-index0")
    assert cam10.stable_path == cam10.device
    assert (cam0.width, cam0.height, cam0.fourcc, cam1.can_capture) == (640, 480, "MJPG", False)
    text = discovery.format_cameras(cameras)
    assert "640x480 @ 30 fps MJPG" in text and "not a capture device: cannot open" in text
    suggested = text.split("Camera node source parameter")[1]
    assert cam0.stable_path in suggested and cam1.stable_path not in suggested


def test_cameras_without_probe(tmp_path):
    dev, sys_dir = _fake_dev(tmp_path)
    cameras = discovery.list_cameras(dev_dir=dev, sys_video_dir=sys_dir, probe=False)
    assert len(cameras) == 4 and all(not c.probed and c.can_capture is None for c in cameras)
    assert "->" not in discovery.format_cameras(cameras)


def test_no_cameras():
    assert discovery.list_cameras(dev_dir="/nonexistent-dev", probe=False) == []
    assert discovery.format_cameras([]).startswith("No cameras found")


def test_real_prober_on_a_missing_device():
    info = discovery.probe_camera("/dev/video_does_not_exist_77")
    assert info.probed and info.can_capture is False and "cannot open" in info.error


def test_find_port_by_unplugging():
    listings = iter([["/dev/ttyACM0", "/dev/ttyACM1"], ["/dev/ttyACM0"]])
    prompts = []
    gone, message = discovery.find_port_by_unplugging(lambda: next(listings), prompts.append)
    assert gone == ["/dev/ttyACM1"] and "/dev/ttyACM1" in message and "Unplug" in prompts[0]
    same = iter([["/dev/ttyACM0"], ["/dev/ttyACM0"]])
    assert discovery.find_port_by_unplugging(lambda: next(same), prompts.append)[0] == []


def test_cli_prints(capsys):
    assert discovery.main_ports([]) == 0
    assert "serial port" in capsys.readouterr().out
    assert discovery.main_cameras(["--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "video device" in out or "No cameras found" in out
