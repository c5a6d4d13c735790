"""The single augmentation ops on whole batches: flips, shifts, crops, rotation, colour, erasing, noise, mixing.

Every op is a small frozen dataclass: its fields are the knobs, `p` the probability that a sample
gets it, and calling it on a `kitlib.augment.batch.Batch` draws its random numbers once per sample.
'pixels' ops add to the batch's pending per-sample geometry and colour maps; 'final' ops (erasing,
noise, mixing) edit the normalized output. Ops only call methods of the batch they are given.
torchvision's automated policies, built from the same batch methods, are in `kitlib.augment.policies`;
`kitlib.augment` re-exports everything.

Strength s in [0, 1]: an op with probability p fires with probability p*s, and every magnitude moves
towards the identity by the factor s: angles, shifts, jitter ranges, the crop's and the erased
box's area, noise levels. At s=0 nothing fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from kitlib.errors import KitError

GRAY = (0.2989, 0.587, 0.114)  # torchvision's luma weights


# --- colour maps (B, 3, 3) on RGB in 0..255 ----------------------------------------------------------

def gain_map(f: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): f * identity (brightness)."""
    return f.view(-1, 1, 1) * torch.eye(3, device=f.device)


def saturation_map(f: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): blend each pixel with its luma, f * x + (1 - f) * grey (f=0: grayscale)."""
    grey = torch.tensor(GRAY, device=f.device).expand(3, 3)
    return gain_map(f) + (1 - f).view(-1, 1, 1) * grey


def hue_map(h: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): turn hues by h of a full turn, as a rotation about the grey axis (h=1/3: R->G->B->R)."""
    t = (2 * math.pi * h).view(-1, 1, 1)
    cross = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=h.device) * 3 ** -0.5
    return t.cos() * torch.eye(3, device=h.device) + t.sin() * cross + (1 - t.cos()) / 3


# --- single ops ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Flip:
    """Mirror left-right (torchvision RandomHorizontalFlip), or up-down with vertical=True."""

    p: float = 0.5
    """Probability per sample."""
    vertical: bool = False
    """Mirror up-down instead."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        batch.flip(**{"vertical" if self.vertical else "horizontal": batch.coin(self.p * strength)})


@dataclass(frozen=True)
class PadCrop:
    """Pad with black and crop back at a random offset (torchvision RandomCrop(size, padding))."""

    pad: float = 0.125
    """Largest shift, as a fraction of the side (0.125: 4 px at 32 px)."""
    p: float = 1.0
    """Probability per sample."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        on = batch.coin(self.p * strength)
        shifts = []
        for side in reversed(batch.size):  # x from the width, y from the height
            reach = round(self.pad * strength * side)
            shifts.append((batch.randint(2 * reach + 1) - reach) * on)
        batch.translate(*shifts)


@dataclass(frozen=True)
class ResizedCrop:
    """Crop a random box of `scale` of the area and `ratio` aspect, resized back (bilinear)."""

    scale: tuple[float, float] = (0.08, 1.0)
    """Range of the box's area, as a fraction of the image's."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Range of the box's aspect (width / height), drawn log-uniformly."""
    p: float = 1.0
    """Probability per sample."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        height, width = batch.size
        on = batch.coin(self.p * strength)
        area = batch.uniform(*(1 - (1 - s) * strength for s in self.scale)) * height * width
        aspect = torch.exp(batch.uniform(*(math.log(r) * strength for r in self.ratio)))
        # one draw, clipped to the frame (torchvision re-draws up to 10 times instead)
        w = torch.where(on, (area * aspect).sqrt().round().clamp(1, width), float(width))
        h = torch.where(on, (area / aspect).sqrt().round().clamp(1, height), float(height))
        left = (batch.rand() * (width - w + 1)).floor()
        top = (batch.rand() * (height - h + 1)).floor()
        batch.crop(left + (w - width) / 2, top + (h - height) / 2, w / width, h / height)
        batch.bilinear = True


@dataclass(frozen=True)
class Rotate:
    """Rotate by an angle uniform in [-degrees, degrees] (torchvision RandomRotation, nearest)."""

    degrees: float = 15.0
    """Largest angle, counter-clockwise or clockwise."""
    p: float = 1.0
    """Probability per sample."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        reach = self.degrees * strength
        batch.rotate(batch.uniform(-reach, reach) * batch.coin(self.p * strength))


@dataclass(frozen=True)
class ColorJitter:
    """torchvision ColorJitter: factors uniform in [1-x, 1+x], hue in [-hue, hue], random order."""

    brightness: float = 0.4
    """Brightness factor range: [1 - brightness, 1 + brightness]."""
    contrast: float = 0.4
    """Contrast factor range (blend with the mean luma)."""
    saturation: float = 0.4
    """Saturation factor range (blend with the pixel's luma)."""
    hue: float = 0.1
    """Hue shift range in turns, at most 0.5."""
    p: float = 1.0
    """Probability per sample."""
    stage: ClassVar[str] = "pixels"

    def __post_init__(self):
        if min(self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.hue > 0.5:
            raise KitError(f"{self}: the ranges must be >= 0 and hue at most 0.5 (half a turn).")

    def __call__(self, batch, strength: float) -> None:
        on = batch.coin(self.p * strength)
        draw = lambda x: torch.where(on, batch.uniform(max(0.0, 1 - x * strength), 1 + x * strength), 1.0)  # noqa
        factors = [draw(self.brightness), draw(self.contrast), draw(self.saturation),
                   torch.where(on, batch.uniform(-self.hue * strength, self.hue * strength), 0.0)]
        maps = [gain_map(factors[0]), None, saturation_map(factors[2]), hue_map(factors[3])]
        order = batch.rand(len(batch), 4).argsort(dim=1)  # a random permutation per sample
        for k in range(4):  # position k: each sample's k-th op, all in one colour map
            which = order[:, k].view(-1, 1, 1)
            matrix, bias = batch.contrast_map(torch.where(order[:, k] == 1, factors[1], 1.0))
            for op in (0, 2, 3):
                matrix = torch.where(which == op, maps[op], matrix)
            batch.recolour(matrix, bias)


@dataclass(frozen=True)
class Grayscale:
    """Turn grey (luma in all three channels)."""

    p: float = 0.1
    """Probability per sample."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        batch.grayscale(batch.coin(self.p * strength))


def _boxes(batch, index: torch.Tensor, area: torch.Tensor, aspect: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) bool: for the samples `index`, a box of `area` px and `aspect` (w/h) placed uniformly."""
    height, width = batch.images.shape[-2:]
    left, top = batch.rand()[index], batch.rand()[index]
    w = (area[index] * aspect[index]).sqrt().round().clamp(0, width)
    h = (area[index] / aspect[index]).sqrt().round().clamp(0, height)
    left, top = (left * (width - w + 1)).floor(), (top * (height - h + 1)).floor()
    rows = torch.arange(height, device=batch.device)
    cols = torch.arange(width, device=batch.device)
    rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (n, H)
    cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (n, W)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)


@dataclass(frozen=True)
class Erase:
    """Random erasing / cutout: a box of `scale` of the area set to 0 (the mean colour once normalized)."""

    p: float = 0.25
    """Probability per sample."""
    scale: tuple[float, float] = (0.02, 0.33)
    """Range of the box's area, as a fraction of the image's."""
    ratio: tuple[float, float] = (0.3, 3.3)
    """Range of the box's aspect (width / height), drawn log-uniformly."""
    stage: ClassVar[str] = "final"

    def __call__(self, batch, strength: float) -> None:
        height, width = batch.images.shape[-2:]
        index = batch.coin(self.p * strength).nonzero().squeeze(1)
        area = batch.uniform(self.scale[0] * strength, self.scale[1] * strength) * height * width
        aspect = torch.exp(batch.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        box = _boxes(batch, index, area, aspect)
        batch.write("images", index, batch.images.index_select(0, index).masked_fill_(box, 0.0))


def _in_unit_range(batch, index: torch.Tensor, fn) -> None:
    """Replace images[index] by fn(them in 0..1 units), clipped to 0..1, keeping the normalization."""
    mean, std = (torch.tensor(v, device=batch.device).view(1, 3, 1, 1) for v in (batch.mean, batch.std))
    unit = fn(batch.images.index_select(0, index) * std + mean).clamp_(0, 1)
    batch.write("images", index, (unit - mean) / std)


@dataclass(frozen=True)
class GaussianNoise:
    """Add N(0, sigma) noise per pixel and channel (sigma in 0..1 units), then clip."""

    sigma: float = 0.05
    """Standard deviation in 0..1 units."""
    p: float = 0.5
    """Probability per sample."""
    stage: ClassVar[str] = "final"

    def __call__(self, batch, strength: float) -> None:
        index = batch.coin(self.p * strength).nonzero().squeeze(1)
        noise = lambda x: x + self.sigma * strength * torch.randn(  # noqa: E731
            x.shape, generator=batch.generator, device=batch.device)
        _in_unit_range(batch, index, noise)


@dataclass(frozen=True)
class PoissonNoise:
    """Shot noise: a pixel of value x in 0..1 becomes Poisson(x * peak) / peak, then clipped.

    `peak` is the photon count of white: lower is noisier; strength s uses peak / s^2 (noise x s).
    (The users' `image + p / p.max()` with p ~ Poisson(5) mostly adds ~0.3 of brightness everywhere.)
    """

    peak: float = 30.0
    """Photon count of white."""
    p: float = 0.5
    """Probability per sample."""
    stage: ClassVar[str] = "final"

    def __call__(self, batch, strength: float) -> None:
        index = batch.coin(self.p * strength).nonzero().squeeze(1)
        peak = self.peak / max(strength, 1e-6) ** 2
        _in_unit_range(batch, index, lambda x: torch.poisson(x.clamp(min=0) * peak, generator=batch.generator) / peak)


def _beta(batch, alpha: float) -> torch.Tensor:
    """(B,) Beta(alpha, alpha) draws from the batch's generator."""
    concentration = torch.full((len(batch), 2), float(alpha), device=batch.device)
    return torch._sample_dirichlet(concentration, generator=batch.generator)[:, 0]


@dataclass(frozen=True)
class MixUp:
    """Blend a sample with a random partner: lam * x + (1 - lam) * x', same for targets; lam ~ Beta(alpha, alpha).
    A mask follows the image with the larger weight."""

    alpha: float = 0.2
    """Beta(alpha, alpha) draws the own image's weight."""
    p: float = 0.5
    """Probability per sample."""
    stage: ClassVar[str] = "final"

    def __call__(self, batch, strength: float) -> None:
        index = batch.coin(self.p * strength).nonzero().squeeze(1)
        partner = torch.randperm(len(batch), generator=batch.generator, device=batch.device)[index]
        lam = _beta(batch, self.alpha)[index]
        for name in ("images", "targets"):
            x = getattr(batch, name)
            shape = (-1,) + (1,) * (x.dim() - 1)
            mixed = lam.view(shape) * x.index_select(0, index) + (1 - lam.view(shape)) * x.index_select(0, partner)
            batch.write(name, index, mixed)
        if batch.masks is not None:
            own, other = batch.masks.index_select(0, index), batch.masks.index_select(0, partner)
            batch.write("masks", index, torch.where((lam >= 0.5).view(-1, 1, 1, 1), own, other))


@dataclass(frozen=True)
class CutMix:
    """Paste a box from a random partner (area 1 - lam, lam ~ Beta(alpha, alpha)); targets mix by the
    pasted area; masks are pasted with their image."""

    alpha: float = 1.0
    """Beta(alpha, alpha) draws the share of the image kept."""
    p: float = 0.5
    """Probability per sample."""
    stage: ClassVar[str] = "final"

    def __call__(self, batch, strength: float) -> None:
        index = batch.coin(self.p * strength).nonzero().squeeze(1)
        partner = torch.randperm(len(batch), generator=batch.generator, device=batch.device)[index]
        height, width = batch.images.shape[-2:]
        area = (1 - _beta(batch, self.alpha)) * height * width
        box = _boxes(batch, index, area, torch.ones_like(area))
        pasted = box.float().mean((1, 2, 3)).unsqueeze(1)  # (n, 1) share of the area
        for name in ("images", "masks"):
            x = getattr(batch, name)
            if x is not None:
                batch.write(name, index, torch.where(box, x.index_select(0, partner), x.index_select(0, index)))
        mixed = (1 - pasted) * batch.targets.index_select(0, index) + pasted * batch.targets.index_select(0, partner)
        batch.write("targets", index, mixed)
