# Source this file (bash) to use the workspace built by scripts/setup.sh:  source scripts/env.sh
# (ROS_DISTRO=kilted source scripts/env.sh for the Kilted build; Jazzy is the default.)
# shellcheck source=scripts/workspace.sh
if ! source "$(dirname "${BASH_SOURCE[0]}")/workspace.sh"; then
  return 1 2>/dev/null || exit 1
fi
if [ ! -f "$SMOLVLA_INSTALL/setup.bash" ]; then
  if [ "$SMOLVLA_DISTRO" = jazzy ]; then
    echo "workspace not built yet: run 'make setup' first" >&2
  else
    echo "$SMOLVLA_DISTRO workspace not built yet: run 'ROS_DISTRO=$SMOLVLA_DISTRO make setup' first" >&2
  fi
  return 1 2>/dev/null || exit 1
fi
# The activate and colcon setup scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _smolvla_nounset=1; set +u ;; *) _smolvla_nounset= ;; esac
# shellcheck disable=SC1091
source "$SMOLVLA_VENV/bin/activate"
export ROS_DISTRO="$SMOLVLA_DISTRO"
# The ROS wheels live in the venv: make it an ament prefix so packages and interfaces are found.
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# The launch system and ros2 command (development machines and CI, from ../shared/ros2-cli), when installed.
if [ -f "$SMOLVLA_VENV/ros2-cli/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$SMOLVLA_VENV/ros2-cli/local_setup.bash"
fi
# shellcheck disable=SC1091
source "$SMOLVLA_INSTALL/setup.bash"
# Command-line tools (smolvla-run, smolvla-ctl, so100-*) live in install/<pkg>/lib/<pkg>, where ros2 run
# finds them; put them on PATH for installs without ros2cli.
for _smolvla_bin in "$SMOLVLA_INSTALL"/*/lib/*/; do
  case ":$PATH:" in *":${_smolvla_bin%/}:"*) ;; *) PATH="${_smolvla_bin%/}:$PATH" ;; esac
done
export PATH
unset _smolvla_bin
if [ -n "$_smolvla_nounset" ]; then set -u; fi
unset _smolvla_nounset SMOLVLA_ROOT SMOLVLA_DISTRO SMOLVLA_VENV SMOLVLA_BUILD SMOLVLA_INSTALL SMOLVLA_LOG
