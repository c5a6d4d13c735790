"""The augmentation ops: single ops and torchvision's automated policies, on whole batches.

Every op is a small frozen dataclass: its fields are the knobs, `p` the probability that a sample
gets it, and calling it on a `kitlib.augment.Batch` draws its random numbers once per sample.
'pixels' ops add to the batch's pending per-sample geometry and colour maps (or rewrite the uint8
pixels of only the samples that drew a non-linear op); 'final' ops (erasing, noise, mixing) edit the
normalized output. Ops only call methods of the batch they are given, so this module imports nothing
from `kitlib.augment`, which re-exports all of them.

RandAugment, TrivialAugmentWide, AutoAugment and AugMix use torchvision's own tables (op list,
magnitude bins, AutoAugment's sub-policies), read from `torchvision.transforms.v2`, so they match the
per-image policies in distribution (tests/test_augment.py checks this against torchvision itself).

Strength s in [0, 1]: an op with probability p fires with probability p*s, and every magnitude moves
towards the identity by the factor s: angles, shifts, jitter ranges, the crop's and the erased
box's area, noise levels, and the policies' signed magnitudes; posterize keeps 8 - (8 - bits)*s
bits (rounded) and solarize's threshold becomes 1 - (1 - threshold)*s. At s=0 nothing fires.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from kitlib.errors import KitError

GRAY = (0.2989, 0.587, 0.114)  # torchvision's luma weights
AUTOAUGMENT_POLICIES = tuple(p.value for p in v2.AutoAugmentPolicy)  # 'imagenet', 'cifar10', 'svhn'


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


# --- non-linear pixel ops on uint8 subsets, one parameter per sample -------------------------------

def posterize(pixels: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` (n,) bits of every channel of (n, 3, h, w) uint8 images."""
    mask = (256 - torch.pow(2, 8 - bits.long())).to(torch.uint8)  # bits=8 -> 255, bits=0 -> 0
    return pixels & mask.view(-1, 1, 1, 1)


def solarize(pixels: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every value >= `threshold` (n,) in 0..255, as torchvision's solarize."""
    whole = threshold.ceil().clamp(0, 256).to(torch.int16).view(-1, 1, 1, 1)  # x >= t iff x >= ceil(t)
    return pixels ^ ((pixels >= whole).to(torch.uint8) * 255)  # x ^ 255 == 255 - x; 5x faster than where


def sharpen(pixels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness with one factor per image: blend with a 3x3 blur (border kept)."""
    if pixels.shape[-1] <= 2 or pixels.shape[-2] <= 2:
        return pixels
    out = pixels.float()
    # torchvision's kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as a 3x3 box sum plus 4x the centre
    rows = out[..., :-2, :] + out[..., 1:-1, :] + out[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (n, 3, h-2, w-2); 10x faster than avg_pool2d
    blurred = box.add_(out[..., 1:-1, 1:-1], alpha=4).div_(13).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((blurred - inner) * (1.0 - factor).view(-1, 1, 1, 1))
    return out.clamp_(0, 255).to(torch.uint8)  # truncates, as torchvision does


# --- per-sample op choice --------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _space(policy: str, num_bins: int, size: tuple[int, int]):
    """torchvision's augmentation space of `policy` (its table's name in torchvision.transforms.v2)
    -> names, magnitudes (ops, bins) float, signed (ops,) bool."""
    cls, table = policy.split(".")
    space = getattr(getattr(v2, cls), table)
    height, width = size
    names = list(space)
    rows = []
    for name in names:
        values = space[name][0](num_bins, height, width)
        rows.append(torch.zeros(num_bins) if values is None else values.float())
    signed = torch.tensor([space[name][1] for name in names])
    return names, torch.stack(rows), signed


def _draw(batch, magnitudes, signed, op, bin_):
    """Magnitude of op `op` (B,) at bin `bin_` (B,), negated at random (p=0.5) for signed ops."""
    value = magnitudes.to(batch.device)[op, bin_]
    flip = signed.to(batch.device)[op] & (batch.rand() <= 0.5)
    return torch.where(flip, -value, value)


def apply_ops(batch, names: list[str], op: torch.Tensor, value: torch.Tensor, active: torch.Tensor,
              strength: float) -> None:
    """Apply to each sample i with active[i] the op names[op[i]] at magnitude value[i] (torchvision's
    meaning of each magnitude); each sample gets at most one op per call."""
    hit = {name: active & (op == k) for k, name in enumerate(names)}
    hit = {name: chosen for name, chosen in hit.items() if chosen.any()}  # skip ops no sample drew
    zero, one = torch.zeros_like(value), torch.ones_like(value)

    def amount(name, identity):  # the sample's magnitude if it drew `name`, else the identity
        return torch.where(hit[name], value * strength, identity) if name in hit else identity

    if {"ShearX", "ShearY"} & hit.keys():
        batch.shear(amount("ShearX", zero), amount("ShearY", zero))
    if {"TranslateX", "TranslateY"} & hit.keys():  # torchvision truncates to whole pixels
        batch.translate(amount("TranslateX", zero).trunc(), amount("TranslateY", zero).trunc())
    if "Rotate" in hit:
        batch.rotate(amount("Rotate", zero))
    if "Brightness" in hit:
        batch.brightness(one + amount("Brightness", zero))
    if "Color" in hit:
        batch.saturation(one + amount("Color", zero))
    if "Contrast" in hit:
        batch.contrast(one + amount("Contrast", zero))
    if "Invert" in hit:
        batch.invert(hit["Invert"])
    if "Sharpness" in hit:
        factor = one + value * strength
        batch.edit(hit["Sharpness"], lambda x, i: sharpen(x, factor[i]), geometry=True)
    if "Posterize" in hit:
        bits = (8 - (8 - value) * strength).round()
        batch.edit(hit["Posterize"], lambda x, i: posterize(x, bits[i]))
    if "Solarize" in hit:
        threshold = 255.0 * (1 - (1 - value) * strength)
        batch.edit(hit["Solarize"], lambda x, i: solarize(x, threshold[i]))
    if "AutoContrast" in hit:
        batch.edit(hit["AutoContrast"], lambda x, i: TF.autocontrast(x), geometry=True)
    if "Equalize" in hit:
        batch.edit(hit["Equalize"], lambda x, i: TF.equalize(x), geometry=True)


@functools.lru_cache(maxsize=8)
def _subpolicies(policy: str) -> torch.Tensor:
    """torchvision's AutoAugment sub-policies as (25, 2, 3): op index, probability, magnitude bin."""
    names = list(v2.AutoAugment._AUGMENTATION_SPACE)
    return torch.tensor([[(names.index(name), prob, bin_ or 0) for name, prob, bin_ in sub]
                         for sub in v2.AutoAugment(v2.AutoAugmentPolicy(policy))._policies])


# --- the policies ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RandAugment:
    """RandAugment: `num_ops` ops a sample, each uniform over 14, at bin `magnitude` of `num_bins`."""

    num_ops: int = 2
    """Ops applied one after another to each sample."""
    magnitude: int = 9
    """Magnitude bin, 0..num_bins-1 (torchvision's default 9 of 31)."""
    num_bins: int = 31
    """Number of magnitude bins."""
    p: float = 1.0
    """Probability that a sample gets the policy at all."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        names, magnitudes, signed = _space("RandAugment._AUGMENTATION_SPACE", self.num_bins, batch.size)
        active = batch.coin(self.p * strength)
        bin_ = torch.full((len(batch),), self.magnitude, device=batch.device)
        for _ in range(self.num_ops):
            op = batch.randint(len(names))
            apply_ops(batch, names, op, _draw(batch, magnitudes, signed, op, bin_), active, strength)


@dataclass(frozen=True)
class TrivialAugment:
    """TrivialAugmentWide: one op a sample, uniform over 14, at a uniform magnitude bin."""

    num_bins: int = 31
    """Number of magnitude bins."""
    p: float = 1.0
    """Probability that a sample gets the policy at all."""
    stage: ClassVar[str] = "pixels"

    def __call__(self, batch, strength: float) -> None:
        names, magnitudes, signed = _space("TrivialAugmentWide._AUGMENTATION_SPACE", self.num_bins, batch.size)
        op, bin_ = batch.randint(len(names)), batch.randint(self.num_bins)
        value = _draw(batch, magnitudes, signed, op, bin_)
        apply_ops(batch, names, op, value, batch.coin(self.p * strength), strength)


@dataclass(frozen=True)
class AutoAugment:
    """AutoAugment: one of the 25 learned sub-policies a sample, each two (op, probability, bin)."""

    policy: str = "imagenet"
    """Which learned policy: 'imagenet', 'cifar10' or 'svhn'."""
    p: float = 1.0
    """Probability that a sample gets the policy at all."""
    stage: ClassVar[str] = "pixels"

    def __post_init__(self):
        if self.policy not in AUTOAUGMENT_POLICIES:
            raise KitError(f"AutoAugment(policy={self.policy!r}): choose one of "
                           f"{', '.join(AUTOAUGMENT_POLICIES)}.")

    def __call__(self, batch, strength: float) -> None:
        names, magnitudes, signed = _space("AutoAugment._AUGMENTATION_SPACE", 10, batch.size)
        table = _subpolicies(self.policy).to(batch.device)  # (25, 2, 3): op, probability, bin
        active = batch.coin(self.p * strength)
        sub = table[batch.randint(len(table))]  # (B, 2, 3)
        for step in range(2):
            op, prob, bin_ = sub[:, step, 0].long(), sub[:, step, 1], sub[:, step, 2].long()
            value = _draw(batch, magnitudes, signed, op, bin_)
            apply_ops(batch, names, op, value, active & (batch.rand() <= prob), strength)


@dataclass(frozen=True)
class AugMix:
    """AugMix: a Dirichlet-weighted mix of `width` chains of 1-3 random ops, blended with the image.

    The chains are resampled separately (bilinear, torchvision's AugMix default) at the cache's
    resolution, so ops before AugMix are applied first. Masks cannot follow a blend of differently
    warped copies: a transform with AugMix refuses masks.
    """

    severity: int = 3
    """Magnitude bins drawn from, 1..10."""
    width: int = 3
    """Number of chains."""
    depth: int = -1
    """Ops per chain; -1 draws 1..3 per chain and sample."""
    alpha: float = 1.0
    """Dirichlet / Beta concentration of the mixing weights."""
    all_ops: bool = True
    """Include brightness, contrast, colour and sharpness."""
    p: float = 1.0
    """Probability that a sample gets the policy at all."""
    stage: ClassVar[str] = "pixels"
    keeps_masks: ClassVar[bool] = False

    def __post_init__(self):
        if not 1 <= self.severity <= 10:
            raise KitError(f"AugMix(severity={self.severity}): choose 1..10.")

    def __call__(self, batch, strength: float) -> None:
        batch.edit(batch.coin(self.p * strength), lambda x, i: self._mix(batch, x, strength), geometry=True)

    def _mix(self, batch, pixels: torch.Tensor, strength: float) -> torch.Tensor:
        """The AugMix blend of (n, 3, h, w) uint8 pixels -> uint8."""
        space = "AugMix._AUGMENTATION_SPACE" if self.all_ops else "AugMix._PARTIAL_AUGMENTATION_SPACE"
        names, magnitudes, signed = _space(space, 10, batch.size)
        n = len(pixels)
        dirichlet = lambda k: torch._sample_dirichlet(  # noqa: E731 (generator-aware Dirichlet)
            torch.full((n, k), float(self.alpha), device=pixels.device), generator=batch.generator)
        keep = dirichlet(2)  # (n, 2): weight of the original, weight of all chains
        weights = dirichlet(self.width) * keep[:, 1:]
        mix = pixels.float() * keep[:, :1, None, None]
        for i in range(self.width):
            chain = batch.fork(pixels)
            depth = chain.randint(3) + 1 if self.depth <= 0 else torch.full_like(keep[:, 0], self.depth)
            for slot in range(3 if self.depth <= 0 else self.depth):
                op = chain.randint(len(names))
                value = _draw(chain, magnitudes, signed, op, chain.randint(self.severity))
                apply_ops(chain, names, op, value, depth > slot, strength)
            mix += chain.resampled()[0] * weights[:, i, None, None, None]
        return mix.round_().clamp_(0, 255).to(torch.uint8)
