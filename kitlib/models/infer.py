"""Inference: a model's class probabilities over uint8 images, through its eval transform, averaged over views.

    views = tta_views("hflip")                                  # [(scale, ((hflip, vflip, shift), ...)), ...]
    probs = probabilities(model, batches, transform, views=views, device=device, precision="fp32")

Validation during training and the prediction of a test set both go through `probabilities`: the
same batching, precision and softmax, so a run's validation scores are what its predictions get.
Test-time augmentation (TTA) averages the softmax of each view: the image, flipped, shifted by a pixel
or two, and/or resized.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from kitlib.errors import KitError
from kitlib.runtime import autocast

# TTA name -> the views averaged, each (horizontal flip, vertical flip, shift): "flips" is the group the two
# flips generate; a "+shifts" mode adds each view moved diagonally by -1 and +1 steps of SHIFT
TTA_MODES = {
    "none": ((False, False, 0),),
    "hflip": ((False, False, 0), (True, False, 0)),
    "flips": ((False, False, 0), (True, False, 0), (False, True, 0), (True, True, 0)),
}
TTA_MODES.update({("shifts" if name == "none" else f"{name}+shifts"):
                  tuple((h, v, s) for s in (0, -1, 1) for h, v, _ in views) for name, views in list(TTA_MODES.items())})
NO_TTA = [(1.0, TTA_MODES["none"])]
SHIFT = 1 / 32
"""A shifted view moves the image by this fraction of its shorter side, down and right or up and left (at
least 1 px: 1 px at 32 px, 2 px at 64; the border reflected), as the fast CIFAR-10 training records' TTA
does. Measured on `all`'s models (README: Results): +0.55 points on CIFAR-10 at 600 s; on 64 px rehearsal
competitions +0.2 to +2.8 of macro-F1 in four runs, -0.1 in a fifth."""


def tta_views(tta: str = "hflip", scales: Sequence[float] = (1.0,)) -> list[tuple[float, tuple]]:
    """The TTA views as (scale, ((hflip, vflip, shift), ...)) per scale; KitError for unknown names or scales."""
    if tta not in TTA_MODES:
        raise KitError(f"tta={tta!r}: choose one of {', '.join(TTA_MODES)}.")
    scales = [float(s) for s in ((scales,) if isinstance(scales, (int, float)) else scales)]
    if not scales or not all(0.25 <= s <= 4 for s in scales):
        raise KitError(f"scales={scales}: give input-size factors between 0.25 and 4, e.g. (0.875, 1.0, 1.125).")
    return [(s, TTA_MODES[tta]) for s in scales]


def view_count(views) -> int:
    """How many forward passes of each image the views take."""
    return sum(len(each) for _, each in views)


def _view(x: torch.Tensor, scale: float, views: tuple, channels_last: bool = True) -> torch.Tensor:
    """(B, 3, H, W) normalized -> (B * len(views), 3, H', W'): resized by `scale`, each view stacked."""
    if scale != 1.0:  # the nets pool globally, so any input size works
        size = (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale)))
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=scale < 1)
    step = max(1, round(SHIFT * min(x.shape[2:])))
    out = [_shift(x.flip([d for d, on in ((3, h), (2, v)) if on]) if h or v else x, s * step) for h, v, s in views]
    x = torch.cat(out) if len(out) > 1 else out[0]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _shift(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, C, H, W) moved by `d` px down and right (up and left when negative), the border reflected."""
    if d == 0:
        return x
    p = abs(d)
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    return padded[:, :, p - d:p - d + x.shape[2], p - d:p - d + x.shape[3]]


@torch.no_grad()
def probabilities(model: torch.nn.Module, batches: Iterable[torch.Tensor], transform, *, views=NO_TTA,
                  device: torch.device, precision: str = "fp32", channels_last: bool = True) -> torch.Tensor:
    """(N, K) float32 softmax probabilities on the CPU, averaged over `views`, of every image of `batches`.

    `batches`: uint8 (B, 3, h, w) tensors, in order (N images in all); `transform`: the eval transform
    (uint8 -> normalized float32 (B, 3, H, W)); `views`: from tta_views (default: the image alone).
    The model is put in eval mode; it must already be on `device`.
    """
    model.eval()
    passes = view_count(views)
    out = []
    for batch in batches:
        x = transform(batch.to(device, non_blocking=True))  # (B, 3, H, W) float32
        total = 0.0
        for scale, each in views:
            with autocast(device, precision):
                logits = model(_view(x, scale, each, channels_last))  # (B * len(each), K)
            total = total + logits.float().softmax(1).view(len(each), len(x), -1).sum(0)
        out.append((total / passes).cpu())
    if not out:
        raise KitError("no images to predict: the batches were empty.")
    return torch.cat(out)
