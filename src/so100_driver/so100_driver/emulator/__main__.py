"""``python -m so100_driver.emulator``: run an emulated SO arm bus on a stable symlink until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="so100-emulator",
        description="Emulate a bus of Feetech STS3215 servos (an SO-100/SO-101 arm) on a pseudo-terminal.",
    )
    parser.add_argument(
        "--link",
        default="/tmp/so101_emulator",
        help="stable symlink to create for the pty (give it as the driver's port)",
    )
    parser.add_argument(
        "--preset",
        default="so101_follower",
        choices=[*PRESETS, "none"],
        help="initial EEPROM and pose ('none': factory servos)",
    )
    parser.add_argument("--calibration", help="LeRobot calibration JSON to load into the servos' EEPROM")
    parser.add_argument(
        "--ids",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5, 6],
        help="servo IDs (only with --preset none and no --calibration)",
    )
    parser.add_argument("--timing", action="store_true", help="simulate wire time and Return_Delay_Time")
    parser.add_argument(
        "--split-replies",
        type=int,
        default=0,
        metavar="BYTES",
        help="deliver replies in USB packets of BYTES (0: whole), --split-gap-ms apart",
    )
    parser.add_argument("--split-gap-ms", type=float, default=2.0, help="gap between the packets of a reply")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.split_replies < 0 or args.split_gap_ms < 0:
        parser.error("--split-replies and --split-gap-ms must be >= 0")
    preset = None if args.preset == "none" else args.preset
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        emu = BusEmulator(
            ids=args.ids,
            link_path=args.link,
            preset=preset,
            calibration=args.calibration,
            simulate_timing=args.timing,
        )
    except (OSError, ValueError, KeyError) as exc:
        print(f"so100-emulator: {exc}", file=sys.stderr)
        return 2
    emu.faults.split_replies(args.split_replies or None, gap_s=args.split_gap_ms / 1000.0)
    with emu:
        print(f"emulating servos {emu.ids} on {emu.port} -> {emu.pty_name} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
        print(f"stopping; served {emu.stats['requests']} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
