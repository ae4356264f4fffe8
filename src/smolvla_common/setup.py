from setuptools import find_packages, setup

PACKAGE = "smolvla_common"

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
    description="Shared by the robot and the GPU side of the SmolVLA suite: executor, recorder, bags, units",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "executor_node = smolvla_common.executor_node:main",
            "recorder_node = smolvla_common.recorder_node:main",
            "smolvla-record = smolvla_common.recorder_node:episode_cli",
            "bag_player = smolvla_common.bag_player:main",
            "smolvla-play = smolvla_common.bag_player:main",
        ],
    },
)
