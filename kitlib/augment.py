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
The ops themselves live in kitlib.policies and are re-exported here.

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

Strength s in [0, 1] (kitlib.policies says how each op reads it): probabilities become p*s and
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
from tqdm.auto import tqdm

from kitlib.errors import KitError
from kitlib.policies import (GRAY, AugMix, AutoAugment, ColorJitter, CutMix, Erase, Flip,  # noqa: F401
                             GaussianNoise, Grayscale, MixUp, PadCrop, PoissonNoise, RandAugment, ResizedCrop,
                             Rotate, TrivialAugment, gain_map, hue_map, saturation_map)


@dataclass(frozen=True)
class AugmentedBatch:
    """A batch ready for the model and the loss."""

    images: torch.Tensor
    """(B, 3, H, W) float32, normalized with mean/std, on the input's device."""
    targets: torch.Tensor
    """(B, K) float32 soft targets, each row sums to 1 (one-hot unless mixed)."""
    masks: torch.Tensor | None
    """(B, 1, H, W) uint8, aligned with `images`; None when no masks came in."""


class Batch:
    """What ops act on: uint8 pixels plus each sample's pending geometry and colour.

    `geometry` (B, 3, 3) maps output pixels to input pixels (centred coordinates, in pixels of the
    output frame `size`, so magnitudes in pixels mean pixels of the model's input); `colour`
    (B, 4, 4) is an affine map of RGB in 0..255. Per-sample parameters are (B,) tensors, and a
    sample whose value is the identity (angle 0, factor 1, False) is left as it is. After `render`,
    `images`, `targets` and `masks` hold the output, which the 'final' ops edit in place.
    """

    def __init__(self, pixels, masks, size, generator):
        n, self.device = len(pixels), pixels.device
        self.pixels, self.masks, self.size, self.generator = pixels, masks, tuple(size), generator
        self.geometry = torch.eye(3, device=self.device).expand(n, 3, 3).clone()
        self.colour = torch.eye(4, device=self.device).expand(n, 4, 4).clone()
        self.bilinear = False
        self.images = self.targets = None  # set by render(), then changed by the final ops
        self.mean = self.std = None  # the normalization, set by render() for the final ops
        self._owned, self._means = False, None  # pixels copied yet; (B, 3) channel means

    def __len__(self) -> int:
        return len(self.pixels)

    # randomness: only from `generator`, created on its device
    def rand(self, *shape) -> torch.Tensor:
        """Uniform [0, 1) numbers, one per sample unless `shape` is given."""
        return torch.rand(shape or (len(self),), generator=self.generator, device=self.device)

    def coin(self, p: float) -> torch.Tensor:
        """(B,) bool, each True with probability p."""
        return self.rand() < p

    def uniform(self, low, high) -> torch.Tensor:
        """(B,) uniform in [low, high)."""
        return low + (high - low) * self.rand()

    def randint(self, high: int) -> torch.Tensor:
        """(B,) int64 uniform in [0, high)."""
        return torch.randint(high, (len(self),), generator=self.generator, device=self.device)

    # geometry: each call composes one inverse map after the pending ones
    def warp(self, a, b, c, d, tx, ty) -> None:
        """Compose the inverse map [[a, b, tx], [c, d, ty]] (output px -> input px, per sample)."""
        a, b, c, d, tx, ty = (torch.as_tensor(v, dtype=torch.float32, device=self.device).expand(len(self))
                              for v in (a, b, c, d, tx, ty))
        zero, one = torch.zeros_like(a), torch.ones_like(a)
        self.geometry = self.geometry @ torch.stack([a, b, tx, c, d, ty, zero, zero, one], 1).view(-1, 3, 3)

    def flip(self, horizontal: torch.Tensor | None = None, vertical: torch.Tensor | None = None) -> None:
        """Mirror the samples where `horizontal` (left-right) / `vertical` (up-down) is True."""
        sx = 1.0 - 2.0 * horizontal.float() if horizontal is not None else torch.ones(len(self), device=self.device)
        sy = 1.0 - 2.0 * vertical.float() if vertical is not None else torch.ones_like(sx)
        self.warp(sx, 0.0, 0.0, sy, 0.0, 0.0)

    def translate(self, tx: torch.Tensor, ty: torch.Tensor) -> None:
        """Shift right by tx and down by ty output pixels."""
        self.warp(1.0, 0.0, 0.0, 1.0, -tx, -ty)

    def rotate(self, degrees: torch.Tensor) -> None:
        """Rotate counter-clockwise about the centre (torchvision's sign)."""
        t = torch.deg2rad(degrees)
        self.warp(t.cos(), -t.sin(), t.sin(), t.cos(), 0.0, 0.0)

    def shear(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """torchvision's policy ShearX then ShearY: x, y are tan(shear angle), about the top-left corner."""
        height, width = self.size
        self.warp(1.0, x, 0.0, 1.0, x * height / 2, 0.0)
        self.warp(1.0, 0.0, y, 1.0, 0.0, y * width / 2)

    def crop(self, cx: torch.Tensor, cy: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> None:
        """Zoom into the box centred at (cx, cy) (centred px) whose sides are (sx, sy) of the frame."""
        self.warp(sx, 0.0, 0.0, sy, cx, cy)

    # colour: each call composes one affine colour map after the pending ones
    def recolour(self, matrix: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Compose x -> matrix @ x + bias ((B, 3, 3), (B, 3); RGB in 0..255)."""
        step = torch.zeros_like(self.colour)
        step[:, :3, :3], step[:, 3, 3] = matrix, 1.0
        if bias is not None:
            step[:, :3, 3] = bias
        self.colour = step @ self.colour

    def brightness(self, f: torch.Tensor) -> None:
        self.recolour(gain_map(f))

    def saturation(self, f: torch.Tensor) -> None:
        self.recolour(saturation_map(f))

    def contrast(self, f: torch.Tensor) -> None:
        self.recolour(*self.contrast_map(f))

    def contrast_map(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Matrix and bias that blend each image with its current mean luma: f * x + (1 - f) * mean."""
        return gain_map(f), ((1 - f) * self.gray_mean()).unsqueeze(1).expand(-1, 3)

    def hue(self, h: torch.Tensor) -> None:
        self.recolour(hue_map(h))

    def grayscale(self, chosen: torch.Tensor) -> None:
        self.recolour(saturation_map(1.0 - chosen.float()))

    def invert(self, chosen: torch.Tensor) -> None:
        self.recolour(gain_map(1 - 2 * chosen.float()), 255.0 * chosen.float().unsqueeze(1).expand(-1, 3))

    def gray_mean(self) -> torch.Tensor:
        """(B,) mean luma of each image as the pending colour map leaves it."""
        if self._means is None:
            self._means = _channel_means(self.pixels)
        current = (self.colour[:, :3, :3] @ self._means.unsqueeze(2)).squeeze(2) + self.colour[:, :3, 3]
        return current @ torch.tensor(GRAY, device=self.device)

    # pixels
    def edit(self, chosen: torch.Tensor, fn, geometry: bool = False) -> None:
        """Set the chosen samples' pixels to fn(pixels (n, 3, h, w) uint8, index (n,)) -> uint8, after
        applying their pending colour to them, and with geometry=True their pending geometry too (for
        ops that look at the whole picture, e.g. a histogram, and so must see what a rotation uncovers)."""
        index = chosen.nonzero().squeeze(1)
        if len(index) == 0:
            return
        if not self._owned:  # never write into the caller's tensors (often slices of the cache)
            self.pixels, self._owned = self.pixels.clone(), True
            self.masks = None if self.masks is None else self.masks.clone()
        eye = torch.eye(4, device=self.device)
        if geometry and not _is_identity(self.geometry.index_select(0, index)):
            current, masks = self.resampled(index)
            current = current.round_().to(torch.uint8)
            self.geometry[index] = eye[:3, :3]
            if masks is not None:
                self.write("masks", index, masks)
        elif _is_identity(self.colour.index_select(0, index)):
            current = self.pixels.index_select(0, index)
        else:
            current = _colour(self.pixels.index_select(0, index), self.colour[index, :3], (0.0,) * 3, (255.0,) * 3)
            current = current.round_().to(torch.uint8)
        new = fn(current, index)
        self.write("pixels", index, new)
        self.colour[index] = eye
        if self._means is not None:
            self._means[index] = _channel_means(new)

    def write(self, name: str, index: torch.Tensor, rows: torch.Tensor) -> None:
        """self.<name>[index] = rows, in place; uint8 rows move as 4-byte words (index_copy_ is ~20x
        slower on bytes)."""
        target = getattr(self, name)
        if target.dtype == torch.uint8 and target[0].numel() % 4 == 0:
            target = target.view(len(target), -1).view(torch.int32)
            rows = rows.reshape(len(rows), -1).contiguous().view(torch.int32)
        target.index_copy_(0, index, rows)

    def resampled(self, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (chosen) samples with their pending colour and geometry applied, at the pixels' own
        resolution: (n, 3, h, w) float in 0..255, and their masks (n, 1, h, w) moved alike (or None)."""
        index = torch.arange(len(self), device=self.device) if index is None else index
        pixels, geometry = self.pixels.index_select(0, index), self.geometry[index]
        masks = None if self.masks is None else self.masks.index_select(0, index)
        h, w = pixels.shape[-2:]
        if _is_identity(geometry):
            return _colour(pixels, self.colour[index, :3], (0.0,) * 3, (255.0,) * 3), masks
        to_source = _scale(w / self.size[1], h / self.size[0], self.device)
        index_map = _to_index(h, w, self.device) @ to_source @ geometry @ torch.linalg.inv(to_source)
        return _resample(pixels, self.colour[index, :3], (0.0,) * 3, (255.0,) * 3, index_map, (h, w),
                         self.bilinear, masks)

    def fork(self, pixels: torch.Tensor) -> "Batch":
        """A new batch of `pixels` in the same frame with nothing pending (for AugMix's chains)."""
        chain = Batch(pixels, None, self.size, self.generator)
        chain.bilinear = True
        return chain

    def render(self, mean, std) -> None:
        """Apply everything pending plus the normalization: self.images (B, 3, H, W) float32."""
        self.mean, self.std = mean, std  # for the final ops that work in 0..1 units
        scale = torch.tensor([1 / (255 * s) for s in std], device=self.device)
        lo = [-m / s for m, s in zip(mean, std)]  # black
        hi = [(1 - m) / s for m, s in zip(mean, std)]  # white
        colour = self.colour[:, :3] * scale.view(1, 3, 1)
        colour[:, :, 3] += torch.tensor(lo, device=self.device)
        h, w = self.pixels.shape[-2:]
        if (h, w) == self.size and _is_identity(self.geometry):
            self.images = _colour(self.pixels, colour, lo, hi)
            if self.masks is not None and not self._owned:  # the final ops write into them
                self.masks = self.masks.clone()
            return
        to_source = _scale(w / self.size[1], h / self.size[0], self.device)
        index_map = _to_index(h, w, self.device) @ to_source @ self.geometry
        bilinear = self.bilinear or (h, w) != self.size  # a resize is always bilinear (never blocky)
        self.images, self.masks = _resample(self.pixels, colour, lo, hi, index_map, self.size, bilinear, self.masks)


def _is_identity(maps: torch.Tensor) -> bool:
    """Whether every (n, k, k) map is the identity."""
    return torch.equal(maps, torch.eye(maps.shape[-1], device=maps.device).expand_as(maps))


def _channel_means(pixels: torch.Tensor) -> torch.Tensor:
    """(n, 3) channel means of uint8 (n, 3, h, w) pixels, without a float copy of them."""
    return pixels.sum((2, 3), dtype=torch.float32) / (pixels.shape[2] * pixels.shape[3])


def _scale(sx: float, sy: float, device) -> torch.Tensor:
    return torch.diag(torch.tensor([sx, sy, 1.0], device=device))


def _to_index(h: int, w: int, device) -> torch.Tensor:
    """(3, 3) map from centred source pixels to pixel index coordinates (pixel centres at integers)."""
    return torch.tensor([[1.0, 0, w / 2 - 0.5], [0, 1, h / 2 - 0.5], [0, 0, 1]], device=device)


def _colour(pixels: torch.Tensor, colour: torch.Tensor, lo, hi) -> torch.Tensor:
    """(n, 3, h, w) -> float32 colour[:, :, :3] @ rgb + colour[:, :, 3], channel c clamped to [lo[c], hi[c]]."""
    n = len(pixels)
    out = torch.baddbmm(colour[:, :, 3:], colour[:, :, :3], pixels.reshape(n, 3, -1).float())
    for c in range(3):  # scalar clamps: ~10x faster on CPU than one clamp with tensor bounds
        out[:, c].clamp_(lo[c], hi[c])
    return out.view(pixels.shape)


def _resample(pixels, colour, lo, hi, index_map, size, bilinear, masks=None):
    """Colour (n, 3, h, w) uint8 `pixels` (see _colour), then sample them at `size` through `index_map`
    (n, 3, 3: centred output px -> pixel index coordinates) -> float32 (n, 3, H, W), black (lo)
    outside, and the masks (n, 1, H, W) uint8 by nearest (0 outside). The pixels get a 1-pixel black
    ring, so a clamped index reads black: no bounds masks are needed."""
    n, _, h, w = pixels.shape
    source = _colour(F.pad(pixels, (1, 1, 1, 1)), colour, lo, hi)
    black = torch.tensor(lo, device=pixels.device).view(1, 3, 1)  # the ring stays black whatever colour does to 0
    source[:, :, 0], source[:, :, -1], source[:, :, :, 0], source[:, :, :, -1] = black, black, black, black
    nearest = _nearest_index(index_map, size, h, w) if masks is not None or not bilinear else None
    if bilinear:
        images = F.grid_sample(source, _bilinear_grid(index_map, size, h, w), mode="bilinear",
                               padding_mode="border", align_corners=False)
    else:
        images = source.view(n, 3, -1).gather(2, nearest.expand(n, 3, -1)).view(n, 3, *size)
    if masks is not None:
        masks = F.pad(masks, (1, 1, 1, 1)).view(n, 1, -1).gather(2, nearest).view(n, 1, *size)
    return images, masks


def _mapped(index_map: torch.Tensor, row: int, size: tuple[int, int], out: torch.Tensor | None = None):
    """(n, H, W) coordinate `row` (0: x, 1: y) of `index_map` at the centres of the output pixels."""
    height, width = size
    u = torch.arange(width, device=index_map.device) + (0.5 - width / 2)
    v = torch.arange(height, device=index_map.device) + (0.5 - height / 2)
    m = index_map[:, row]
    return torch.add((m[:, :1] * u).unsqueeze(1), (m[:, 1:2] * v + m[:, 2:]).unsqueeze(2), out=out)


def _nearest_index(index_map, size, h, w) -> torch.Tensor:
    """(n, 1, H*W) int64 flat indices into the black-ringed (h+2, w+2) source, rounding half to even
    as grid_sample's nearest does (so flips, shifts and torchvision's rotations come out exact)."""
    x = _mapped(index_map, 0, size).round_().clamp_(-1, w)
    y = _mapped(index_map, 1, size).round_().clamp_(-1, h)
    return torch.add(x, y, alpha=w + 2).add_(w + 3).long().view(len(index_map), 1, -1)  # +1 row, +1 col of ring


def _bilinear_grid(index_map, size, h, w) -> torch.Tensor:
    """(n, H, W, 2) grid_sample coordinates into the black-ringed source: inside the image's footprint
    the edge pixels repeat (as in a plain resize); beyond it the output fades to black within half a
    pixel, close to torchvision's zero padding."""
    grid = torch.empty(len(index_map), *size, 2, device=index_map.device)
    for row, side in ((0, w), (1, h)):
        k, c = 2 / (side + 2), 3 / (side + 2) - 1  # index coordinate -> grid_sample's (align_corners=False)
        normalized = torch.diag(torch.tensor([k, k, 1.0], device=index_map.device))
        normalized[row, 2] = c
        g = _mapped(normalized @ index_map, row, size, out=grid[..., row])
        inside = g.clamp(c - 0.5 * k, c + (side - 0.5) * k)  # the footprint
        g.sub_(inside)
        inside.clamp_(c, c + (side - 1) * k)  # edge pixel centres
        torch.add(inside, g, alpha=2, out=g)
    return grid


# --- presets and transforms ------------------------------------------------------------------------

PRESETS: dict[str, list] = {
    "none": [],
    "light": [Flip(), PadCrop(0.125)],
    "medium": [Flip(), PadCrop(0.125), Rotate(15, p=0.5), ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8), Erase(p=0.25)],
    "strong": [RandAugment(num_ops=2, magnitude=9), Flip(), ResizedCrop(scale=(0.25, 1.0)), Erase(p=0.25),
               MixUp(alpha=0.2, p=0.3), CutMix(alpha=1.0, p=0.3)],
    "auto": [TrivialAugment(), Flip(), PadCrop(0.125)],
}


def resolve_ops(ops: str | list) -> tuple:
    """A preset name or a list of ops -> a checked tuple of ops ('pixels' ops before 'final' ops)."""
    if isinstance(ops, str):
        if ops not in PRESETS:
            raise KitError(f"augmentation preset {ops!r}: choose one of {', '.join(PRESETS)}, or pass a list of ops.")
        ops = PRESETS[ops]
    ops = tuple(ops)
    for op in ops:
        if getattr(op, "stage", None) not in ("pixels", "final") or not callable(op):
            raise KitError(f"{op!r} is not an augmentation op: use the ops of kitlib.augment / kitlib.policies.")
    stages = [op.stage for op in ops]
    if "final" in stages and "pixels" in stages[stages.index("final"):]:
        raise KitError(f"ops {[type(op).__name__ for op in ops]}: erasing, noise and mixing act on the final "
                       "images, so put them after the geometric, colour and policy ops.")
    return ops


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
            return _colour(images, colour.expand(len(images), 3, 4), lo, hi)


def eval_transform(*, size: tuple[int, int], mean, std) -> EvalTransform:
    """The validation / test transform: resize + normalize, nothing random."""
    mean, std = _check_stats(mean, std)
    return EvalTransform(tuple(size), mean, std)


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
    for start in tqdm(range(0, n, chunk), desc="image stats", leave=False, disable=n * h * w < 2 ** 28):
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
