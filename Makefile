# User-facing commands. Everything runs inside .venv + the colcon install/ built by `make setup`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
RUN := source scripts/env.sh &&

.PHONY: help setup test lint format demo bench-model-setup rtc-golden bench-model bench-driver bench-camera bench-sim bench-eval bench-pipeline bench-closed-loop bench-train-data collect collect-takeovers train clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup:  ## create .venv, install pinned dependencies, build the workspace (idempotent; ROS_DISTRO=kilted for Kilted)
	@bash scripts/setup.sh

test:  ## setup if needed, then lint + the whole test suite (HF_HUB_OFFLINE=1; ROS_DISTRO=kilted for Kilted)
	@bash scripts/test.sh

lint: setup  ## ruff check + hadolint of the Dockerfiles
	@$(RUN) ruff check . && hadolint docker/Dockerfile.*

format: setup  ## ruff format + autofix
	@$(RUN) ruff check --fix . && ruff format .

demo: setup  ## run the whole pipeline in simulation and write a report
	@$(RUN) python scripts/demo.py $(ARGS)

bench-model-setup:  ## build .venv-lerobot (LeRobot 0.4.4, the reference bench-model compares against)
	@bash scripts/setup_lerobot_reference.sh

rtc-golden:  ## regenerate the RTC golden file with LeRobot 0.4.4 (.venv-lerobot, or LEROBOT_VENV=...)
	@$${LEROBOT_VENV:-.venv-lerobot}/bin/python benchmarks/lerobot_rtc_golden.py $(ARGS)

bench-model: setup  ## SmolVLA chunk latency and memory vs LeRobot (real-size architecture)
	@$(RUN) HF_HUB_OFFLINE=1 python benchmarks/bench_model.py $(ARGS)

bench-driver: setup  ## servo bus control cycle on the emulator
	@$(RUN) python benchmarks/bench_driver.py $(ARGS)

bench-camera: setup  ## image conversion speed and camera node rate on a generated video
	@$(RUN) python benchmarks/bench_camera.py $(ARGS)

bench-sim: setup  ## MuJoCo simulated arm: rendering fps per camera with physics in real time
	@$(RUN) python benchmarks/bench_sim.py $(ARGS)

bench-eval: setup  ## offline evaluation speed with the real-size model
	@$(RUN) python benchmarks/bench_eval.py $(ARGS)

bench-pipeline: setup  ## sync vs async execution with injected inference latency
	@$(RUN) python benchmarks/bench_pipeline.py $(ARGS)

bench-closed-loop: setup  ## closed-loop success on held-out sim placements: expert, policy sync/async x latency
	@$(RUN) HF_HUB_OFFLINE=1 python benchmarks/bench_closed_loop.py $(ARGS)

collect: setup  ## record scripted-expert episodes of the sim pick-up task, export a LeRobot dataset (EPISODES=60 SEED=0)
	@$(RUN) HF_HUB_OFFLINE=1 python scripts/record_expert.py --episodes $(or $(EPISODES),60) --seed $(or $(SEED),0) \
	  --size 128 --cameras front wrist --output-dir recordings/closed-loop/bags && \
	  smolvla-export-dataset recordings/closed-loop/bags/episode_* --out recordings/closed-loop/dataset \
	  --units degrees --joint-units deg,deg,deg,deg,deg,deg --only-successful

collect-takeovers: setup  ## the expert takes over where a policy gets stuck; export expert + takeover episodes (CHECKPOINT= EPISODES=40 SEED=1)
	@$(RUN) HF_HUB_OFFLINE=1 python scripts/record_takeovers.py --checkpoint $(or $(CHECKPOINT),checkpoints/sim-pick-cube) \
	  --episodes $(or $(EPISODES),40) --seed $(or $(SEED),1) --size 128 --output-dir recordings/closed-loop/takeovers && \
	  smolvla-export-dataset recordings/closed-loop/bags/episode_* recordings/closed-loop/takeovers/episode_* \
	  --out recordings/closed-loop/dataset-takeovers --units degrees --joint-units deg,deg,deg,deg,deg,deg --only-successful

bench-train-data: bench-model-setup  ## LeRobot's data loading per training sample, pyav vs torchcodec (DATASET=recordings/closed-loop/dataset)
	@$${LEROBOT_VENV:-.venv-lerobot}/bin/python benchmarks/bench_train_data.py $(or $(DATASET),recordings/closed-loop/dataset) $(ARGS)

train: setup bench-model-setup  ## train a small SmolVLA from scratch on that dataset with lerobot-train (ARGS="--steps N ...")
	@$(RUN) python scripts/train_policy.py $(ARGS)

clean:  ## remove the colcon build products build*/ install*/ log*/ (keeps the venvs and reports/)
	rm -rf build install log build-kilted install-kilted log-kilted
