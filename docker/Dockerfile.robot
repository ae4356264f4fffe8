# Robot image: ROS 2 Jazzy + so100_driver + smolvla_bringup + smolvla_msgs, no torch.
# Build from the repository root:  docker build -f docker/Dockerfile.robot -t smolvla-ros/robot .
# Pin the base for reproducible builds: the distro + Ubuntu tag, or a digest (ros:jazzy-ros-base-noble@sha256:...).
ARG BASE_IMAGE=ros:jazzy-ros-base-noble
FROM ${BASE_IMAGE}
ARG ROS_DISTRO=jazzy

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /ws

# System packages through rosdep (the same package.xml keys a user's `rosdep install` resolves).
COPY src/ src/
RUN apt-get update \
 && rosdep install --from-paths src -y --ignore-src --skip-keys "launch launch_ros" \
 && apt-get install -y --no-install-recommends python3-pip python3-venv "ros-${ROS_DISTRO}-launch-ros" \
    libegl1 libgl1 libgl1-mesa-dri \
 && rm -rf /var/lib/apt/lists/*

# pip-only packages, from the same pins as the dev environment (requirements/robot.txt). NumPy and OpenCV
# come from apt (ROS's message packages are compiled against the system NumPy), so they are filtered out.
COPY requirements/ requirements/
RUN python3 -m venv --system-site-packages /opt/venv \
 && grep -vE '^(numpy|opencv-python-headless)==' requirements/robot.txt > /tmp/robot.txt \
 && /opt/venv/bin/pip install -r /tmp/robot.txt \
 && /opt/venv/bin/pip install --no-deps -r requirements/nodeps.txt
ENV PATH=/opt/venv/bin:$PATH

COPY colcon.meta ./
RUN . "/opt/ros/${ROS_DISTRO}/setup.bash" \
 && colcon build --metas colcon.meta --packages-skip smolvla_policy

COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["bash"]
