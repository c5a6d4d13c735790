"""Batched augmentation on the training device, every random choice drawn per sample.

Images arrive as the cache holds them, uint8 (B, 3, h, w), and leave as the model takes them,
float32 (B, 3, H, W) normalized, with (B, K) soft targets. Ops do not touch pixels one by one: each
adds to a per-sample *pending* map, applied once at the end. This fusion is what makes the kit >= 10x
faster than per-image PIL transforms on 2 CPU cores (bench/pipeline.py):
  geometry  one 3x3 inverse map per sample (flips, shifts, crops, rotation, shear and the resize to
            `size`), so every image is resampled once: nearest (torchvision's default for rotations
            and policies) or bilinear when a resize or a resized crop is involved;
  colour    one affine colour map per sample (brightness, contrast, saturation, hue, grayscale,
            invert and the normalization), applied with one batched matmul before the resampling.
Non-linear pixel ops (posterize, solarize, equalize, autocontrast, sharpness, AugMix) rewrite the
uint8 pixels of just the samples that drew them. Erasing, noise and mixing act last, on the output.
The single ops live in kitlib.augment.ops, the automated policies in kitlib.augment.policies (both re-exported
here), and the Batch they act on, with its one resampling, in kitlib.augment.batch.

Where the result differs from torchvision applying the same ops image by image (each checked against
torchvision in tests/test_augment.py, with the tolerance stated there):
  - the geometric ops of a sample compose into one resampling (torchvision resamples after each), so
    a chain of nearest-neighbour ops may land one pixel apart; single ops are exact, except at exact
    rounding ties, which torchvision's own float error decides;
  - colour comes before geometry, so what a rotation or shift uncovers is always black (torchvision's
    default fill), even when Invert or Contrast comes later; contrast blends towards the mean of the
    image without the uncovered area;
  - colour ops clamp once, at the end, not after each op: ColorJitter(0.4, 0.4, 0.4) in random order
    differs by ~1.6 levels of 255 on average (< 5 for 95% of images); extreme chains (brightness x1.8
    then contrast x0.5) differ by tens of levels where torchvision clipped;
  - hue turns colours about the grey axis instead of an HSV round trip (mean error 3-8 levels of 255
    for |hue| <= 0.1);
  - ops that look at the whole picture (equalize, autocontrast, sharpness, AugMix) first apply the
    pending geometry of the samples that drew them, so they see what torchvision's would.
Linear colour and pixel ops otherwise match to torchvision's uint8 truncation (at most 2 levels).

Strength s in [0, 1] (kitlib.augment.ops and kitlib.augment.policies say how each op reads it): probabilities become p*s and
magnitudes move towards the identity by the factor s; at s=0 nothing fires and training batches are
the eval transform's (to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from kitlib.augment.batch import Batch, apply_colour
from kitlib.errors import KitError
from kitlib.figures import save_figure
from kitlib.augment.ops import (ColorJitter, CutMix, Erase, Flip, GaussianNoise, Grayscale, MixUp,  # noqa: F401
                        PadCrop, PoissonNoise, ResizedCrop, Rotate)
from kitlib.augment.policies import AugMix, AutoAugment, RandAugment, TrivialAugment  # noqa: F401 (re-exported)
from kitlib.progress import progress_bar


@dataclass(frozen=True)
class AugmentedBatch:
    """A batch ready for the model and the loss."""

    images: torch.Tensor
    """(B, 3, H, W) float32, normalized with mean/std, on the input's device."""
    targets: torch.Tensor
    """(B, K) float32 soft targets, each row sums to 1 (one-hot unless mixed)."""
    masks: torch.Tensor | None
    """(B, 1, H, W) uint8, aligned with `images`; None when no masks came in."""


# --- presets and transforms ------------------------------------------------------------------------

PRESETS: dict[str, list] = {
    "none": [],
    "light": [Flip(), PadCrop(0.125)],
    "medium": [Flip(), PadCrop(0.125), Rotate(15, p=0.5), ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8), Erase(p=0.25)],
    "strong": [RandAugment(num_ops=2, magnitude=9), Flip(), ResizedCrop(scale=(0.25, 1.0)), Erase(p=0.25),
               MixUp(alpha=0.2, p=0.3), CutMix(alpha=1.0, p=0.3)],
    "auto": [TrivialAugment(), Flip(), PadCrop(0.125)],
}


ADAPTIVE = "adaptive"
"""TrainConfig.augment's default: 'light' or 'medium', chosen by the epochs a run will see
(kitlib.train.recipe.adaptive_augment); until chosen, and to pick the TTA, it stands for 'light'."""


def resolve_ops(ops: str | list) -> tuple:
    """A preset name (or ADAPTIVE: light's ops) or a list of ops -> a checked tuple of ops ('pixels' ops
    before 'final' ops)."""
    if ops == ADAPTIVE:
        ops = "light"
    if isinstance(ops, str):
        if ops not in PRESETS:
            raise KitError(f"augmentation preset {ops!r}: choose one of {ADAPTIVE}, {', '.join(PRESETS)}, or pass a "
                           "list of ops.")
        ops = PRESETS[ops]
    ops = tuple(ops)
    for op in ops:
        if getattr(op, "stage", None) not in ("pixels", "final") or not callable(op):
            raise KitError(f"{op!r} is not an augmentation op: use the ops of kitlib.augment / kitlib.augment.policies.")
    stages = [op.stage for op in ops]
    if "final" in stages and "pixels" in stages[stages.index("final"):]:
        raise KitError(f"ops {[type(op).__name__ for op in ops]}: erasing, noise and mixing act on the final "
                       "images, so put them after the geometric, colour and policy ops.")
    return ops


def matching_tta(ops: str | list, shifts: bool = True) -> str:
    """The test-time views that training taught the model (kitlib.predict's names): 'flips', 'hflip' or 'none',
    with '+shifts' ('shifts' alone) when it also trained on shifted or cropped images and `shifts` is True.

    Averaging over mirrored copies only helps when training showed mirrored images under the same
    label; for digits or text trained without flips it would hurt. Shifted copies (a pixel or two,
    kitlib.models.infer.SHIFT) are views a model trained with PadCrop or ResizedCrop has seen; a tile
    model (`shifts=False`) already averages a grid of positions.
    """
    resolved = resolve_ops(ops)
    flips = {op.vertical for op in resolved if isinstance(op, Flip) and op.p > 0}
    name = "flips" if flips == {False, True} else "hflip" if flips == {False} else "none"
    if not (shifts and any(isinstance(op, (PadCrop, ResizedCrop)) and op.p > 0 for op in resolved)):
        return name
    return "shifts" if name == "none" else f"{name}+shifts"


def _check_stats(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise KitError(f"mean={mean}, std={std}: give three channel means and three positive stds (0..1 units).")
    return mean, std


def _check_images(images: torch.Tensor, masks: torch.Tensor | None = None) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise KitError(f"images: expected (B, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}.")
    if masks is not None and (masks.dtype != torch.uint8 or masks.shape != (len(images), 1) + images.shape[2:]):
        raise KitError(f"masks: expected {(len(images), 1) + tuple(images.shape[2:])} uint8 beside the images, "
                       f"got {tuple(masks.shape)} {masks.dtype}.")


def _shrink(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased uint8 resize to `size` when the images are larger on either side (else unchanged)."""
    h, w = images.shape[-2:]
    if (h, w) == size or (h <= size[0] and w <= size[1]):
        return images
    return TF.resize(images, list(size), antialias=True)


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation of whole batches; build it with `train_transform`."""

    ops: tuple
    """The ops, applied in order (see resolve_ops)."""
    size: tuple[int, int]
    """(H, W) of the model's input."""
    mean: tuple[float, float, float]
    """Channel means in 0..1 units, for the normalization."""
    std: tuple[float, float, float]
    """Channel stds in 0..1 units."""
    num_classes: int
    """K, the width of the targets."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None, *,
                 strength: float = 1.0, generator: torch.Generator | None = None) -> AugmentedBatch:
        """(B, 3, h, w) uint8 images, (B,) int64 labels, optional (B, 1, h, w) uint8 masks -> AugmentedBatch.

        `strength` in [0, 1] scales every op (module docstring); `generator` is the only source of
        randomness (None: torch's global generator of the images' device), and must live on their device.
        """
        _check_images(images, masks)
        if not 0.0 <= strength <= 1.0:
            raise KitError(f"strength={strength}: give a value in [0, 1] (see strength_at).")
        if generator is not None and generator.device.type != images.device.type:
            raise KitError(f"the generator is on {generator.device} but the images on {images.device}: "
                           "create it with torch.Generator(device=images.device).")
        if masks is not None and not all(getattr(op, "keeps_masks", True) for op in self.ops):
            raise KitError("AugMix blends differently warped copies, so masks cannot follow it: drop it or the masks.")
        labels = torch.as_tensor(labels, device=images.device).long()
        if labels.shape != (len(images),) or (
                len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes):
            raise KitError(f"labels: expected {len(images)} class indices in [0, {self.num_classes}).")
        with torch.no_grad():
            batch = Batch(_shrink(images, self.size), _shrink_masks(masks, self.size), self.size, generator)
            for op in self.ops:
                if op.stage == "pixels":
                    op(batch, strength)
            batch.render(self.mean, self.std)
            batch.targets = F.one_hot(labels, self.num_classes).float()
            for op in self.ops:
                if op.stage == "final":
                    op(batch, strength)
        return AugmentedBatch(batch.images, batch.targets, batch.masks)


def _shrink_masks(masks: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    if masks is None or masks.shape[-2:] == size or (masks.shape[-2] <= size[0] and masks.shape[-1] <= size[1]):
        return masks
    return TF.resize(masks, list(size), interpolation=TF.InterpolationMode.NEAREST)


def train_transform(ops: str | list = "medium", *, size: tuple[int, int], mean, std,
                    num_classes: int) -> TrainTransform:
    """The training transform: a preset name ('none', 'light', 'medium', 'strong', 'auto') or a list of ops."""
    mean, std = _check_stats(mean, std)
    return TrainTransform(resolve_ops(ops), tuple(size), mean, std, int(num_classes))


@dataclass(frozen=True)
class EvalTransform:
    """Resize (antialiased, only when the size differs) and normalize: it has no random part to misuse."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) uint8 -> (B, 3, H, W) float32 normalized."""
        _check_images(images)
        with torch.no_grad():
            images = _shrink(images, self.size)  # the same uint8 downscale as training
            if images.shape[-2:] != self.size:  # smaller: bilinear upscale, as training's resampling
                images = F.interpolate(images.float(), self.size, mode="bilinear", align_corners=False, antialias=True)
            scale = torch.tensor([1 / (255 * s) for s in self.std], device=images.device)
            colour = torch.cat([torch.diag(scale), torch.tensor([[-m / s] for m, s in zip(self.mean, self.std)],
                                                                device=images.device)], 1)
            lo = [-m / s for m, s in zip(self.mean, self.std)]
            hi = [(1 - m) / s for m, s in zip(self.mean, self.std)]
            return apply_colour(images, colour.expand(len(images), 3, 4), lo, hi)


def eval_transform(*, size: tuple[int, int], mean, std) -> EvalTransform:
    """The validation / test transform: resize + normalize, nothing random."""
    mean, std = _check_stats(mean, std)
    return EvalTransform(tuple(size), mean, std)


def mask_channel(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) uint8 masks -> float32 (B, 1, H, W) in {-1, 1}: the extra input channel of masks='channel'."""
    return (masks > 0).float() * 2 - 1


@dataclass(frozen=True)
class MaskEvalTransform:
    """The eval transform of a model that also sees the mask: uint8 (B, 4, h, w) -> float32 (B, 4, H, W).

    Channels 0-2 go through the image's EvalTransform; channel 3, the mask, is resized with nearest
    neighbours (labels stay labels) and becomes mask_channel's {-1, 1}.
    """

    images: EvalTransform

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) uint8 image + mask -> (B, 4, H, W) float32."""
        masks = x[:, 3:]
        if masks.shape[-2:] != self.images.size:
            masks = F.interpolate(masks.float(), self.images.size, mode="nearest")
        return torch.cat([self.images(x[:, :3].contiguous()), mask_channel(masks)], 1)


# --- strength schedules, statistics, preview -------------------------------------------------------

SCHEDULES = {
    "constant": {"value": 1.0},
    "ramp": {"start": 0.0, "end": 1.0, "until": 0.5},
    "phases": {"phases": ((0.0, 0.3), (0.3, 1.0))},
}


def strength_at(fraction_done: float, schedule: str = "ramp", **options) -> float:
    """Augmentation strength in [0, 1] after `fraction_done` (0..1) of training.

    'constant': `value`. 'ramp': linear from `start` to `end` over the first `until` of training,
    then `end`. 'phases': `phases` = ((from_fraction, strength), ...), e.g. ((0, 0.3), (0.3, 1.0)):
    light while a new head trains, full strength while fine-tuning.
    """
    if schedule not in SCHEDULES:
        raise KitError(f"strength schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}.")
    unknown = set(options) - set(SCHEDULES[schedule])
    if unknown:
        raise KitError(f"strength schedule {schedule!r} has no option {', '.join(sorted(unknown))}: "
                       f"its options are {', '.join(SCHEDULES[schedule])}.")
    if not -1e-6 <= fraction_done <= 1 + 1e-6:
        raise KitError(f"fraction_done={fraction_done}: give the fraction of training done, in [0, 1].")
    o = {**SCHEDULES[schedule], **options}
    f = min(max(float(fraction_done), 0.0), 1.0)
    if schedule == "constant":
        value = o["value"]
    elif schedule == "ramp":
        value = o["end"] if f >= o["until"] else o["start"] + (o["end"] - o["start"]) * f / o["until"]
    else:
        value = [s for start, s in sorted(o["phases"]) if start <= f][-1] if f >= min(o["phases"])[0] else 0.0
    return min(max(float(value), 0.0), 1.0)


def image_stats(images_u8: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std in 0..1 units of a uint8 (N, 3, H, W) data set, from exact histograms."""
    _check_images(images_u8)
    n, _, h, w = images_u8.shape
    counts = torch.zeros(3, 256, dtype=torch.float64, device=images_u8.device)
    chunk = max(1, 2 ** 22 // (h * w))  # ~4 M pixels a step: a small uint8 copy, never a float one
    for start in progress_bar(range(0, n, chunk), desc="image stats", leave=False, disable=n * h * w < 2 ** 28):
        part = images_u8[start:start + chunk].transpose(0, 1).reshape(3, -1)
        for c in range(3):
            counts[c] += torch.bincount(part[c], minlength=256).double()
    values = torch.arange(256, dtype=torch.float64, device=counts.device) / 255
    mean = (counts * values).sum(1) / counts.sum(1)
    std = ((counts * values ** 2).sum(1) / counts.sum(1) - mean ** 2).clamp(min=0).sqrt()
    if float(std.min()) == 0.0:
        raise KitError("image_stats: a channel has the same value in every pixel; check the images (all blank?).")
    return tuple(mean.tolist()), tuple(std.tolist())


def preview(images_u8, labels, ops="medium", *, strength: float, path, mean, std, seed: int = 0,
            masks=None) -> Path:
    """Save a PNG grid of up to 16 images: each row of originals above the same images augmented."""
    from matplotlib.figure import Figure  # no pyplot: nothing global, works headless

    images_u8 = images_u8[:16]
    n = len(images_u8)
    labels = torch.as_tensor(labels[:n], device=images_u8.device).long()
    masks = None if masks is None else masks[:n]
    transform = train_transform(ops, size=tuple(images_u8.shape[-2:]), mean=mean, std=std,
                                num_classes=int(labels.max()) + 1)
    generator = torch.Generator(device=images_u8.device).manual_seed(seed)
    out = transform(images_u8, labels, masks, strength=strength, generator=generator)
    m, s = (torch.tensor(v, device=out.images.device).view(1, 3, 1, 1) for v in (mean, std))
    after = (out.images * s + m).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    before = images_u8.permute(0, 2, 3, 1).cpu().numpy()
    cols = min(n, 8)
    rows = 2 * math.ceil(n / cols)
    fig = Figure(figsize=(1.7 * cols, 1.9 * rows))
    name = ops if isinstance(ops, str) else "custom"
    fig.suptitle(f"augmentation {name!r} at strength {strength:.2f} (seed {seed}): originals above, augmented below")
    for i in range(n):
        top = fig.add_subplot(rows, cols, (i // cols) * 2 * cols + i % cols + 1)
        bottom = fig.add_subplot(rows, cols, (i // cols) * 2 * cols + cols + i % cols + 1)
        top.imshow(before[i])
        bottom.imshow(after[i])
        if masks is not None:  # tint the masked pixels only
            for ax, mask in ((top, masks[i, 0]), (bottom, out.masks[i, 0])):
                ax.imshow(np.ma.masked_equal(mask.cpu().numpy(), 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        weights, classes = out.targets[i].topk(min(2, out.targets.shape[1]))
        top.set_title(f"class {int(labels[i])}", fontsize=8)
        mix = " + ".join(f"{int(c)}:{float(w):.2f}" for w, c in zip(weights, classes) if w > 0.005)
        bottom.set_title(mix, fontsize=8)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path, dpi=100)
