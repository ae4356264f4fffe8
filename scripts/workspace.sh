# Sourced by setup.sh, env.sh and test.sh: which ROS 2 distribution this workspace uses and where it lives.
#   ROS_DISTRO=jazzy (default: the LTS most users run) or kilted, from the PyPI wheels in
#   requirements/ros-wheels-<distro>.txt. Jazzy uses .venv/ build/ install/ log/; kilted uses .venv-kilted/
#   build-kilted/ install-kilted/ log-kilted/, so both stay built side by side.
# Sets SMOLVLA_ROOT, SMOLVLA_DISTRO, SMOLVLA_VENV, SMOLVLA_BUILD, SMOLVLA_INSTALL, SMOLVLA_LOG; returns 1 on
# an unknown distribution.
SMOLVLA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMOLVLA_DISTRO="${ROS_DISTRO:-jazzy}"
case "$SMOLVLA_DISTRO" in
  jazzy) _smolvla_suffix= ;;
  kilted) _smolvla_suffix=-kilted ;;
  *)
    echo "ROS_DISTRO='$SMOLVLA_DISTRO': this workspace installs ROS 2 from PyPI wheels for jazzy or kilted only;" \
      "run with ROS_DISTRO=jazzy or ROS_DISTRO=kilted (with a full ROS 2 install, build with colcon instead:" \
      "see the README, 'With a full ROS 2 install')" >&2
    return 1 ;;
esac
SMOLVLA_VENV="$SMOLVLA_ROOT/.venv$_smolvla_suffix"
SMOLVLA_BUILD="$SMOLVLA_ROOT/build$_smolvla_suffix"
SMOLVLA_INSTALL="$SMOLVLA_ROOT/install$_smolvla_suffix"
SMOLVLA_LOG="$SMOLVLA_ROOT/log$_smolvla_suffix"
unset _smolvla_suffix
