from glob import glob

from setuptools import find_packages, setup

PACKAGE = "smolvla_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "README.md"]),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="SmolVLA ROS maintainers",
    maintainer_email="maintainers@smolvla-ros.invalid",
    description="Launch files, parameters, single-process runner and instruction CLI of the SmolVLA suite",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "chunk_visualizer_node = smolvla_bringup.chunk_visualizer_node:main",
            "smolvla-ctl = smolvla_bringup.ctl:main",
            "smolvla-instruct = smolvla_bringup.instruct:main",
            "smolvla-run = smolvla_bringup.runner:main",
        ],
    },
)
