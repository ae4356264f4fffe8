#!/usr/bin/env bash
# Separate virtual environment .venv-lerobot with LeRobot 0.4.4's SmolVLA inference path and its dataset code,
# used by the model benchmark (benchmarks/bench_model.py) as the reference implementation, by the dataset
# export test (src/smolvla_policy/test/test_dataset_export.py, which skips without it) and by `make train`
# (LeRobot's own lerobot-train, which also imports termcolor):
#   - the versions the golden fixture was made with: torch 2.13.0 (CPU wheel), transformers 4.57.6,
#     tokenizers 0.22.2, huggingface-hub 0.35.3; pandas 3.1.1 / pyarrow 26.0.1 (what LeRobot's parquet
#     metadata files are written with);
#   - lerobot 0.4.4 installed with --no-deps (it declares torch<2.11, which would pull a CUDA build), plus
#     exactly the packages its SmolVLA inference path and its dataset code import;
#   - video decoding: LeRobot decodes with torchcodec when that imports, else with its "pyav" backend, which
#     is torchvision.io.VideoReader. torchcodec needs FFmpeg shared libraries on the system and the build
#     for the torch version (0.13.0 for 2.13; installed below where FFmpeg is); torchvision is 0.25.0, the
#     newest LeRobot 0.4.4 allows (<0.26) and the last with VideoReader (0.28 removed it, and LeRobot then
#     cannot decode any video). VideoReader's pyav backend is pure Python over PyAV (av 15.1.0, FFmpeg
#     bundled), so it works with the CPU torch 2.13.0 wheel; no CUDA package is pulled.
#   - torchvision's PyPI build ships CUDA-linked ops that cannot load here (imported by lerobot and by the
#     SmolVLM processor, no arithmetic on this path), so inside this venv only, its fake registrations of
#     nms/qnms are guarded by torchvision.extension._has_ops().
# Idempotent: re-running with everything installed takes a few seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LEROBOT_VENV:-$ROOT/.venv-lerobot}"
PYTHON="${PYTHON:-python3}"
log() { printf '[setup-lerobot] %s\n' "$*"; }
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }

# What `lerobot.policies.smolvla` + `lerobot.policies.factory` import (module-level imports of lerobot's
# configs/datasets/processor packages included), pinned inside lerobot 0.4.4's declared ranges.
PINNED=(
  torch==2.13.0 transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.35.3 safetensors==0.8.0
  numpy==2.4.6 pillow==13.0.0 num2words==0.5.14 accelerate==1.15.0 draccus==0.10.0
  datasets==4.8.5 diffusers==0.35.2 imageio==2.38.1 deepdiff==8.6.2 av==15.1.0 einops==0.8.2
  gymnasium==1.4.0 pyserial==3.5 pandas==3.1.1 pyarrow==26.0.1 termcolor==3.3.0
)
NO_DEPS=(lerobot==0.4.4 torchvision==0.25.0)
stamp="$(printf '%s\n' "${PINNED[@]}" "${NO_DEPS[@]}" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.lerobot-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "installing LeRobot 0.4.4 and its SmolVLA inference dependencies (about a minute)"
  quiet_pip install --disable-pip-version-check -q "${PINNED[@]}"
  quiet_pip install --disable-pip-version-check -q --no-deps "${NO_DEPS[@]}"
fi

# Faster video decoding for lerobot-train: LeRobot decodes with torchcodec when it imports (measured on the sim
# dataset of 59,886 frames: 5.4 ms per training sample against 40.8 ms with pyav, make bench-train-data).
# torchcodec 0.13.0 is the release for torch 2.13 and loads the system's FFmpeg shared libraries: installed with apt when this runs
# as root on Debian/Ubuntu, else used when already present. Without them LeRobot uses pyav: same frames, slower.
have_ffmpeg() { ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so\.[0-9]'; }
if ! have_ffmpeg && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  debs=()
  for lib in libavcodec libavformat libavutil libswscale libswresample libavdevice libavfilter; do
    deb="$(apt-cache pkgnames "$lib" 2>/dev/null | grep -E "^$lib[0-9]+$" | sort -V | tail -1)" || true
    [ -n "$deb" ] && debs+=("$deb")
  done
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${debs[@]}" >/dev/null 2>&1; }
  if [ "${#debs[@]}" -gt 0 ]; then
    log "installing FFmpeg's shared libraries for torchcodec: ${debs[*]}"
    apt_install || { apt-get update -q >/dev/null 2>&1 && apt_install; } \
      || log "apt-get could not install them: LeRobot will decode videos with pyav (slower)"
  fi
fi
if have_ffmpeg; then
  "$VENV/bin/python" -c "import torchcodec.decoders" 2>/dev/null \
    || quiet_pip install --disable-pip-version-check -q --no-deps torchcodec==0.13.0
  if ! "$VENV/bin/python" -c "import torchcodec.decoders" 2>/dev/null; then
    log "torchcodec does not load with this FFmpeg: removed, LeRobot will decode videos with pyav (slower)"
    quiet_pip uninstall -y -q torchcodec
  fi
else
  log "no FFmpeg shared libraries: LeRobot decodes videos with pyav (training reads samples about 7x slower)"
fi

# Guard torchvision's fake nms/qnms registrations (its compiled ops cannot load with the CPU torch).
"$VENV/bin/python" - <<'PY'
import importlib.util
import pathlib

path = pathlib.Path(importlib.util.find_spec("torchvision").submodule_search_locations[0]) / "_meta_registrations.py"
text = path.read_text()
marker = "# guarded by setup_lerobot_reference.sh"
if marker not in text:
    helper = (
        "\n\ndef _register_fake_if_ops(name):  " + marker + "\n"
        "    if torchvision.extension._has_ops():\n"
        "        return torch.library.register_fake(name)\n"
        "    return lambda fn: fn\n"
    )
    anchor = "import torchvision.extension  # noqa: F401\n"
    assert anchor in text, "unexpected torchvision/_meta_registrations.py layout"
    text = text.replace(anchor, anchor + helper, 1)
    for op in ("nms", "qnms"):
        text = text.replace(f'@torch.library.register_fake("torchvision::{op}")', f'@_register_fake_if_ops("torchvision::{op}")')
    path.write_text(text)
    print(f"[setup-lerobot] patched {path}")
PY

HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "
import torch, transformers, lerobot
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from lerobot.policies.factory import make_pre_post_processors
from torchvision.io import VideoReader  # LeRobot's pyav video backend
from lerobot.datasets.video_utils import get_safe_default_codec
print(f'[setup-lerobot] ready: lerobot {lerobot.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, video decoding: {get_safe_default_codec()}')
"
echo "$stamp" > "$VENV/.lerobot-stamp"
