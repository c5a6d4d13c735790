"""The demo competitions: small CSV-layout challenges built from real images shipped with scikit-learn.

Two kinds, each written on first use into the kit's cache (`demo_root(kind)`; DATA `demo` on the command line):
- slides (the default: the course challenge this kit exists for, in miniature): 176-240 px slides of
  a tissue-like background; in each, 1-3 handwritten digits of the slide's class rendered at 24 px
  inside the masked regions (mask_XXXX.png beside img_XXXX.png) and 1-3 digits of other classes
  outside them; four imbalanced classes named like the course's (34/29/26/11 %); and the course's
  planted junk in miniature: cartoon-like images that all carry one and the same mask file, a
  green-stained duplicate of a slide filed under another label, and a blank slide. Large images with
  masks: `all` cuts tiles at native resolution inside the masks and predicts per slide.
- images (`demo-images`): the 1,797 digits as 32x32 colour PNGs with a mask beside each, under class
  names with commas, parentheses and quotes (the label strings that break naive CSV code), with blank
  images, flipped labels, foreign photos and exact duplicates injected for the audit to find.

The test answers and the list of defects are written beside the competition folder, never inside
it, as a real competition would keep them.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from kitlib.errors import KitError
from kitlib.runtime import cache_dir

CLASSES = ["zero (0)", "one, the loneliest", "two (a pair)", "three, a crowd", "four (IV)",
           "five, high", 'six "half a dozen"', "seven (lucky)", "eight, octo", "nine (IX), nein"]
SIZE = 32  # pixels per side of the rendered images
MARGIN = 4  # blank pixels around the digit
TEST_COUNT = 300
DEFECTS = {"blank": 8, "mislabeled": 30, "alien": 4, "duplicate": 3}  # injected into train
DEMO_VERSION = 3  # bump when the digits demo changes, so `demo_root()` rebuilds it
KINDS = ("slides", "images")
SLIDE_CLASSES = ["HER2(+)", "Triple negative", "Luminal A", "Luminal B, HER2(-)"]
SLIDE_DIGITS = [0, 1, 4, 7]  # the digit drawn for each slide class
SLIDE_SHARES = [0.34, 0.29, 0.26, 0.11]  # the course challenge's class balance
SLIDE_COUNTS = {"train": 320, "test": 120}
SLIDE_JUNK = {"cartoon": 4, "stained_duplicate": 1, "blank": 1}  # planted in train, as the course's were
SLIDES_VERSION = 1  # bump when the slide demo changes


def digit_ink(digit: np.ndarray, size: int = SIZE - 2 * MARGIN) -> np.ndarray:
    """An 8x8 scikit-learn digit (0..16) as (size, size) float32 ink in [0, 1] (bicubic)."""
    return np.asarray(Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def render_digit(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An 8x8 digit (0..16) -> a (32, 32, 3) uint8 colour image and its (32, 32) uint8 mask."""
    ink = np.pad(digit_ink(digit), MARGIN)  # (32, 32) in [0, 1]: the digit in the middle of its box, as on a form
    # tinted paper and ink, dark on light as scanned forms are: colour varies, polarity does not
    background, foreground = rng.uniform(150, 255, 3), rng.uniform(0, 110, 3)
    image = background + ink[..., None] * (foreground - background)
    image += rng.normal(0, 8, image.shape)  # sensor noise, so no two images are identical
    mask = np.where(ink > 0.35, 255, 0).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _aliens(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Crops of scikit-learn's sample photos (a temple, a flower): images from outside the task."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - 128), rng.integers(0, photo.shape[1] - 128)
        crop = Image.fromarray(photo[top:top + 128, left:left + 128]).resize((SIZE, SIZE), Image.BILINEAR)
        crops.append(np.asarray(crop))
    return crops


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_demo(out: str | Path, *, seed: int = 0) -> Path:
    """Write the demo competition to OUT/competition (answers and defects beside it); return that folder."""
    from sklearn.datasets import load_digits

    out = Path(out)
    competition = out / "competition"
    if competition.exists():
        shutil.rmtree(competition)
    (competition / "train_data").mkdir(parents=True)
    (competition / "test_data").mkdir()
    rng = np.random.default_rng(seed)
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    test_idx, train_idx = order[:TEST_COUNT], order[TEST_COUNT:]

    def save(folder: Path, number: int, image: np.ndarray, mask: np.ndarray) -> str:
        name = f"img_{number:04d}.png"
        Image.fromarray(image).save(folder / name)
        Image.fromarray(mask).save(folder / f"mask_{number:04d}.png")
        return name

    train_rows, defects = [], []
    rendered = [render_digit(digits.images[i], rng) for i in train_idx]
    labels = [CLASSES[digits.target[i]] for i in train_idx]
    picks = iter(rng.permutation(len(train_idx)))
    for _ in range(DEFECTS["blank"]):  # a flat colour: an empty scan, a lens cap
        i = next(picks)
        rendered[i] = (np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3), np.uint8),
                       np.zeros((SIZE, SIZE), np.uint8))
        defects.append([i, "blank", labels[i]])
    for _ in range(DEFECTS["mislabeled"]):
        i = next(picks)
        true = labels[i]
        labels[i] = CLASSES[(CLASSES.index(true) + rng.integers(1, len(CLASSES))) % len(CLASSES)]
        defects.append([i, "mislabeled", true])
    for alien in _aliens(DEFECTS["alien"], rng):
        i = next(picks)
        rendered[i] = (alien, np.zeros((SIZE, SIZE), np.uint8))
        defects.append([i, "alien", ""])
    for _ in range(DEFECTS["duplicate"]):  # the same scan filed twice, under two ids
        i, source = next(picks), next(picks)
        rendered[i], labels[i] = rendered[source], labels[source]
        defects.append([i, "duplicate", labels[source]])
    for number, ((image, mask), label) in enumerate(zip(rendered, labels)):
        train_rows.append([save(competition / "train_data", number, image, mask), label])
    test_rows = []
    for number, i in enumerate(test_idx):
        image, mask = render_digit(digits.images[i], rng)
        test_rows.append([save(competition / "test_data", number, image, mask), CLASSES[digits.target[i]]])

    _write_csv(competition / "train_labels.csv", ["sample_index", "label"], train_rows)
    _write_csv(competition / "sample_submission.csv", ["sample_index", "label"],
               [[name, CLASSES[0]] for name, _ in test_rows])
    _write_csv(out / "answers.csv", ["sample_index", "label"], test_rows)
    _write_csv(out / "defects.csv", ["sample_index", "defect", "true_label"],
               [[train_rows[i][0], kind, true] for i, kind, true in defects])
    return competition


# --------------------------------------------------------------------------------------------- slides

def tissue(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 tissue-like background: pink stroma, low-frequency blotches, fine grain, purple nuclei."""
    low = rng.normal(0, 1, (h // 40 + 2, w // 40 + 2, 3))
    low = np.asarray(Image.fromarray(((low - low.min()) / np.ptp(low) * 255).astype(np.uint8)).resize(
        (w, h), Image.BICUBIC), np.float32) / 255 - 0.5
    base = np.array([226, 168, 198], np.float32) + low * np.array([40, 50, 35]) + rng.normal(0, 7, (h, w, 3))
    count = h * w // 180
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            base[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = (118, 62, 150)
    return np.clip(base, 0, 255).astype(np.uint8)


def free_spot(h: int, w: int, side: int, taken: list, rng: np.random.Generator, margin: int = 8):
    """A top-left corner for a side x side object `margin` px away from the boxes in `taken` (corners of the
    same side); None when 200 tries find none."""
    for _ in range(200):
        y, x = int(rng.integers(margin, h - side - margin)), int(rng.integers(margin, w - side - margin))
        if all(y + side + margin <= a or a + side + margin <= y or x + side + margin <= b or b + side + margin <= x
               for a, b in taken):
            return y, x
    return None


def _slide(label: int, pools: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One slide of class `label`: its digits inside the mask, digits of other classes outside."""
    h, w = (int(v) for v in rng.integers(176, 241, 2))
    pixels, mask, taken = tissue(h, w, rng).astype(np.float32), np.zeros((h, w), np.uint8), []
    side = SIZE - 2 * MARGIN  # 24 px of ink, drawn in a 32 px box
    for kind in [label] * int(rng.integers(1, 4)) + [None] * int(rng.integers(1, 4)):
        spot = free_spot(h, w, SIZE, taken, rng)
        if spot is None:
            continue
        taken.append(spot)
        cls = kind if kind is not None else int(rng.choice([c for c in range(len(SLIDE_CLASSES)) if c != label]))
        pool = pools[cls]
        ink = np.pad(digit_ink(pool[int(rng.integers(len(pool)))], side), MARGIN)[..., None]
        y, x = spot
        colour = np.array([70, 20, 95]) + rng.normal(0, 10, 3)
        region = pixels[y:y + SIZE, x:x + SIZE]
        pixels[y:y + SIZE, x:x + SIZE] = region * (1 - ink) + colour * ink
        if kind is not None:  # the diseased region: the digit's box and a margin
            m = int(rng.integers(3, 8))
            mask[max(0, y - m):y + SIZE + m, max(0, x - m):x + SIZE + m] = 255
    return np.clip(pixels, 0, 255).astype(np.uint8), mask


def _cartoon(rng: np.random.Generator, size: int = 208) -> np.ndarray:
    """A cartoon-like image: flat, saturated shapes with black outlines on white (foreign to the task)."""
    from PIL import ImageDraw

    im = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 6))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 60, 2))
        x1, y1 = x0 + int(rng.integers(30, 90)), y0 + int(rng.integers(30, 90))
        colour = tuple(int(c) for c in rng.choice([(230, 40, 40), (40, 160, 230), (250, 210, 30), (60, 190, 80)]))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0), width=3)
    return np.asarray(im)


def _stain(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The slide under a green stain (a large soft blob) with a few ink marks: a scanning artefact."""
    h, w = pixels.shape[:2]
    y, x = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.35, 0.5) * min(h, w)
    blob = np.clip(1.4 - np.hypot(y - cy, x - cx) / r, 0, 1)[..., None] * 0.55
    out = pixels * (1 - blob) + np.array([70, 170, 80]) * blob
    for _ in range(3):
        yy, xx = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 30))
        out[yy:yy + 3, xx:xx + 30] = (20, 20, 60)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_slide_demo(out: str | Path, *, seed: int = 0) -> Path:
    """Write the slide demo to OUT/competition (answers.csv and defects.csv beside it); return that folder."""
    from sklearn.datasets import load_digits

    from kitlib.files import write_csv

    out = Path(out)
    competition = out / "competition"
    if competition.exists():
        shutil.rmtree(competition)
    rng = np.random.default_rng(seed)
    digits = load_digits()
    split = {"train": [], "test": []}  # per class: the 8x8 scans a split draws from (no scan in both)
    for digit in SLIDE_DIGITS:
        members = rng.permutation(np.flatnonzero(digits.target == digit))
        split["train"].append(digits.images[members[40:]])
        split["test"].append(digits.images[members[:40]])
    rows: dict[str, list] = {}
    defects = []
    for part, count in SLIDE_COUNTS.items():
        folder = competition / f"{part}_data"
        folder.mkdir(parents=True)
        labels = np.repeat(np.arange(len(SLIDE_CLASSES)), np.round(np.array(SLIDE_SHARES) * count).astype(int))
        slides = [(*_slide(int(label), split[part], rng), SLIDE_CLASSES[label]) for label in rng.permutation(labels)]
        if part == "train":
            slides, defects = _plant_junk(slides, rng)
        rows[part] = []
        for i, (pixels, mask, label) in enumerate(slides):
            Image.fromarray(pixels).save(folder / f"img_{i:04d}.png", compress_level=1)  # 4x faster to write
            Image.fromarray(mask).save(folder / f"mask_{i:04d}.png")
            rows[part].append([f"img_{i:04d}.png", label])
    write_csv(competition / "train_labels.csv", ["sample_index", "label"], rows["train"])
    write_csv(competition / "sample_submission.csv", ["sample_index", "label"],
              [[name, SLIDE_CLASSES[0]] for name, _ in rows["test"]])
    write_csv(out / "answers.csv", ["sample_index", "label"], rows["test"])
    write_csv(out / "defects.csv", ["sample_index", "defect", "true_label", "twin"],
              [[f"img_{i:04d}.png", kind, true, "" if twin is None else f"img_{twin:04d}.png"]
               for i, kind, true, twin in defects])
    return competition


def _plant_junk(slides: list, rng: np.random.Generator) -> tuple[list, list]:
    """The course's planted junk, in place of some slides: (slides, [(row, defect, true label, twin row)])."""
    picks = iter(rng.permutation(len(slides)))
    defects = []
    shared = np.zeros((208, 208), np.uint8)  # one and the same mask file for every cartoon
    shared[40:170, 30:180] = 255
    for _ in range(SLIDE_JUNK["cartoon"]):
        i = next(picks)
        slides[i] = (_cartoon(rng), shared, slides[i][2])
        defects.append((i, "cartoon", "", None))
    for _ in range(SLIDE_JUNK["stained_duplicate"]):
        i, twin = next(picks), next(picks)
        pixels, mask, label = slides[twin]
        other = SLIDE_CLASSES[(SLIDE_CLASSES.index(label) + 1 + int(rng.integers(len(SLIDE_CLASSES) - 1)))
                              % len(SLIDE_CLASSES)]
        slides[i] = (_stain(pixels, rng), mask, other)  # filed under another label than its twin
        defects.append((i, "stained_duplicate", label, twin))
    for _ in range(SLIDE_JUNK["blank"]):
        i = next(picks)
        pixels, mask, label = slides[i]
        slides[i] = (np.full_like(pixels, rng.integers(180, 240, 3).astype(np.uint8)), mask, label)
        defects.append((i, "blank", label, None))
    return slides, defects


# --------------------------------------------------------------------------------------------- in the cache

WORDS = {"demo": "slides", "demo-slides": "slides", "demo-images": "images"}
"""What DATA may say instead of a folder: the words of the embedded demos, and their kinds."""


def resolve(data: str | Path) -> Path:
    """The folder `data` names; a demo word (WORDS) with no such folder here means that demo, in the cache."""
    if str(data) in WORDS and not Path(data).exists():
        return demo_root(WORDS[str(data)])
    return Path(data).expanduser()


def write_kind(out: str | Path, kind: str = "slides", *, seed: int = 0) -> Path:
    """Write the demo of `kind` ('slides' or 'images') to OUT/competition; return that folder."""
    if kind not in KINDS:
        raise KitError(f"demo kind {kind!r}: choose one of {', '.join(KINDS)}.")
    return write_slide_demo(out, seed=seed) if kind == "slides" else write_demo(out, seed=seed)


def demo_root(kind: str = "slides") -> Path:
    """The demo competition of `kind` in the kit's cache, written on first use (what DATA='demo' means)."""
    if kind not in KINDS:
        raise KitError(f"demo kind {kind!r}: choose one of {', '.join(KINDS)}.")
    version = f"v{DEMO_VERSION}" if kind == "images" else f"slides-v{SLIDES_VERSION}"
    out = cache_dir("demo") / version
    if not out.exists():
        tmp = out.with_name(f"{out.name}.partial{os.getpid()}")
        write_kind(tmp, kind)
        tmp.rename(out)  # atomic: a half-written demo is never mistaken for a finished one
    return out / "competition"
