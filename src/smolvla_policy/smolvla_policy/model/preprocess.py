"""Input and output processing identical to LeRobot 0.4.4's SmolVLA processor pipeline."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812


def resize_with_pad(img: torch.Tensor, width: int, height: int, pad_value: float = 0.0) -> torch.Tensor:
    """Keep the aspect ratio, bilinear without antialiasing, pad at the left and top. img: (B, C, H, W)."""
    cur_h, cur_w = img.shape[-2:]
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    out = F.interpolate(img, size=(new_h, new_w), mode="bilinear", align_corners=False)
    pad_h, pad_w = max(0, int(height - new_h)), max(0, int(width - new_w))
    return F.pad(out, (pad_w, 0, pad_h, 0), value=pad_value)


def check_image(key: str, image: np.ndarray) -> np.ndarray:
    """An RGB uint8 H x W x 3 array, or a clear error naming the key."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image {key!r} must be uint8 RGB (H, W, 3); got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {key!r} must have shape (H, W, 3); got {image.shape}")
    return image


def images_to_model(
    images: list[np.ndarray], size: tuple[int, int] | None, device: torch.device
) -> torch.Tensor:
    """uint8 HWC frames (one camera, one per batch item) -> (B, 3, h, w) float32 in [-1, 1]."""
    out = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
        x = x.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        if size is not None:
            x = resize_with_pad(x, size[0], size[1], pad_value=0.0)
        out.append(x)
    if len({tuple(x.shape) for x in out}) != 1:
        raise ValueError("images of one camera must give the same shape within a batch")
    return torch.cat(out, 0) * 2.0 - 1.0


class Normalizer:
    """LeRobot's (un)normaliser of one feature: MEAN_STD, MIN_MAX, QUANTILES, QUANTILE10 or IDENTITY."""

    def __init__(self, feature: str, mode: str, stats: dict[str, torch.Tensor] | None, eps: float):
        self.feature, self.mode, self.eps = feature, mode.upper(), eps
        needed = {
            "IDENTITY": (),
            "MEAN_STD": ("mean", "std"),
            "MIN_MAX": ("min", "max"),
            "QUANTILES": ("q01", "q99"),
            "QUANTILE10": ("q10", "q90"),
        }
        if self.mode not in needed:
            raise ValueError(f"unsupported normalisation mode {mode!r} for {feature!r}")
        stats = stats or {}
        missing = [s for s in needed[self.mode] if s not in stats]
        if missing:
            raise ValueError(
                f"{self.mode} normalisation of {feature!r} needs stats {missing}; the checkpoint has "
                f"{sorted(stats)} (policy_preprocessor/postprocessor state files)"
            )
        self.stats = {k: stats[k].to(torch.float32) for k in needed[self.mode]}

    def to(self, device: torch.device) -> Normalizer:
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        return self

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo_key, hi_key = {
            "MIN_MAX": ("min", "max"),
            "QUANTILES": ("q01", "q99"),
            "QUANTILE10": ("q10", "q90"),
        }[self.mode]
        lo, hi = self.stats[lo_key], self.stats[hi_key]
        rng = hi - lo
        return lo, torch.where(rng == 0, torch.full_like(rng, self.eps), rng)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            return (x - self.stats["mean"]) / (self.stats["std"] + self.eps)
        lo, rng = self._bounds()
        return 2 * (x - lo) / rng - 1

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            return x * self.stats["std"] + self.stats["mean"]
        lo, rng = self._bounds()
        if self.mode == "MIN_MAX":
            return (x + 1) / 2 * rng + lo
        return (x + 1.0) * rng / 2.0 + lo


class Tokenizer:
    """Task text -> (token ids, attention mask), as LeRobot's newline + tokenizer processor steps."""

    def __init__(
        self, tokenizer, max_length: int, padding: str, padding_side: str = "right", truncation: bool = True
    ):
        self.tokenizer = tokenizer
        self.max_length, self.padding, self.padding_side, self.truncation = (
            max_length,
            padding,
            padding_side,
            truncation,
        )

    def __call__(self, tasks: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        for task in tasks:
            if not isinstance(task, str):
                raise ValueError(f"task must be a string, got {type(task).__name__}")
        texts = [t if t.endswith("\n") else t + "\n" for t in tasks]
        enc = self.tokenizer(
            texts,
            max_length=self.max_length,
            truncation=self.truncation,
            padding=self.padding,
            padding_side=self.padding_side,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device=device, dtype=torch.bool)
