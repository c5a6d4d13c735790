"""The demo competition: a small CSV-layout challenge built from real images shipped with scikit-learn.

Handwritten digits (scikit-learn's 1,797 8x8 scans) are rendered as 32x32 colour PNGs with a mask
beside each, under class names with commas, parentheses and quotes (the label strings that break
naive CSV code). A few defects are injected for the audit to find: blank images, flipped labels,
foreign photos and exact duplicates. The test answers and the list of defects are written beside
the competition folder, never inside it, as a real competition would keep them.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from kitlib.runtime import cache_dir

CLASSES = ["zero (0)", "one, the loneliest", "two (a pair)", "three, a crowd", "four (IV)",
           "five, high", 'six "half a dozen"', "seven (lucky)", "eight, octo", "nine (IX), nein"]
SIZE = 32  # pixels per side of the rendered images
MARGIN = 4  # blank pixels around the digit
TEST_COUNT = 300
DEFECTS = {"blank": 8, "mislabeled": 30, "alien": 4, "duplicate": 3}  # injected into train
DEMO_VERSION = 3  # bump when the demo changes, so `demo_root()` rebuilds it


def render_digit(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An 8x8 digit (0..16) -> a (32, 32, 3) uint8 colour image and its (32, 32) uint8 mask."""
    inner = SIZE - 2 * MARGIN
    ink = np.asarray(Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize(
        (inner, inner), Image.BICUBIC), dtype=np.float32) / 255.0
    ink = np.pad(ink, MARGIN)  # (32, 32) in [0, 1]: the digit in the middle of its box, as on a form
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


def demo_root() -> Path:
    """The demo competition in the kit's cache, written on first use (what DATA='demo' means)."""
    out = cache_dir("demo") / f"v{DEMO_VERSION}"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.partial{os.getpid()}")
        write_demo(tmp)
        tmp.rename(out)  # atomic: a half-written demo is never mistaken for a finished one
    return out / "competition"
