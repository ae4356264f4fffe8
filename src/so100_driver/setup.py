from setuptools import find_packages, setup

PACKAGE = "so100_driver"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "README.md"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="SmolVLA ROS maintainers",
    maintainer_email="maintainers@smolvla-ros.invalid",
    description="Driver for SO-100/SO-101 arms on Feetech STS3215 servos",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            # executables land in lib/<package> (setup.cfg), where ros2 run and launch find them
            "so100-emulator = so100_driver.emulator.__main__:main",
            "arm_node = so100_driver.arm_node:main",
            "leader_node = so100_driver.leader_node:main",
            "so100-calibrate = so100_driver.calibrate:main",
            "camera_node = so100_driver.camera_node:main",
            "sim_node = so100_driver.sim_node:main",
            "so100-find-ports = so100_driver.discovery:main_ports",
            "so100-find-cameras = so100_driver.discovery:main_cameras",
        ],
    },
)
