#!/usr/bin/env bash
# The whole test suite of every package (what `make test` and .ci/run run): setup if needed, lint, pytest.
# ROS_DISTRO=jazzy (default) or kilted picks the ROS 2 wheels the suite runs on.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
source scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
echo "[test] ruff check"
ruff check .
echo "[test] pytest on ROS 2 $ROS_DISTRO, $(python --version)"
exec python -m pytest "$@"
