"""Defects that real challenges plant, generated for the audit's rehearsals (bench.audit) and tests.

Each generator takes a numpy Generator and a size and returns (H, W, 3) uint8 images: cartoons
(flat shapes with outlines), drawings (strokes on paper), screenshots (text and boxes), tissue-like
canvases (a pink-purple textured field, as slides look at low resolution), and the artefacts laid on
a duplicate: a green stain, an ink mark, a small crop, a flip.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def cartoon(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Flat-coloured shapes with dark outlines on a flat background."""
    im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(80, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(2, 6)):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(8, size // 2 + 8), y0 + rng.integers(8, size // 2 + 8)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x0), int(y0), int(x1), int(y1)], fill=fill, outline=(20, 20, 20), width=max(1, size // 32))
    return np.asarray(im)


def drawing(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Dark pen strokes on light paper."""
    im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(220, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 8)):
        points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(rng.integers(2, 5))]
        draw.line(points, fill=tuple(int(c) for c in rng.integers(0, 90, 3)), width=int(rng.integers(1, 3)))
    return np.asarray(im)


def screenshot(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A window: a title bar, boxes and lines of text."""
    im = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, size, size // 8], fill=tuple(int(c) for c in rng.integers(0, 200, 3)))
    y = size // 8 + 3
    while y < size - 8:
        if rng.random() < 0.3:
            draw.rectangle([3, y, int(rng.integers(size // 3, size - 3)), y + 6], outline=(120, 120, 120))
        else:
            draw.text((3, y - 2), "".join(chr(c) for c in rng.integers(97, 123, 12)), fill=(30, 30, 30))
        y += 9
    return np.asarray(im)


def tissue(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A pink-purple textured field on a light background: what a stained slide looks like at low resolution."""
    field = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2))
    f = np.asarray(field, dtype=np.float32) / 255.0
    f = (f - f.mean()) / (f.std() + 1e-6)
    eosin = np.array([230, 150, 190], np.float32) + rng.normal(0, 10, 3)  # pink
    hematoxylin = np.array([120, 70, 160], np.float32) + rng.normal(0, 10, 3)  # purple
    mix = np.clip(0.5 + 0.25 * f, 0, 1)[..., None]
    image = eosin * (1 - mix) + hematoxylin * mix + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def green_stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A translucent green blot over part of the image (or a green cast over all of it)."""
    h, w, _ = image.shape
    out = image.astype(np.float32)
    green = np.array([60, 170, 70], np.float32)
    if rng.random() < 0.3:
        alpha = np.full((h, w, 1), rng.uniform(0.25, 0.4), np.float32)
    else:
        blot = Image.new("L", (w, h), 0)
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(h // 4, h // 2)
        ImageDraw.Draw(blot).ellipse([int(cx - r), int(cy - r), int(cx + r), int(cy + r)], fill=255)
        alpha = np.asarray(blot.filter(ImageFilter.GaussianBlur(h / 16)), np.float32)[..., None] / 255.0 * 0.5
    return np.clip(out * (1 - alpha) + green * alpha, 0, 255).astype(np.uint8)


def ink_mark(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pen stroke across the image, as a pathologist's marker leaves."""
    h, w, _ = image.shape
    im = Image.fromarray(image)
    points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
    ImageDraw.Draw(im).line(points, fill=(20, 40, 90), width=max(1, w // 24))
    return np.asarray(im)


def small_crop(image: np.ndarray, rng: np.random.Generator, most: float = 0.08) -> np.ndarray:
    """Up to `most` of each side cut off, resized back to the original size."""
    h, w, _ = image.shape
    top, left = rng.integers(0, int(most * h) + 1), rng.integers(0, int(most * w) + 1)
    bottom, right = h - rng.integers(0, int(most * h) + 1), w - rng.integers(0, int(most * w) + 1)
    return np.asarray(Image.fromarray(image[top:bottom, left:right]).resize((w, h), Image.BILINEAR))


def stained_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A duplicate as the course data had them: a green stain or an ink mark, maybe a small crop, maybe a flip."""
    out = green_stain(image, rng) if rng.random() < 0.7 else ink_mark(image, rng)
    if rng.random() < 0.5:
        out = small_crop(out, rng)
    if rng.random() < 0.5:
        out = out[:, ::-1] if rng.random() < 0.5 else out[::-1]
    return np.ascontiguousarray(out)
