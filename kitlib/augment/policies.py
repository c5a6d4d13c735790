"""torchvision's automated policies on whole batches, each op drawn per sample.

RandAugment, TrivialAugmentWide, AutoAugment and AugMix use torchvision's own tables (op list,
magnitude bins, AutoAugment's sub-policies), read from `torchvision.transforms.v2`, so they match the
per-image policies in distribution (tests/test_augment.py checks this against torchvision itself).
Linear ops (brightness, contrast, rotation, shear, ...) join the batch's pending maps like the single
ops of `kitlib.augment.ops`; non-linear ones (posterize, solarize, equalize, autocontrast, sharpness)
rewrite the uint8 pixels of only the samples that drew them.

Strength s in [0, 1]: the policy fires with probability p*s and its signed magnitudes move towards
the identity by the factor s; posterize keeps 8 - (8 - bits)*s bits (rounded) and solarize's
threshold becomes 1 - (1 - threshold)*s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from kitlib.errors import KitError

AUTOAUGMENT_POLICIES = tuple(p.value for p in v2.AutoAugmentPolicy)  # 'imagenet', 'cifar10', 'svhn'


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
