"""Exploratory figures for the report: class balance, samples, sizes, colour, train vs test."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files for the report; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from kitlib.data.cache import decode_table  # noqa: E402
from kitlib.data.dataset import AUTO_DECODE_CAP  # noqa: E402
from kitlib.data.images import image_size, open_image, upright, upright_like  # noqa: E402
from kitlib.data.layouts import Competition  # noqa: E402
from kitlib.data.masks import choose_masks  # noqa: E402
from kitlib.data.tiles import TileSpec, build_tiles  # noqa: E402
from kitlib.progress import progress_bar  # noqa: E402
from kitlib.runtime import pick_device  # noqa: E402
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
    for path in progress_bar(table["image"], desc="reading image sizes", unit="img", leave=False,
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


def plot_mask_coverage(train: np.ndarray, test: np.ndarray | None, path: Path) -> Path:
    """Histogram of the share of each image its mask covers, train vs test (images without a mask count as 0)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for values, name in [(train, "train"), (test, "test")]:
        if values is not None and len(values):
            ax.hist(values, bins=np.linspace(0, 1, 41), alpha=0.6, label=f"{name} (median {np.median(values):.2f}, "
                    f"{(values == 0).mean():.0%} empty)")
    ax.set_xlabel("share of the image inside its mask")
    ax.set_ylabel("images")
    ax.set_title("Mask coverage: how much of each image is marked")
    ax.legend()
    return _save(fig, path)


def _coverage(table: pd.DataFrame, progress: bool) -> np.ndarray:
    """(N,) share of each image inside its mask (0 without one), from masks decoded at 64 px (squashed)."""
    decoded = decode_table(table, size=64, fit="squash", progress=progress)
    if decoded.masks is None:
        return np.zeros(len(table))
    return (decoded.masks.flatten(1) > 0).float().mean(1).numpy()


def _outline(ax, mask: np.ndarray, color: str = "lime") -> None:
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=color, linewidths=0.8)


def plot_tiles(competition: Competition, spec: TileSpec, path: Path, *, per_class: int = 2,
               shown: int = 5, progress: bool = False) -> Path:
    """The tiles of a few slides per class: each slide (mask outlined, fixed tiles boxed) beside its first tiles."""
    samples = competition.samples[competition.samples["mask"].notna()]
    picked = pd.concat([samples[samples["label"] == c].head(per_class) for c in competition.classes[:GRID_CLASSES // 2]])
    tiles = build_tiles(picked["image"], picked["mask"], spec, progress=progress)
    fig = plt.figure(figsize=(2.4 + 1.2 * shown, 2.2 * len(picked)))
    grid = fig.add_gridspec(len(picked), shown + 2)
    for row, (n, (_, sample)) in enumerate(zip(range(len(picked)), picked.iterrows())):
        ax = fig.add_subplot(grid[row, :2])
        with open_image(sample["image"]) as im, open_image(sample["mask"]) as m:
            picture = upright(im).convert("RGB")
            ax.imshow(np.asarray(picture))
            mask = upright_like(m, im).convert("L")  # stretched onto its image if another size, as the tiles are
            _outline(ax, np.asarray(mask.resize(picture.size, Image.NEAREST) if mask.size != picture.size else mask) > 0)
        rows = tiles.tiles_of(torch.tensor([n]))
        scale = 1 / spec.scale
        for piece, y, x in tiles.grid[rows].tolist():
            if spec.mode == "tiles":  # the piece's corner in the image, at native resolution
                y0, x0 = tiles.origins[piece]
                ax.add_patch(plt.Rectangle(((x0 + x) * scale, (y0 + y) * scale), spec.size * scale,
                                           spec.size * scale, fill=False, edgecolor="yellow", linewidth=0.7))
        ax.set_title(f"{shorten(sample['label'], 28)}: {len(rows)} tiles ({tiles.status[n]})", fontsize=8, loc="left")
        ax.axis("off")
        for col, image in enumerate(tiles.cut(rows[:shown]).permute(0, 2, 3, 1).numpy()):
            tile_ax = fig.add_subplot(grid[row, 2 + col])
            tile_ax.imshow(image)
            tile_ax.axis("off")
    fig.suptitle(f"{spec.mode} of {spec.size} px at {spec.scale:g}x native resolution: slides (mask outlined, "
                 "fixed tiles boxed) and their first tiles", y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    return save_figure(fig, path, bbox_inches="tight")


def run_eda(competition: Competition, out_dir: str | Path = "images", *, size: int | None = None,
            masks: str = "auto", tile_size: int | None = None, progress: bool = True) -> list[Path]:
    """Write every EDA figure as PNG into `out_dir` and return their paths.

    Images are decoded at `size` px (default: their most common size, at most 128) with padding,
    from a random subset of at most 5,000 per split. With masks: their coverage, and (when `masks`
    resolves to tiles or crop, see kitlib.data.masks) the tiles of a few slides per class, cut at
    `tile_size` px (default: the training size on this device).
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
    mask_pixels = decoded.masks.numpy() if decoded.masks is not None else None
    test_images = decode_table(test, size=size, fit="pad", progress=progress).images.numpy() if len(test) else None
    paths = [
        plot_class_counts(competition, out / "eda_class_counts.png"),
        plot_samples(competition, images, mask_pixels, train, out / "eda_samples.png"),
        plot_sizes(train_sizes, _sizes(test, progress) if len(test) else np.zeros((0, 2)), out / "eda_sizes.png"),
        plot_channels(images, test_images, out / "eda_channels.png"),
        plot_brightness(images, test_images, out / "eda_train_vs_test.png"),
    ]
    if mask_pixels is not None and masks != "ignore":
        coverage = [_coverage(table, progress) if len(table) else None for table in (train, test)]
        paths.append(plot_mask_coverage(coverage[0], coverage[1], out / "eda_mask_coverage.png"))
        tile_size = tile_size or AUTO_DECODE_CAP.get(pick_device().type, 64)
        mode, reason = choose_masks(masks, competition, tile_size)
        print(f"masks: {mode}: {reason}")
        if mode in ("tiles", "crop"):
            paths.append(plot_tiles(competition, TileSpec(mode=mode, size=tile_size), out / "eda_tiles.png"))
    print(competition.summary())
    print(f"most common image sizes (w, h) of {len(train)} training images: {common}")
    return paths
