"""Exploratory figures for the report: class balance, samples, sizes, colour, train vs test."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files for the report; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from kitlib.data.cache import decode_table  # noqa: E402
from kitlib.data.images import image_size  # noqa: E402
from kitlib.data.layouts import Competition  # noqa: E402
from kitlib.figures import save_figure, shorten  # noqa: E402

MAX_IMAGES = 5000  # per split: enough for every statistic here, and fast on any data set
GRID_CLASSES, GRID_PER_CLASS = 12, 8


def _subsample(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    return table if len(table) <= MAX_IMAGES else table.sample(MAX_IMAGES, random_state=seed)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)


def plot_class_counts(competition: Competition, path: Path) -> Path:
    """Horizontal bars of samples per class (every class up to 60, else the 30 rarest and 30 commonest)."""
    counts = competition.samples[competition.samples["split"] == "train"]["label"].value_counts()
    counts = counts.reindex(competition.classes, fill_value=0).sort_values()
    if len(counts) > 60:
        counts = pd.concat([counts.head(30), counts.tail(30)])
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(counts) + 1.5))
    ax.barh([shorten(c, 28) for c in counts.index], counts.values, color="tab:blue")
    ratio = counts.max() / max(counts.min(), 1)
    ax.set_title(f"Training samples per class ({len(competition.classes)} classes, "
                 f"largest/smallest = {ratio:.1f})")
    ax.set_xlabel("samples")
    return _save(fig, path)


def plot_samples(competition: Competition, images: np.ndarray, masks: np.ndarray | None,
                 table: pd.DataFrame, path: Path) -> Path:
    """A grid: one row per class, its first samples, masks outlined in red."""
    classes = competition.classes[:GRID_CLASSES]
    fig, axes = plt.subplots(len(classes), GRID_PER_CLASS, squeeze=False,
                             figsize=(GRID_PER_CLASS * 1.2, len(classes) * 1.3))
    labels = table["label"].to_numpy()
    for row, name in zip(axes, classes):
        members = np.flatnonzero(labels == name)[:GRID_PER_CLASS]
        for ax, i in zip(row, list(members) + [None] * GRID_PER_CLASS):
            ax.axis("off")
            if i is None:
                continue
            ax.imshow(images[i].transpose(1, 2, 0))
            if masks is not None and masks[i].any():
                ax.contour(masks[i, 0] > 0, levels=[0.5], colors="red", linewidths=0.8)
        row[0].set_title(shorten(name, 40), fontsize=8, loc="left")
    shown = f"first {len(classes)} of {len(competition.classes)} classes" if len(classes) < len(competition.classes) else ""
    notes = ", ".join(n for n in (shown, "mask outlined" if masks is not None else "") if n)
    fig.suptitle("Training samples per class" + (f" ({notes})" if notes else ""))
    return _save(fig, path)


def _sizes(table: pd.DataFrame, progress: bool = True) -> np.ndarray:
    """(N, 2) width, height of each image as displayed (EXIF orientation applied), read from file headers only."""
    sizes = []
    for path in tqdm(table["image"], desc="reading image sizes", unit="img", leave=False,
                     disable=not progress):
        sizes.append(image_size(path))
    return np.array(sizes)


def plot_sizes(train_sizes: np.ndarray, test_sizes: np.ndarray, path: Path) -> Path:
    """Histograms of width, height and aspect ratio, train and test overlaid."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (title, f) in zip(axes, [("width (px)", lambda s: s[:, 0]), ("height (px)", lambda s: s[:, 1]),
                                     ("aspect ratio (w / h)", lambda s: s[:, 0] / s[:, 1])]):
        for sizes, name in [(train_sizes, "train"), (test_sizes, "test")]:
            if len(sizes):
                ax.hist(f(sizes), bins=30, alpha=0.6, label=name, density=True)
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Image sizes (from file headers)")
    return _save(fig, path)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in [0, 1] of (N, 3, H, W) uint8 images, computed in chunks."""
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for start in range(0, len(images), 1024):
        chunk = images[start:start + 1024].astype(np.float64) / 255.0  # (n, 3, H, W), one chunk only
        total += chunk.sum(axis=(0, 2, 3))
        squares += (chunk ** 2).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean ** 2, 0))


def plot_channels(train: np.ndarray, test: np.ndarray | None, path: Path) -> Path:
    """Bars of per-channel mean with std as error bars, train beside test."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for offset, (images, name) in [(-0.2, (train, "train")), (0.2, (test, "test"))]:
        if images is None or not len(images):
            continue
        mean, std = channel_stats(images)
        ax.bar(np.arange(3) + offset, mean, yerr=std, width=0.4, capsize=4, label=name)
        for x, m, s in zip(np.arange(3) + offset, mean, std):
            ax.text(x, 0.02, f"{m:.3f}\n±{s:.3f}", ha="center", fontsize=7, color="white")
    ax.set_xticks(range(3), ["red", "green", "blue"])
    ax.set_ylim(0, 1)
    ax.set_title("Per-channel mean ± std (pixels in [0, 1])")
    ax.legend()
    return _save(fig, path)


def plot_brightness(train: np.ndarray, test: np.ndarray | None, path: Path) -> Path:
    """Histogram of per-image mean brightness, train vs test: a shift here means a domain gap."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for images, name in [(train, "train"), (test, "test")]:
        if images is not None and len(images):
            brightness = images.reshape(len(images), -1).mean(axis=1) / 255.0
            ax.hist(brightness, bins=40, alpha=0.6, density=True,
                    label=f"{name} (mean {brightness.mean():.3f})")
    ax.set_xlabel("mean pixel value per image")
    ax.set_title("Brightness: train vs test")
    ax.legend()
    return _save(fig, path)


def run_eda(competition: Competition, out_dir: str | Path = "images", *, size: int | None = None,
            progress: bool = True) -> list[Path]:
    """Write every EDA figure as PNG into `out_dir` and return their paths.

    Images are decoded at `size` px (default: their most common size, at most 128) with padding,
    from a random subset of at most 5,000 per split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = _subsample(competition.samples[competition.samples["split"] == "train"]).reset_index(drop=True)
    test = _subsample(competition.test).reset_index(drop=True)
    train_sizes = _sizes(train, progress)
    common = Counter(map(tuple, train_sizes.tolist())).most_common(3)
    size = size or min(128, max(common[0][0]))
    decoded = decode_table(train, size=size, fit="pad", progress=progress)
    images = decoded.images.numpy()
    masks = decoded.masks.numpy() if decoded.masks is not None else None
    test_images = decode_table(test, size=size, fit="pad", progress=progress).images.numpy() if len(test) else None
    paths = [
        plot_class_counts(competition, out / "eda_class_counts.png"),
        plot_samples(competition, images, masks, train, out / "eda_samples.png"),
        plot_sizes(train_sizes, _sizes(test, progress) if len(test) else np.zeros((0, 2)), out / "eda_sizes.png"),
        plot_channels(images, test_images, out / "eda_channels.png"),
        plot_brightness(images, test_images, out / "eda_train_vs_test.png"),
    ]
    print(competition.summary())
    print(f"most common image sizes (w, h) of {len(train)} training images: {common}")
    return paths
