"""What a sample looks like in the audit's figures and the review: captions, grids, thumbnails with mask outlines.

    plot_top_losses(table, data, "images/top_losses.png")   # a captioned grid PNG (suspects, losses, flattest)
    card_png(pixels, mask, size=112)                         # a review card's thumbnail, mask outlined
    view_png("train_data/img_0001.png", "train_data/mask_0001.png", longest=1024)  # the file, readable size
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from kitlib.data.images import open_image, oriented_size, upright, upright_like
from kitlib.errors import KitError
from kitlib.figures import save_figure, shorten

KNOWN_COLUMNS = {"sample_index", "label", "given_label", "predicted", "p_label", "p_pred", "loss", "issue", "score",
                 "suggested_label", "pixel_std"}
"""Columns a caption already shows in its own words; any other column of the table is shown as `name: value`
(e.g. a duplicate's `twin`, a shared mask's `group`)."""
ENLARGE_TO = 512  # px: how far the viewer enlarges a small image (by whole pixels)
OUTLINE = (0, 255, 0)  # the mask outline's colour: green shows on digits' paper and on stained tissue alike


def rows_of(ids, data) -> list[int]:
    """The rows of `data.images` holding the samples `ids`; KitError naming those that are not there."""
    row = {name: i for i, name in enumerate(data.ids)}
    missing = [s for s in ids if s not in row]
    if missing:
        raise KitError(f"samples {missing[:5]} are not in the decoded data: prepare it from the same competition "
                       "(and without the decisions that dropped them).")
    return [row[s] for s in ids]


def sample_pixels(table: pd.DataFrame, data) -> np.ndarray:
    """(len(table), H, W, 3) uint8 pixels of the table's samples, looked up by sample_index in `data`."""
    return data.images[rows_of(list(table["sample_index"]), data)].permute(0, 2, 3, 1).numpy()


def first_text(row: pd.Series, *columns: str) -> str | None:
    """The first of `columns` holding a non-empty string (a concatenated table leaves NaN in the others)."""
    return next((row[c] for c in columns if isinstance(row.get(c), str) and row[c]), None)


def caption(row: pd.Series) -> str:
    """What a grid shows under an image: its id and label, and the prediction, loss or flatness when known."""
    label = first_text(row, "label", "given_label")  # a loss table, or the audit's suspects
    lines = [shorten(str(row["sample_index"]), 22), f"label: {shorten(str(label), 22)}"]
    if isinstance(row.get("predicted"), str):
        lines.append(f"pred: {shorten(row['predicted'], 22)} ({row['p_pred']:.2f})")
        lines.append(f"loss {row['loss']:.2f}, p(label) {row['p_label']:.2f}")
    if isinstance(row.get("issue"), str):
        lines.append(f"{row['issue']} {row['score']:.2f}")
        if first_text(row, "suggested_label"):
            lines.append(f"suggested: {shorten(str(row['suggested_label']), 18)}")
    if pd.notna(row.get("pixel_std", np.nan)):
        lines.append(f"pixel std {row['pixel_std']:.3f}")
    lines += [f"{name}: {value}" for name, value in extra_values(row)]
    return "\n".join(lines)


def extra_values(row: pd.Series) -> list[tuple[str, str]]:
    """(column, value as text) for the row's columns outside KNOWN_COLUMNS that hold something (NaN and '' skipped)."""
    found = []
    for name, value in row.items():
        if name in KNOWN_COLUMNS or (value == "" if isinstance(value, str) else pd.isna(value)):
            continue
        text = f"{value:.3g}" if isinstance(value, (float, np.floating)) else str(value)
        found.append((str(name), shorten(text, 24)))
    return found


def plot_top_losses(table: pd.DataFrame, data, path: str | Path = "images/top_losses.png", *,
                    title: str | None = None, columns: int = 6) -> Path:
    """A grid PNG of the table's images (top_losses or flattest), each captioned; return its path."""
    if len(table) == 0:
        raise KitError("the table is empty: nothing to plot.")
    pixels = sample_pixels(table, data)
    rows = -(-len(table) // columns)
    fig = Figure(figsize=(columns * 2.1, rows * 2.7), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, (_, row) in zip(axes, pixels, table.iterrows()):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption(row), fontsize=7, loc="left")
    kind = "highest validation losses, worst first" if "loss" in table else "flattest images, flattest first"
    fig.suptitle(title or f"The {len(table)} {kind}")
    return save_figure(fig, path, dpi=100)


def plot_suspects(suspects: pd.DataFrame, data, path: Path, k: int = 36) -> Path | None:
    """A captioned grid PNG of the `k` worst suspects (None when there are none)."""
    if len(suspects) == 0:
        return None
    table = suspects.head(k).rename(columns={"given_label": "label"})
    title = f"Audit: the {len(table)} most certain of {len(suspects)} suspects"
    return plot_top_losses(table, data, path, title=title)


# --------------------------------------------------------------------------------------------- review images

def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: the border of a mask (nonzero = inside), `width` px thick, inside it; the frame's edges count."""
    inside = np.asarray(mask) > 0
    core = inside
    for _ in range(max(1, width)):
        padded = np.pad(core, 1, constant_values=False)
        core = core & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~core


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def card_png(image: np.ndarray, mask: np.ndarray | None = None, size: int = 112) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image enlarged by whole pixels (nearest) to about `size` px, mask outlined.

    `mask`: (H, W), nonzero inside, or None. The outline is drawn at the enlarged size, one pixel wide.
    """
    scale = max(1, size // max(image.shape[:2]))
    big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    if mask is not None:
        big = big.copy()
        big[outline(np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1))] = OUTLINE
    return png_bytes(big)


def view_png(image_path: str | Path, mask_path: str | Path | None = None, *,
             longest: int = 1024) -> tuple[bytes, tuple[int, int]]:
    """The image file at a readable size, its mask file's outline drawn on: (PNG bytes, the file's (width, height)).

    Large images (slides) are shrunk to `longest` px on their longest side; small ones are enlarged
    by whole pixels up to ENLARGE_TO px (or `longest`, when smaller). Both files are turned upright by
    their EXIF orientation (the mask as kitlib.data.images.upright_like says). KitError for a missing or
    unreadable file (kitlib.data.images.open_image).
    """
    mask = None
    with open_image(image_path) as im:
        size = oriented_size(im)
        if mask_path is not None:
            with open_image(mask_path) as m:
                mask = upright_like(m, im).convert("L")  # before draft() changes the image's size
        im.draft("RGB", (longest, longest))  # JPEG: decode at a reduced scale (a no-op for PNG)
        picture = upright(im).convert("RGB")
    factor = longest / max(picture.size)
    if factor < 1:
        shown = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
        picture = picture.resize(shown, Image.BOX)
    else:
        whole = max(1, min(longest, ENLARGE_TO) // max(picture.size))
        picture = picture.resize((picture.width * whole, picture.height * whole), Image.NEAREST)
    pixels = np.asarray(picture).copy()
    if mask is not None:
        mask = np.asarray(mask.resize(picture.size, Image.NEAREST))
        pixels[outline(mask, width=max(1, max(picture.size) // 400))] = OUTLINE
    return png_bytes(pixels), size
