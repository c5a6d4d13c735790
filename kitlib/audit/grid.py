"""Captioned grids of samples: the audit's suspects, the highest losses, the flattest images (PNG for the report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kitlib.errors import KitError
from kitlib.figures import save_figure, shorten


def sample_pixels(table: pd.DataFrame, data) -> np.ndarray:
    """(len(table), H, W, 3) uint8 pixels of the table's samples, looked up by sample_index in `data`."""
    row = {name: i for i, name in enumerate(data.ids)}
    missing = [s for s in table["sample_index"] if s not in row]
    if missing:
        raise KitError(f"samples {missing[:5]} are not in the decoded data: prepare it from the same competition "
                       "(and without the decisions that dropped them).")
    return data.images[[row[s] for s in table["sample_index"]]].permute(0, 2, 3, 1).numpy()


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
    return "\n".join(lines)


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
