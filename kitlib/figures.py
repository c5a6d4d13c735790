"""What every figure of the kit shares: saving it as a PNG for the report, and fitting long class names."""

from __future__ import annotations

from pathlib import Path


def shorten(name: str, width: int) -> str:
    """`name` cut to `width` characters with an ellipsis (long class names in figures and summaries)."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def save_figure(fig, path: str | Path, *, dpi: int = 110, **options) -> Path:
    """Save a matplotlib Figure as PNG at `path` (its folder created), release it, and return the path.

    `options` go to Figure.savefig (e.g. bbox_inches="tight"). Figures made with pyplot are closed,
    so a notebook that draws many does not keep them all in memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **options)
    import matplotlib.pyplot as plt

    plt.close(fig)  # a no-op for a Figure pyplot never managed
    return path
