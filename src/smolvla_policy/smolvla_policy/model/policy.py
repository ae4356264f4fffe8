"""`SmolVLA`: load a LeRobot SmolVLA checkpoint and predict action chunks from raw observations."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt_io
from .config import ACTION_KEY, STATE_KEY, PolicyConfig
from .network import DtypeLayout, PrefixCache, SmolVLANet, release_freed_memory
from .preprocess import Normalizer, Tokenizer, check_image, images_to_model
from .rtc import guide_velocity, prefix_weights

log = logging.getLogger(__name__)
SMALL_MODEL_PARAMS = 20_000_000
IGNORED_KEYS = ("vlm_with_expert.vlm.lm_head.",)
LEGACY_NORMALIZER_KEYS = ("normalize_inputs.", "unnormalize_outputs.", "normalize_targets.")


@dataclass
class LoadReport:
    """What happened to the checkpoint's tensors."""

    loaded: int = 0
    ignored: list[str] = field(default_factory=list)  # known-unused, e.g. lm_head
    unexpected: list[str] = field(default_factory=list)


class SmolVLA:
    """SmolVLA inference, numerically matching LeRobot 0.4.4 (see the package README)."""

    def __init__(
        self,
        cfg: PolicyConfig,
        net: SmolVLANet,
        tokenizer: Tokenizer,
        state_norm: Normalizer,
        action_norm: Normalizer,
        device: torch.device,
        report: LoadReport,
        checkpoint_dir: Path,
    ):
        self.config = cfg
        self.net = net
        self.tokenizer = tokenizer
        self.state_norm = state_norm.to(device)
        self.action_norm = action_norm.to(device)
        self.device = device
        self.load_report = report
        self.checkpoint_dir = checkpoint_dir
        self._empty_camera: dict = {}
        self._num_params = net.num_parameters
        self._use_cuda_graph = False
        self._graphs: dict = {}
        self._noise_generator: torch.Generator | None = None
        #: scales the drawn noise (not explicit noise): 1 samples as LeRobot does, 0 starts every chunk from
        #: the noise distribution's mean (the same chunk for the same observation)
        self.noise_scale = 1.0

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        vlm_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        cuda_graph: bool | None = None,
    ) -> SmolVLA:
        """Load a LeRobot checkpoint dir or hub repo id; the backbone's config/tokenizer come from
        `vlm_model_name` (or `vlm_path`), its weights from the checkpoint only."""
        from transformers import AutoConfig, AutoTokenizer

        checkpoint_dir = ckpt_io.resolve_checkpoint_dir(path_or_repo_id)
        raw = ckpt_io.read_json(checkpoint_dir / "config.json")
        try:
            cfg = PolicyConfig.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise ckpt_io.CheckpointError(f"{checkpoint_dir / 'config.json'}: {exc}") from exc
        vlm_dir = ckpt_io.resolve_vlm_dir(cfg.vlm_model_name, checkpoint_dir, vlm_path)
        vlm_config = AutoConfig.from_pretrained(vlm_dir)
        if getattr(vlm_config, "model_type", None) != "smolvlm":
            raise ckpt_io.CheckpointError(
                f"{vlm_dir}/config.json has model_type {vlm_config.model_type!r}; "
                "SmolVLA needs a SmolVLM backbone ('smolvlm')"
            )
        token_step, norm = ckpt_io.load_processor_steps(checkpoint_dir)
        tok_dir = vlm_dir
        tok_name = token_step.get("tokenizer_name")
        if vlm_path is None and tok_name and tok_name != cfg.vlm_model_name:
            tok_dir = ckpt_io.resolve_vlm_dir(tok_name, checkpoint_dir)
        hf_tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        tokenizer = Tokenizer(
            hf_tokenizer,
            max_length=int(token_step.get("max_length", cfg.tokenizer_max_length)),
            padding=token_step.get("padding", cfg.pad_language_to),
            padding_side=token_step.get("padding_side", "right"),
            truncation=bool(token_step.get("truncation", True)),
        )

        device = torch.device(device)
        layout = DtypeLayout.named(dtype, cfg, vlm_config.text_config)
        with torch.device("meta"):
            net = SmolVLANet(cfg, vlm_config)
        if cfg.add_image_special_tokens:
            net.image_special_ids = _image_special_ids(hf_tokenizer)
        reader = ckpt_io.SafetensorsReader(checkpoint_dir / "model.safetensors")
        report = _load_weights(net, reader, layout, device)
        net.eval().requires_grad_(False)

        if not norm["stats"]:
            norm["stats"] = ckpt_io.legacy_stats(reader)
        norm_map = norm["norm_map"] or cfg.normalization_mapping
        state_norm = Normalizer(
            STATE_KEY, norm_map.get("STATE", "IDENTITY"), norm["stats"].get(STATE_KEY), norm["eps"]
        )
        action_norm = Normalizer(
            ACTION_KEY, norm_map.get("ACTION", "IDENTITY"), norm["stats"].get(ACTION_KEY), norm["eps"]
        )
        policy = cls(cfg, net, tokenizer, state_norm, action_norm, device, report, checkpoint_dir)
        policy._use_cuda_graph = device.type == "cuda" if cuda_graph is None else bool(cuda_graph)
        if policy._use_cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}")
        return policy

    # ------------------------------------------------------------------------------------------ properties
    @property
    def image_keys(self) -> list[str]:
        """Camera feature keys the caller provides, in the checkpoint's (prefix) order."""
        return self.config.camera_keys

    @property
    def image_shapes(self) -> dict[str, tuple[int, ...]]:
        """(C, H, W) each camera had in training (informative: any size is accepted)."""
        return {k: self.config.image_features[k] for k in self.image_keys}

    @property
    def state_dim(self) -> int:
        return self.config.state_dim

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def max_action_dim(self) -> int:
        return self.config.max_action_dim

    @property
    def fps(self) -> float | None:
        return self.config.fps

    # ------------------------------------------------------------------------------------------ inference
    def seed_noise(self, seed: int | None) -> None:
        """Draw the flow-matching noise of every later call without explicit noise from a generator seeded
        with `seed` (the same inputs then give the same chunks, call after call); None: torch's global RNG."""
        if seed is None:
            self._noise_generator = None
        else:
            self._noise_generator = torch.Generator().manual_seed(int(seed))

    def predict_chunk(
        self,
        images: Mapping[str, np.ndarray],
        state: np.ndarray | Sequence[float],
        task: str,
        noise: np.ndarray | torch.Tensor | None = None,
        prev_chunk: np.ndarray | None = None,
        inference_delay: int = 0,
        execution_horizon: int | None = None,
    ) -> np.ndarray:
        """One observation -> (chunk_size, action_dim) actions in the checkpoint's units.

        RTC guidance is on when `prev_chunk` (the previous chunk's pending actions, (N, action_dim), index 0
        aligned with this chunk's first action) is given; `inference_delay` steps of it are followed exactly.
        """
        if not isinstance(images, Mapping):
            raise ValueError(f"images must map image keys {self.image_keys} to uint8 (H, W, 3) arrays")
        state = np.asarray(state, dtype=np.float64)
        if state.ndim != 1:
            raise ValueError(f"state must be a 1-D array of {self.state_dim} values; got shape {state.shape}")
        out = self.predict_chunks(
            {k: [v] for k, v in images.items()},
            state[None],
            [task],
            None if noise is None else _as_noise(noise, self.chunk_size, self.max_action_dim)[None],
            None if prev_chunk is None else [prev_chunk],
            inference_delay,
            execution_horizon,
        )
        return out[0]

    def predict_chunks(
        self,
        images: Mapping[str, Sequence[np.ndarray]],
        states: np.ndarray,
        tasks: Sequence[str],
        noise: np.ndarray | torch.Tensor | None = None,
        prev_chunks: Sequence[np.ndarray | None] | None = None,
        inference_delay: int = 0,
        execution_horizon: int | None = None,
    ) -> np.ndarray:
        """Batched variant: images[key] is a list of B frames, states (B, state_dim), B tasks -> (B, S, A)."""
        states = np.asarray(states, dtype=np.float64)
        batch = len(tasks)
        if states.ndim != 2 or states.shape != (batch, self.state_dim):
            raise ValueError(
                f"state must have {self.state_dim} values per observation (checkpoint feature "
                f"{STATE_KEY!r}); got shape {states.shape[1:] if states.ndim == 2 else states.shape}"
            )
        if not np.isfinite(states).all():
            raise ValueError(f"state contains NaN or inf: {states.tolist()}")
        self._check_image_keys(images, batch)
        if noise is not None:
            noise = torch.as_tensor(np.asarray(noise) if not isinstance(noise, torch.Tensor) else noise)
            want = (batch, self.chunk_size, self.max_action_dim)
            if tuple(noise.shape) != want:
                raise ValueError(
                    f"noise must have shape {want[1:]} per observation; got {tuple(noise.shape)}"
                )
        rtc = self._rtc_targets(prev_chunks, batch, inference_delay, execution_horizon)
        with torch.inference_mode(), self._threads():
            actions = self._run(images, states, list(tasks), noise, rtc)
        return actions.cpu().numpy()

    @contextlib.contextmanager
    def _threads(self):
        """Tiny (test) models run single-threaded on CPU: thread sync costs more than their matmuls."""
        if self.device.type != "cpu" or self._num_params > SMALL_MODEL_PARAMS or torch.get_num_threads() == 1:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    # ------------------------------------------------------------------------------------------ internals
    def _check_image_keys(self, images: Mapping[str, Sequence[np.ndarray]], batch: int) -> None:
        expected = self.image_keys
        missing = [k for k in expected if k not in images]
        extra = [k for k in images if k not in self.config.image_features]
        if missing or extra:
            raise ValueError(
                f"image keys do not match the checkpoint: expected {expected}; missing {missing}, "
                f"unknown {extra}"
            )
        for key in expected:
            if len(images[key]) != batch:
                raise ValueError(f"image {key!r}: got {len(images[key])} frames for {batch} observations")
            for frame in images[key]:
                check_image(key, frame)

    def _rtc_targets(self, prev_chunks, batch: int, delay: int, horizon: int | None):
        if prev_chunks is None or all(p is None for p in prev_chunks):
            return None
        if len(prev_chunks) != batch or any(p is None for p in prev_chunks):
            raise ValueError("prev_chunk must be given for every observation of the batch, or for none")
        if delay < 0:
            raise ValueError(f"inference_delay must be >= 0, got {delay}")
        targets = torch.zeros(batch, self.chunk_size, self.max_action_dim, device=self.device)
        shortest = self.chunk_size
        for b, prev in enumerate(prev_chunks):
            prev = np.asarray(prev, dtype=np.float32)
            if prev.ndim != 2 or prev.shape[1] != self.action_dim or not np.isfinite(prev).all():
                raise ValueError(
                    f"prev_chunk must be a finite (N, {self.action_dim}) array; got {prev.shape}"
                )
            n = min(len(prev), self.chunk_size)
            shortest = min(shortest, n)
            normalized = self.action_norm.normalize(torch.from_numpy(prev[:n]).to(self.device))
            targets[b, :n, : self.action_dim] = normalized
        rtc = self.config.rtc
        horizon = rtc.execution_horizon if horizon is None else int(horizon)
        horizon = min(horizon, shortest)  # never pull toward the zero padding after the pending actions
        weights = prefix_weights(delay, horizon, self.chunk_size, rtc.prefix_attention_schedule).to(
            self.device
        )
        return targets, weights, rtc.max_guidance_weight

    def _run(self, images, states: np.ndarray, tasks: list[str], noise, rtc) -> torch.Tensor:
        cfg, net, device = self.config, self.net, self.device
        batch = len(tasks)
        pixels = [
            images_to_model(list(images[k]), cfg.resize_imgs_with_padding, device) for k in self.image_keys
        ]
        n_cams = len(pixels)
        embs = net.embed_images(torch.cat(pixels, dim=0)).split(batch, dim=0) if n_cams else []
        img_embs = list(embs)
        img_masks = [torch.ones(batch, dtype=torch.bool, device=device) for _ in embs]
        for _ in range(cfg.empty_cameras):
            img_embs.append(self._empty_camera_embedding(pixels[-1].shape[-2:]).expand(batch, -1, -1))
            img_masks.append(torch.zeros(batch, dtype=torch.bool, device=device))
        tokens, token_mask = self.tokenizer(tasks, device)
        state = torch.from_numpy(states.astype(np.float32)).to(device)
        state = self.state_norm.normalize(state)
        state = torch.nn.functional.pad(state, (0, cfg.max_state_dim - cfg.state_dim))
        prefix, pad, flags = net.embed_prefix(img_embs, img_masks, tokens, token_mask, state)
        if not self._use_cuda_graph:  # (graphs want static shapes)
            # Tokens that are padding in every observation (language padded to max_length, prefix_length
            # padding, empty cameras) are masked for everyone and do not move positions: drop them.
            keep = pad.any(dim=0)
            if not bool(keep.all()):
                prefix, pad, flags = prefix[:, keep], pad[:, keep], flags[:, keep]
        cache = net.fill_cache(prefix, pad, flags)

        if noise is None:
            shape = (batch, cfg.chunk_size, cfg.max_action_dim)
            if self._noise_generator is None:
                x = torch.randn(shape, dtype=torch.float32, device=device)
            else:  # a CPU generator: the same draws on every device
                x = torch.randn(shape, dtype=torch.float32, generator=self._noise_generator).to(device)
            if self.noise_scale != 1.0:
                x = x * self.noise_scale
        else:
            x = noise.to(device=device, dtype=torch.float32).clone()
        if self._use_cuda_graph and rtc is None:
            x = self._graphed_denoise(x, cache)
        else:
            x = self._denoise(x, self.net.time_embeddings(self._times, batch, device), cache, rtc)
        actions = x[:, :, : cfg.action_dim]
        return self.action_norm.unnormalize(actions)

    @property
    def _times(self) -> list[float]:
        """Flow times of the Euler steps, 1 = noise: t_k = float32(1 - k / num_steps)."""
        dt = -1.0 / self.config.num_steps
        return [float(np.float32(1.0 + k * dt)) for k in range(self.config.num_steps)]

    def _denoise(
        self, x: torch.Tensor, time_embs: list[torch.Tensor], cache: PrefixCache, rtc
    ) -> torch.Tensor:
        dt = -1.0 / self.config.num_steps
        for t, t_emb in zip(self._times, time_embs, strict=True):
            v = self.net.velocity(x, t_emb, cache)
            if rtc is not None:
                v = guide_velocity(v, x, t, rtc[0], rtc[1], rtc[2])
            x = x + dt * v
        return x

    def _graphed_denoise(self, x: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """The denoising loop replayed from a CUDA graph captured once per (batch, prefix length)."""
        key = (x.shape[0], cache.prefix_len)
        try:
            if key not in self._graphs:
                self._graphs[key] = self._capture(x, cache)
            graph, static_x, static_cache, static_out = self._graphs[key]
            static_x.copy_(x)
            _copy_cache(static_cache, cache)
            graph.replay()
            return static_out.clone()
        except RuntimeError as exc:  # capture is an optimisation: never let it break inference
            warnings.warn(f"CUDA graph capture failed, denoising eagerly from now on: {exc}", stacklevel=2)
            self._use_cuda_graph = False
            self._graphs.clear()
            return self._denoise(x, self.net.time_embeddings(self._times, x.shape[0], x.device), cache, None)

    def _capture(self, x: torch.Tensor, cache: PrefixCache):
        static_x = x.clone()
        static_cache = _clone_cache(cache)
        time_embs = self.net.time_embeddings(self._times, x.shape[0], x.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph (kernel selection, allocator)
                self._denoise(static_x, time_embs, static_cache, None)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._denoise(static_x, time_embs, static_cache, None)
        return graph, static_x, static_cache, static_out

    def _empty_camera_embedding(self, size) -> torch.Tensor:
        """Connector output for an all -1 (padding) image; its tokens are masked out of attention."""
        key = tuple(size)
        if key not in self._empty_camera:
            blank = -torch.ones(1, 3, *key, device=self.device)
            self._empty_camera[key] = self.net.embed_images(blank)
        return self._empty_camera[key]


# ---------------------------------------------------------------------------------------------- helpers
def _as_noise(noise, chunk: int, width: int) -> np.ndarray:
    arr = noise.detach().cpu().numpy() if isinstance(noise, torch.Tensor) else np.asarray(noise)
    if arr.shape == (1, chunk, width):
        arr = arr[0]
    if arr.shape != (chunk, width):
        raise ValueError(
            f"noise must have shape ({chunk}, {width}) (chunk_size, max_action_dim); got {arr.shape}"
        )
    return arr.astype(np.float32)


def _clone_cache(cache: PrefixCache) -> PrefixCache:
    return PrefixCache(
        self_kv={i: (k.clone(), v.clone()) for i, (k, v) in cache.self_kv.items()},
        cross_kv={i: (k.clone(), v.clone()) for i, (k, v) in cache.cross_kv.items()},
        self_bias=cache.self_bias.clone(),
        cross_bias=cache.cross_bias.clone(),
        self_rope=tuple(t.clone() for t in cache.self_rope),
        cross_rope=tuple(t.clone() for t in cache.cross_rope),
        prefix_len=cache.prefix_len,
    )


def _copy_cache(dst: PrefixCache, src: PrefixCache) -> None:
    for name in ("self_kv", "cross_kv"):
        for i, (k, v) in getattr(src, name).items():
            getattr(dst, name)[i][0].copy_(k)
            getattr(dst, name)[i][1].copy_(v)
    dst.self_bias.copy_(src.self_bias)
    dst.cross_bias.copy_(src.cross_bias)
    for d, s_ in zip(dst.self_rope + dst.cross_rope, src.self_rope + src.cross_rope, strict=True):
        d.copy_(s_)


def _image_special_ids(tokenizer) -> tuple[list[int], list[int]]:
    def token_id(attr: str, text: str) -> int:
        value = getattr(tokenizer, f"{attr}_id", None)
        if value is None:
            value = tokenizer.convert_tokens_to_ids(text)
        if value is None or value == tokenizer.unk_token_id:
            raise ckpt_io.CheckpointError(f"add_image_special_tokens needs the tokenizer token {text!r}")
        return int(value)

    fake = token_id("fake_image_token", "<fake_token_around_image>")
    glob = token_id("global_image_token", "<global-img>")
    return [fake, glob], [fake]


def _load_weights(
    net: SmolVLANet, reader: ckpt_io.SafetensorsReader, layout: DtypeLayout, device: torch.device
) -> LoadReport:
    """Fill the meta-device network layer by layer, fusing each layer as it arrives (peak memory: the
    weights plus one layer)."""
    unused = net.drop_unused()
    expected = dict(net.named_parameters())
    expected.update(dict(net.named_buffers()))
    by_name = {}
    report = LoadReport()
    for key in reader.names():
        name = key.removeprefix("model.")
        if key.startswith("model.") and name in expected:
            by_name[name] = key
        elif name.startswith(IGNORED_KEYS + unused) or key.startswith(LEGACY_NORMALIZER_KEYS):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    missing = sorted(set(expected) - set(by_name))
    if missing:
        shown = ", ".join(f"model.{m}" for m in missing[:12])
        raise ckpt_io.CheckpointError(
            f"{reader.path} lacks {len(missing)} tensors the model needs (e.g. {shown}); is it a SmolVLA "
            "checkpoint for this backbone (num_vlm_layers, vlm_model_name)?"
        )
    wrong = [
        f"{by_name[n]}: checkpoint {reader.shape(by_name[n])} vs model {tuple(expected[n].shape)}"
        for n in by_name
        if reader.shape(by_name[n]) != tuple(expected[n].shape)
    ]
    if wrong:
        raise ckpt_io.CheckpointError(
            f"{len(wrong)} tensors of {reader.path} do not fit the architecture built from the backbone "
            f"config (wrong vlm_model_name/vlm_path?): " + "; ".join(wrong[:8])
        )
    if report.unexpected:
        warnings.warn(
            f"{len(report.unexpected)} unexpected tensors in {reader.path} were ignored: "
            f"{report.unexpected[:10]}",
            stacklevel=3,
        )
    net.num_parameters = sum(p.numel() for p in net.parameters())
    net.pack_linears = net.num_parameters > SMALL_MODEL_PARAMS
    groups: dict[str, list[str]] = {}
    for name in by_name:
        groups.setdefault(net.load_group(name), []).append(name)
    for group, names in groups.items():
        state = {}
        for key, tensor in reader.read([by_name[n] for n in names]):
            name = key.removeprefix("model.")
            state[name] = tensor.to(device=device, dtype=net.param_dtype(name, layout))
        net.load_state_dict(state, strict=False, assign=True)
        report.loaded += len(state)
        state.clear()  # the modules hold the tensors now: fusing frees each original as it goes
        net.prepare_group(group)
    left = [n for n, p in net.named_parameters() if p.is_meta]
    if left:
        raise ckpt_io.CheckpointError(f"{reader.path}: tensors were not loaded: {left[:8]}")
    release_freed_memory()
    log.info("loaded %d tensors from %s (ignored %d)", report.loaded, reader.path, len(report.ignored))
    return report
