"""SO-100/SO-101 arm driver: Feetech servo bus, calibration, arm and camera nodes, emulator, simulation.

Never imports torch: this package must run on a Raspberry Pi.
"""
