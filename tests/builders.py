"""Tiny competitions written into a temp folder, one per layout, for literal expectations."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, value: int = 128, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """A flat image of `value` (any PIL mode), in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode not in ("RGB", "RGBA") else (value,) * len(mode)).save(path)
    return path


def noise_png(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A random RGB image (w, h) = size saved as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_csv(path: Path, rows: list[list[str]], header=("sample_index", "label")) -> Path:
    """A CSV written with standard quoting."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


LABELS = ["HER2(+)", "Triple negative", "Luminal A", "rocking chair, rocker"]


def csv_competition(root: Path, *, with_extension: bool = True, masks: bool = True,
                    test: int = 3) -> Path:
    """8 training images (2 per label above), masks beside them, `test` test images, sample file."""
    rows = []
    for i in range(8):
        png(root / "train_data" / f"img_{i:04d}.png", value=10 * i)
        if masks:
            png(root / "train_data" / f"mask_{i:04d}.png", value=255, mode="L")
        rows.append([f"img_{i:04d}" + (".png" if with_extension else ""), LABELS[i % 4]])
    write_csv(root / "train_labels.csv", rows)
    names = []
    for i in range(test):
        png(root / "test_data" / f"img_{i:04d}.png", value=5 * i)
        names.append(f"img_{i:04d}" + (".png" if with_extension else ""))
    if test:
        # the sample file lists ids in its own order, which the submission must keep
        write_csv(root / "sample_submission.csv", [[n, LABELS[0]] for n in reversed(names)])
    return root


def imagefolder_competition(root: Path, *, labelled_test: bool = False) -> Path:
    """train/<class>/ with 3 classes x 2 images; test/ flat (or by class with answers)."""
    for c, name in enumerate(["cat", "dog", "rocking chair, rocker"]):
        for i in range(2):
            png(root / "train" / name / f"{i}.png", value=40 * c + i)
            if labelled_test:
                png(root / "test" / name / f"t{i}.png", value=40 * c)
    if not labelled_test:
        for i in range(4):
            png(root / "test" / f"t{i}.png")
    return root


def tinyimagenet_competition(root: Path) -> Path:
    """Two wnids with names from words.txt (one with commas), 2 train and 1 val image each."""
    wnids = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander"}
    (root).mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in wnids.items()) + "n00000001\tunused\n")
    lines = []
    for k, wnid in enumerate(wnids):
        for i in range(2):
            png(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", value=k)
        png(root / "val" / "images" / f"val_{k}.png", value=k)
        lines.append(f"val_{k}.png\t{wnid}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def snapshot(root: Path) -> dict[str, int]:
    """Every path under `root` with its modification time: proof nothing was written there."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


SLIDE_LABELS = ["HER2(+)", "Triple negative", "Luminal A", "Luminal B, HER2(-)"]


def pattern(kind: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8 texture of class `kind`: stripes across, stripes down, a checkerboard, dots."""
    y, x = np.mgrid[:size, :size]
    ink = [(y // 3) % 2 == 0, (x // 3) % 2 == 0, ((y // 4) + (x // 4)) % 2 == 0,
           ((y % 6) < 2) & ((x % 6) < 2)][kind % 4]
    out = np.full((size, size, 3), (235, 225, 235), np.uint8)
    out[ink] = (40, 20, 90)
    return out


def slide_competition(root: Path, *, per_class=(6, 5, 4, 3), test: int = 8, size=(150, 190), seed: int = 0,
                      tile: int = 24) -> Path:
    """Slides in the CSV layout: pink noise 'tissue', the class's texture in 1-2 masked regions of
    `tile` px, and one distractor of another class outside the mask; labels like the course's."""
    rng = np.random.default_rng(seed)
    (root / "train_data").mkdir(parents=True, exist_ok=True)
    (root / "test_data").mkdir(parents=True, exist_ok=True)

    def slide(label: int, folder: Path, number: int) -> str:
        h, w = size
        pixels = np.clip(rng.normal((200, 150, 180), 20, (h, w, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        spots = [(rng.integers(4, h - 2 * tile - 4), rng.integers(4, w // 2 - tile)) for _ in range(1 + number % 2)]
        for y, x in spots:
            pixels[y:y + tile, x:x + tile] = pattern(label, tile)
            mask[y:y + tile, x:x + tile] = 255
        other = (label + 1 + number % 3) % 4  # a distractor of another class, outside the mask
        y, x = rng.integers(4, h - tile - 4), rng.integers(w // 2 + 4, w - tile - 4)
        pixels[y:y + tile, x:x + tile] = pattern(other, tile)
        Image.fromarray(pixels).save(folder / f"img_{number:04d}.png")
        Image.fromarray(mask).save(folder / f"mask_{number:04d}.png")
        return f"img_{number:04d}.png"

    rows, number = [], 0
    for label, count in enumerate(per_class):
        for _ in range(count):
            rows.append([slide(label, root / "train_data", number), SLIDE_LABELS[label]])
            number += 1
    write_csv(root / "train_labels.csv", rows)
    answers = []
    for i in range(test):
        answers.append([slide(i % 4, root / "test_data", i), SLIDE_LABELS[i % 4]])
    write_csv(root / "sample_submission.csv", [[name, SLIDE_LABELS[0]] for name, _ in answers])
    write_csv(root.parent / f"{root.name}_answers.csv", answers)
    return root
