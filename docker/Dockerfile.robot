# Robot image: ROS 2 Jazzy + the robot side (smolvla_msgs, smolvla_common, so100_driver, smolvla_bringup):
# the arm, camera and executor nodes, the recorder and the calibration tools. No torch, no MuJoCo.
# Build from the repository root:  docker build -f docker/Dockerfile.robot -t smolvla-ros/robot .
# Pin the base for reproducible builds: the distro + Ubuntu tag, or a digest (ros:jazzy-ros-base-noble@sha256:...).
ARG BASE_IMAGE=ros:jazzy-ros-base-noble
FROM ${BASE_IMAGE}
ARG ROS_DISTRO=jazzy

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /ws

# Only this side's packages; system packages through rosdep (the package.xml keys a user's rosdep resolves).
COPY src/smolvla_msgs/ src/smolvla_msgs/
COPY src/smolvla_common/ src/smolvla_common/
COPY src/so100_driver/ src/so100_driver/
COPY src/smolvla_bringup/ src/smolvla_bringup/
RUN apt-get update \
 && rosdep install --from-paths src -y --ignore-src --skip-keys "launch launch_ros" \
 && apt-get install -y --no-install-recommends python3-pip python3-venv "ros-${ROS_DISTRO}-launch-ros" \
 && rm -rf /var/lib/apt/lists/*

# pip-only packages, from the same pins as the dev environment. NumPy and OpenCV come from apt (ROS's
# message packages are compiled against the system NumPy), so they are filtered out.
COPY requirements/ requirements/
RUN python3 -m venv --system-site-packages /opt/venv \
 && cat requirements/common.txt requirements/robot.txt | grep -vE '^(numpy|opencv-python-headless)==' > /tmp/pins.txt \
 && /opt/venv/bin/pip install -r /tmp/pins.txt
ENV PATH=/opt/venv/bin:$PATH

COPY colcon.meta ./
RUN . "/opt/ros/${ROS_DISTRO}/setup.bash" && colcon build --metas colcon.meta

COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["bash"]
