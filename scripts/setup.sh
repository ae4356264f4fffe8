#!/usr/bin/env bash
# One idempotent setup step, from nothing to a built workspace for one ROS 2 distribution (ROS_DISTRO=jazzy,
# the default, or kilted; see scripts/workspace.sh for where each lives):
#   1. a virtual environment (.venv for jazzy; no root, nothing written outside the repository),
#   2. the pinned Python dependencies (ROS 2 wheels of that distribution, torch CPU, ...), re-installed only
#      when the requirement files change,
#   3. repair of the build-machine paths baked into the ROS wheels (inside the venv only),
#   4. colcon build of src/ (build/ and install/ for jazzy), redone only when package files change,
#   5. the ROS 2 launch system and ros2 command from ../shared/ros2-cli when that folder exists (or
#      SMOLVLA_ROS2_CLI names one): development machines and CI only, so that tests run `ros2 launch`.
# Re-running it with nothing changed takes a few seconds.
set -euo pipefail

# shellcheck source=scripts/workspace.sh
source "$(dirname "${BASH_SOURCE[0]}")/workspace.sh" || exit 2
ROOT="$SMOLVLA_ROOT"
cd "$ROOT"
VENV="$SMOLVLA_VENV"
PYTHON="${PYTHON:-python3}"
ROS2_CLI="${SMOLVLA_ROS2_CLI:-$ROOT/../shared/ros2-cli}"

# This machine's pip configuration may name local wheel folders that do not exist; pip warns about each
# one for every package. Drop only that warning.
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
log() { printf '[setup %3ds] %s\n' "$SECONDS" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. virtual environment ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install CPython 3.11 or 3.12"
  version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  # The ros-* wheels exist for 3.10-3.12, but the pinned NumPy 2.4, MuJoCo 4 and pyarrow 26 need 3.11+.
  case "$version" in
    3.11|3.12) ;;
    *) die "Python $version found, but the pinned dependencies exist for CPython 3.11 and 3.12 only (ros-* wheels: 3.10-3.12; NumPy 2.4, MuJoCo 4, pyarrow 26: 3.11+); set PYTHON=/path/to/python3.12" ;;
  esac
  log "creating the $SMOLVLA_DISTRO virtual environment in ${VENV#"$ROOT"/} (Python $version)"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt install python3.11-venv)"
fi
PY="$VENV/bin/python"

# --- 2.-5. dependencies, wheel path repair, ros2 CLI, colcon build --------------------------------
# pip installs everything before the workspace build starts: a build running while pip writes site-packages
# imported a half-installed module (lark imports `regex` when it is there; transformers brings it) and failed
# in a fresh-clone CI run. The packages are byte-compiled on every core (pip compiles on one) during the build
# and while the ros2 command is installed (compileall writes each .pyc atomically).
ROS_WHEELS="requirements/ros-wheels-$SMOLVLA_DISTRO.txt"
deps_hash="$( { echo "$SMOLVLA_DISTRO"; cat requirements.txt requirements/*.txt scripts/fix_ros_wheel_paths.py;
                [ -f "$ROS2_CLI/install.sh" ] && cat "$ROS2_CLI/install.sh"; } | sha256sum | cut -d' ' -f1)"
deps_changed=
[ "$(cat "$VENV/.deps-hash" 2>/dev/null)" = "$deps_hash" ] || deps_changed=1
PIP_INSTALL=(install --disable-pip-version-check -q --no-compile)
compile_pid=
if [ -n "$deps_changed" ]; then
  log "installing the ROS 2 $SMOLVLA_DISTRO wheels (first run: a few minutes in all)"
  # (ros-build-tools.txt pins what the build imports, so the second pip run below never replaces it)
  quiet_pip "${PIP_INSTALL[@]}" -r "$ROS_WHEELS"
  "$PY" scripts/fix_ros_wheel_paths.py "$VENV"
  log "installing the pinned Python dependencies"
  quiet_pip "${PIP_INSTALL[@]}" -r requirements.txt
  quiet_pip "${PIP_INSTALL[@]}" --no-deps -r requirements/nodeps.txt
  log "byte-compiling the installed packages in the background"
  "$PY" -m compileall -q -j 0 "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    >/dev/null 2>&1 &  # (a few packages ship files for other Python versions; pip skips them too)
  compile_pid=$!
else
  log "dependencies up to date"
fi

# The build is redone when any file that shapes it changes (package manifests, setup files, CMake,
# messages, launch/config data) or when a file is added or removed (symlink install needs new links).
src_hash="$( { find src -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort;
               find src \( -name package.xml -o -name setup.py -o -name setup.cfg -o -name CMakeLists.txt \
                         -o -name '*.msg' -o -name '*.srv' \) -type f | LC_ALL=C sort | xargs cat;
               cat colcon.meta; echo "$deps_hash"; } | sha256sum | cut -d' ' -f1)"
INSTALL="$SMOLVLA_INSTALL"
if [ "$(cat "$INSTALL/.build-hash" 2>/dev/null)" != "$src_hash" ] || [ ! -f "$INSTALL/setup.bash" ]; then
  for tool in cmake cc c++; do
    command -v "$tool" >/dev/null || die "'$tool' not found: building smolvla_msgs needs CMake and a C/C++ compiler (Debian/Ubuntu: sudo apt install cmake g++)"
  done
  log "building the workspace with colcon (ROS 2 $SMOLVLA_DISTRO)"
  ( # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    colcon --log-base "$SMOLVLA_LOG" build --base-paths src --symlink-install --metas colcon.meta \
      --build-base "$SMOLVLA_BUILD" --install-base "$INSTALL" \
      --event-handlers console_cohesion- summary- console_start_end- \
      --cmake-args "-DPython3_EXECUTABLE=$VENV/bin/python" -DBUILD_TESTING=OFF >/dev/null ) \
    || die "colcon build failed; see ${SMOLVLA_LOG#"$ROOT"/}/latest_build"
  echo "$src_hash" > "$INSTALL/.build-hash"
  log "workspace built"
else
  log "workspace build up to date"
fi
if [ -n "$deps_changed" ]; then
  # After the build: it replaces the `lark` module that the message generators import.
  if [ -f "$ROS2_CLI/install.sh" ]; then
    log "installing the ROS 2 launch system and ros2 command from ${ROS2_CLI} (for the tests)"
    DISTRO="$SMOLVLA_DISTRO" bash "$ROS2_CLI/install.sh" "$VENV" "$VENV/ros2-cli" >/dev/null \
      || die "installing $ROS2_CLI failed (see above)"
  else
    log "no ros2-cli folder at $ROS2_CLI: 'ros2 launch' and the ros2 CLI tests will be skipped"
  fi
  wait "$compile_pid" || true  # a file it could not compile is compiled when imported
  log "packages byte-compiled"
  echo "$deps_hash" > "$VENV/.deps-hash"
fi
if [ "$SMOLVLA_DISTRO" = jazzy ]; then
  log "ready: source scripts/env.sh to use the workspace in this shell"
else
  log "ready: ROS_DISTRO=$SMOLVLA_DISTRO source scripts/env.sh to use the workspace in this shell"
fi
