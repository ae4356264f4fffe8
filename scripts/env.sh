# Source this file (bash) to use the workspace built by scripts/setup.sh:  source scripts/env.sh
_smolvla_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$_smolvla_root/install/setup.bash" ]; then
  echo "workspace not built yet: run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
# The activate and colcon setup scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _smolvla_nounset=1; set +u ;; *) _smolvla_nounset= ;; esac
# shellcheck disable=SC1091
source "$_smolvla_root/.venv/bin/activate"
# The ROS wheels live in the venv: make it an ament prefix so packages and interfaces are found.
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
source "$_smolvla_root/install/setup.bash"
# Command-line tools (smolvla-run, smolvla-instruct, so100-*) live in install/<pkg>/lib/<pkg>, where ros2 run
# finds them; put them on PATH for installs without ros2cli.
for _smolvla_bin in "$_smolvla_root"/install/*/lib/*/; do
  case ":$PATH:" in *":${_smolvla_bin%/}:"*) ;; *) PATH="${_smolvla_bin%/}:$PATH" ;; esac
done
export PATH
unset _smolvla_bin
if [ -n "$_smolvla_nounset" ]; then set -u; fi
unset _smolvla_root _smolvla_nounset
