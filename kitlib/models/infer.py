"""Inference: a model's class probabilities over uint8 images, through its eval transform, averaged over views.

    views = tta_views("hflip")                                  # [(scale, ((hflip, vflip), ...)), ...]
    probs = probabilities(model, batches, transform, views=views, device=device, precision="fp32")

Validation during training and the prediction of a test set both go through `probabilities`: the
same batching, precision and softmax, so a run's validation scores are what its predictions get.
Test-time augmentation (TTA) averages the softmax of each view: the image, flipped, and/or resized.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from kitlib.errors import KitError
from kitlib.runtime import autocast

# TTA name -> the (horizontal, vertical) flips averaged; "flips" is the group the two flips generate
TTA_MODES = {
    "none": ((False, False),),
    "hflip": ((False, False), (True, False)),
    "flips": ((False, False), (True, False), (False, True), (True, True)),
}
NO_TTA = [(1.0, TTA_MODES["none"])]


def tta_views(tta: str = "hflip", scales: Sequence[float] = (1.0,)) -> list[tuple[float, tuple]]:
    """The TTA views as (scale, ((hflip, vflip), ...)) per scale; KitError for unknown names or scales."""
    if tta not in TTA_MODES:
        raise KitError(f"tta={tta!r}: choose one of {', '.join(TTA_MODES)}.")
    scales = [float(s) for s in ((scales,) if isinstance(scales, (int, float)) else scales)]
    if not scales or not all(0.25 <= s <= 4 for s in scales):
        raise KitError(f"scales={scales}: give input-size factors between 0.25 and 4, e.g. (0.875, 1.0, 1.125).")
    return [(s, TTA_MODES[tta]) for s in scales]


def view_count(views) -> int:
    """How many forward passes of each image the views take."""
    return sum(len(flips) for _, flips in views)


def _view(x: torch.Tensor, scale: float, flips: tuple, channels_last: bool = True) -> torch.Tensor:
    """(B, 3, H, W) normalized -> (B * len(flips), 3, H', W'): resized by `scale`, each flip stacked."""
    if scale != 1.0:  # the nets pool globally, so any input size works
        size = (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale)))
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=scale < 1)
    out = [x.flip([d for d, on in ((3, h), (2, v)) if on]) if h or v else x for h, v in flips]
    x = torch.cat(out) if len(out) > 1 else x
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


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
        for scale, flips in views:
            with autocast(device, precision):
                logits = model(_view(x, scale, flips, channels_last))  # (B * len(flips), K)
            total = total + logits.float().softmax(1).view(len(flips), len(x), -1).sum(0)
        out.append((total / passes).cpu())
    if not out:
        raise KitError("no images to predict: the batches were empty.")
    return torch.cat(out)
