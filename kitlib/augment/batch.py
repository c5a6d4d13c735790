"""What augmentation ops act on: a batch's uint8 pixels with pending per-sample maps, rendered once.

Ops do not touch pixels one at a time: each adds to a per-sample *pending* map that `render`
applies once at the end (this fusion is what makes the kit >= 10x faster than per-image PIL
transforms on 2 CPU cores):
  geometry  one 3x3 inverse map per sample (flips, translation, crops, rotation, shear, the resize
            to `size`): every image is resampled exactly once, nearest (torchvision's default for
            rotations and policies) or bilinear when a resize or resized crop is involved;
  colour    one 4x4 affine colour map per sample (brightness, contrast, saturation, hue, grayscale,
            invert, and the normalization), applied with one batched matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kitlib.augment.ops import GRAY, gain_map, hue_map, saturation_map


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
        """Multiply every channel by (B,) factors `f`."""
        self.recolour(gain_map(f))

    def saturation(self, f: torch.Tensor) -> None:
        """Blend each image with its grey version: f=0 grey, 1 unchanged."""
        self.recolour(saturation_map(f))

    def contrast(self, f: torch.Tensor) -> None:
        """Blend each image with its mean luma: f=0 flat grey, 1 unchanged."""
        self.recolour(*self.contrast_map(f))

    def contrast_map(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Matrix and bias that blend each image with its current mean luma: f * x + (1 - f) * mean."""
        return gain_map(f), ((1 - f) * self.gray_mean()).unsqueeze(1).expand(-1, 3)

    def hue(self, h: torch.Tensor) -> None:
        """Turn colours about the grey axis by (B,) fractions `h` of a full turn."""
        self.recolour(hue_map(h))

    def grayscale(self, chosen: torch.Tensor) -> None:
        """Make the (B,) bool `chosen` images grey."""
        self.recolour(saturation_map(1.0 - chosen.float()))

    def invert(self, chosen: torch.Tensor) -> None:
        """Invert the (B,) bool `chosen` images (255 - x)."""
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
            current = apply_colour(self.pixels.index_select(0, index), self.colour[index, :3], (0.0,) * 3, (255.0,) * 3)
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
            return apply_colour(pixels, self.colour[index, :3], (0.0,) * 3, (255.0,) * 3), masks
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
            self.images = apply_colour(self.pixels, colour, lo, hi)
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


def apply_colour(pixels: torch.Tensor, colour: torch.Tensor, lo, hi) -> torch.Tensor:
    """(n, 3, h, w) -> float32 colour[:, :, :3] @ rgb + colour[:, :, 3], channel c clamped to [lo[c], hi[c]]."""
    n = len(pixels)
    out = torch.baddbmm(colour[:, :, 3:], colour[:, :, :3], pixels.reshape(n, 3, -1).float())
    for c in range(3):  # scalar clamps: ~10x faster on CPU than one clamp with tensor bounds
        out[:, c].clamp_(lo[c], hi[c])
    return out.view(pixels.shape)


def _resample(pixels, colour, lo, hi, index_map, size, bilinear, masks=None):
    """Colour (n, 3, h, w) uint8 `pixels` (see apply_colour), then sample them at `size` through `index_map`
    (n, 3, 3: centred output px -> pixel index coordinates) -> float32 (n, 3, H, W), black (lo)
    outside, and the masks (n, 1, H, W) uint8 by nearest (0 outside). The pixels get a 1-pixel black
    ring, so a clamped index reads black: no bounds masks are needed."""
    n, _, h, w = pixels.shape
    source = apply_colour(F.pad(pixels, (1, 1, 1, 1)), colour, lo, hi)
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
