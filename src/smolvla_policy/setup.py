from setuptools import find_packages, setup

PACKAGE = "smolvla_policy"

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
    description="SmolVLA policy for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            # executables land in lib/<package> (setup.cfg), where ros2 run and launch find them
            "policy_node = smolvla_policy.policy_node:main",
            "replay_evaluator_node = smolvla_policy.replay_evaluator_node:main",
            "smolvla-eval = smolvla_policy.evaluation.cli:main",
            "smolvla-make-checkpoint = smolvla_policy.model.generate.cli:main",
            "smolvla-export-dataset = smolvla_policy.dataset.cli:main",
        ],
    },
)
