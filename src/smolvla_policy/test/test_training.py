"""``scripts/train_policy.py``: LeRobot's own ``lerobot-train`` on an exported dataset, and the checkpoint it
writes loaded unchanged by this project's model.

The end-to-end test runs the real trainer from LeRobot 0.4.4's reference environment (``.venv-lerobot``,
``make bench-model-setup``; ``LEROBOT_VENV`` names another) for a few steps on synthetic bags exported with
``smolvla-export-dataset``; without that environment it is skipped, saying why. The argument checks need
nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import synthetic_bags
from smolvla_policy.dataset import ExportSettings, export_dataset
from smolvla_policy.model.generate.backbone import image_tokens_per_camera
from smolvla_policy.training import (
    TRAIN_BACKBONE,
    VLM_FOLDER,
    lerobot_train_arguments,
    main,
    parse_args,
    train_backbone,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
CAMERAS = {"top": "/cameras/top/image_raw", "wrist": "/cameras/wrist/image_raw"}


def lerobot_venv() -> Path:
    venv = Path(os.environ.get("LEROBOT_VENV", REPO_ROOT / ".venv-lerobot"))
    if not (venv / "bin" / "lerobot-train").is_file():
        pytest.skip(f"LeRobot 0.4.4 reference environment not found at {venv} (make bench-model-setup)")
    return venv


def test_missing_dataset_or_trainer_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--dataset", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert "--dataset" in err and "make collect" in err
    dataset = tmp_path / "dataset"
    (dataset / "meta").mkdir(parents=True)
    (dataset / "meta" / "info.json").write_text("{}")
    with pytest.raises(SystemExit):
        parse_args(["--dataset", str(dataset), "--lerobot-venv", str(tmp_path / "no-venv")])
    assert "make bench-model-setup" in capsys.readouterr().err
    trainer = tmp_path / "venv" / "bin" / "lerobot-train"
    trainer.parent.mkdir(parents=True)
    trainer.touch()
    with pytest.raises(SystemExit):
        parse_args(["--dataset", str(dataset), "--lerobot-venv", str(trainer.parents[1]), "--threads", "0"])
    assert "--threads" in capsys.readouterr().err
    base = ["--dataset", str(dataset), "--lerobot-venv", str(trainer.parents[1])]
    with pytest.raises(SystemExit):
        parse_args([*base, "--init-from", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--init-from" in err and "no model.safetensors" in err
    shipped = REPO_ROOT / "checkpoints" / "sim-pick-cube"
    with pytest.raises(SystemExit):
        parse_args([*base, "--init-from", str(shipped), "--resume"])
    assert "pass one of them" in capsys.readouterr().err
    options = lerobot_train_arguments(parse_args([*base, "--init-from", str(shipped)]))
    assert f"--policy.path={shipped}" in options and not any(o.startswith("--policy.type") for o in options)
    assert "--policy.type=smolvla" in lerobot_train_arguments(parse_args(base))
    with pytest.raises(SystemExit):
        parse_args([*base, "--token-grid", "3"])
    assert "--token-grid" in capsys.readouterr().err


@pytest.mark.parametrize(("grid", "tokens"), [(2, 4), (4, 16), (8, 64)])
def test_token_grid_sets_the_image_tokens_per_camera(grid, tokens):
    assert image_tokens_per_camera(train_backbone(grid)) == tokens
    assert train_backbone(4) == TRAIN_BACKBONE


def test_lerobot_train_writes_a_checkpoint_the_policy_loads_unchanged(tmp_path):
    venv = lerobot_venv()
    bag = synthetic_bags.write_synthetic_bag(tmp_path / "ep0", "mcap", duration_s=2.0, task="pick it up")
    dataset = export_dataset([bag], tmp_path / "dataset", ExportSettings(dict(CAMERAS), units="radians"))
    run = tmp_path / "run"
    argv = ["--dataset", str(dataset), "--output-dir", str(run), "--lerobot-venv", str(venv)]
    short = ["--steps", "2", "--batch-size", "2", "--save-freq", "2", "--num-workers", "0"]
    assert main([*argv, *short, "--token-grid", "8"]) == 0

    model_dir = run / "train" / "checkpoints" / "000002" / "pretrained_model"
    assert (model_dir / VLM_FOLDER / "config.json").is_file()  # self-contained: the VLM config travels along
    assert main(argv) == 2  # an existing run is never overwritten

    from smolvla_policy.model import SmolVLA

    policy = SmolVLA.from_pretrained(str(model_dir))
    assert policy.load_report.loaded > 0 and policy.load_report.unexpected == []
    assert policy.image_keys == ["observation.images.top", "observation.images.wrist"]
    assert policy.config.resize_imgs_with_padding == (TRAIN_BACKBONE.image_size,) * 2
    frames = {key: np.full((48, 64, 3), 100, np.uint8) for key in policy.image_keys}
    actions = policy.predict_chunk(frames, np.zeros(6, np.float32), "pick it up")
    assert actions.shape == (30, 6) and np.isfinite(actions).all()
    assert image_tokens(model_dir) == 64  # --token-grid 8: an 8x8 grid per camera

    # a run started from those weights keeps their backbone (the default grid would not fit the weights)
    second = tmp_path / "second"
    argv = ["--dataset", str(dataset), "--output-dir", str(second), "--lerobot-venv", str(venv)]
    assert main([*argv, *short, "--init-from", str(model_dir)]) == 0
    model_dir = second / "train" / "checkpoints" / "000002" / "pretrained_model"
    assert image_tokens(model_dir) == 64
    policy = SmolVLA.from_pretrained(str(model_dir))
    assert policy.load_report.loaded > 0 and policy.load_report.unexpected == []
    assert np.isfinite(policy.predict_chunk(frames, np.zeros(6, np.float32), "pick it up")).all()


def image_tokens(model_dir: Path) -> int:
    return json.loads((model_dir / VLM_FOLDER / "processor_config.json").read_text())["image_seq_len"]
