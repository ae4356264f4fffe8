#!/usr/bin/env bash
# One idempotent setup step, from nothing to a built workspace:
#   1. a virtual environment in .venv (no root, nothing written outside the repository),
#   2. the pinned Python dependencies (ROS 2 wheels, torch CPU, ...), re-installed only when the
#      requirement files change,
#   3. repair of the build-machine paths baked into the ROS wheels (inside .venv only),
#   4. colcon build of src/ into build/ and install/, redone only when package files change.
# Re-running it with nothing changed takes a few seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

# This machine's pip configuration may name local wheel folders that do not exist; pip warns about each
# one for every package. Drop only that warning.
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. virtual environment ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11 (the ROS 2 wheels are built for CPython 3.11)"
  version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ "$version" = "3.11" ] || die "Python $version found, but the ros-* wheels need CPython 3.11; set PYTHON=/path/to/python3.11"
  log "creating virtual environment in .venv"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt install python3.11-venv)"
fi
PY="$VENV/bin/python"

# --- 2./3. dependencies + wheel path repair -------------------------------------------------
deps_hash="$(cat requirements.txt requirements/*.txt scripts/fix_ros_wheel_paths.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.deps-hash" 2>/dev/null)" != "$deps_hash" ]; then
  log "installing pinned dependencies (first run: a few minutes)"
  quiet_pip install --disable-pip-version-check -q -r requirements.txt
  quiet_pip install --disable-pip-version-check -q --no-deps -r requirements/nodeps.txt
  "$PY" scripts/fix_ros_wheel_paths.py "$VENV"
  echo "$deps_hash" > "$VENV/.deps-hash"
else
  log "dependencies up to date"
fi

# --- 4. colcon build --------------------------------------------------------------------------
# The build is redone when any file that shapes it changes (package manifests, setup files, CMake,
# messages, launch/config data) or when a file is added or removed (symlink install needs new links).
src_hash="$( { find src -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort;
               find src \( -name package.xml -o -name setup.py -o -name setup.cfg -o -name CMakeLists.txt \
                         -o -name '*.msg' -o -name '*.srv' \) -type f | LC_ALL=C sort | xargs cat;
               cat colcon.meta; echo "$deps_hash"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat install/.build-hash 2>/dev/null)" != "$src_hash" ] || [ ! -f install/setup.bash ]; then
  for tool in cmake cc c++; do
    command -v "$tool" >/dev/null || die "'$tool' not found: building smolvla_msgs needs CMake and a C/C++ compiler (Debian/Ubuntu: sudo apt install cmake g++)"
  done
  log "building the workspace with colcon"
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  colcon --log-base log build --base-paths src --symlink-install --metas colcon.meta \
    --event-handlers console_cohesion- summary+ \
    --cmake-args "-DPython3_EXECUTABLE=$VENV/bin/python" -DBUILD_TESTING=OFF \
    || die "colcon build failed; see log/latest_build"
  echo "$src_hash" > install/.build-hash
else
  log "workspace build up to date"
fi
log "ready: source scripts/env.sh to use the workspace in this shell"
