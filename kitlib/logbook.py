"""The logbook of training runs: per-epoch metrics as CSV, curves as PNG, a table of all runs.

    write_metrics(run_dir, history)                # RUN/metrics.csv (+ per_class_f1.csv), each epoch
    plot_tile_votes(tiles, samples, probs, ...)   # RUN/tile_votes.png: which tiles voted for which class
    plot_curves(run_dir, title="ResNet-small, medium aug")   # RUN/curves.png + images/<run>_curves.png
    runs_table("runs")                             # one row per run: differing config keys, best scores
    plot_runs("runs", "images/runs_f1.png")        # every run's validation macro-F1 overlaid
    with TensorBoard(run_dir) as tb: tb.log(row)   # RUN/tensorboard/ event files (if tensorboard is installed)

metrics.csv is rewritten whole and atomically each epoch, so a run killed mid-epoch (a Colab
disconnect) leaves the previous epoch's file intact. Numbers are written with 6 significant
digits; a missing value (no validation) is an empty cell, which pandas reads as NaN.
"""

from __future__ import annotations

import json
import math
import numbers
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kitlib import rundir
from kitlib.errors import KitError
from kitlib.figures import save_figure, shorten
from kitlib.files import write_csv

# metrics.csv columns, in this order; other keys of a history row follow them in first-seen order
COLUMNS = ["epoch", "phase", "step", "seconds", "lr", "strength", "train_loss", "train_images_per_s",
           "val_loss", "val_accuracy", "val_macro_f1"]
PER_CLASS = "per_class_f1"  # the history key whose (K,) list goes to per_class_f1.csv instead


def _cell(value) -> str:
    """One CSV cell: integers as they are, other numbers to 6 significant digits, NaN/None as ''."""
    if value is None:
        return ""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # NumPy / torch scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return "" if math.isnan(value) else f"{float(value):.6g}"


def _write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    """Write a CSV of formatted cells (standard quoting, '\\n' line ends) by temporary file and rename."""
    return write_csv(path, header, [[_cell(v) for v in row] for row in rows])


def write_metrics(run_dir: str | Path, history: Sequence[dict], *, classes: Sequence[str] | None = None) -> Path:
    """Rewrite RUN/metrics.csv (one row per epoch) and, if rows have per_class_f1, RUN/per_class_f1.csv."""
    run_dir = Path(run_dir)
    extra = [k for row in history for k in row if k not in COLUMNS and k != PER_CLASS]
    header = COLUMNS + list(dict.fromkeys(extra))
    path = _write_rows(run_dir / rundir.METRICS, header, [[row.get(k) for k in header] for row in history])
    per_class = [row for row in history if row.get(PER_CLASS) is not None]
    if per_class:
        k = len(per_class[0][PER_CLASS])
        names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
        if any(len(row[PER_CLASS]) != len(names) for row in per_class):
            raise KitError(f"per_class_f1 has {sorted({len(r[PER_CLASS]) for r in per_class})} values per epoch "
                           f"for {len(names)} classes: give one F1 per class, in the classes' order.")
        _write_rows(run_dir / rundir.PER_CLASS_F1, ["epoch", *names],
                    [[row.get("epoch"), *row[PER_CLASS]] for row in per_class])
    return path


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """RUN/metrics.csv as a DataFrame (empty cells -> NaN); KitError when the run has none."""
    path = Path(run_dir) / rundir.METRICS
    if not path.is_file():
        raise KitError(f"{path}: not found. Pass a run folder written by `python -m kitlib train`.")
    metrics = pd.read_csv(path)
    if metrics.empty or "epoch" not in metrics:
        raise KitError(f"{path}: no epochs logged yet (or no 'epoch' column).")
    return metrics


def _best(metrics: pd.DataFrame) -> pd.Series | None:
    """The row of the best validation macro-F1 (the first when tied), None without validation."""
    f1 = metrics.get("val_macro_f1")
    if f1 is None or f1.isna().all():
        return None
    return metrics.loc[f1.idxmax()]


def _has(metrics: pd.DataFrame, column: str) -> bool:
    return column in metrics and metrics[column].notna().any()


def plot_curves(run_dir: str | Path, *, title: str, images_dir: str | Path | None = "images") -> list[Path]:
    """Loss, accuracy, macro-F1 and LR (with augmentation strength) per epoch as a 2x2 PNG; return the paths.

    Phase changes (head -> full) are dashed lines, the best validation epoch a dotted green line.
    Saved as RUN/curves.png and, unless `images_dir` is None, <images_dir>/<run name>_curves.png.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    epoch = metrics["epoch"]
    style = {"marker": "o", "markersize": 3} if len(metrics) <= 40 else {}
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    panels = (("loss", "cross-entropy loss"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
    best = _best(metrics)
    for ax, (name, label) in zip(axes, panels):
        ax.set_title(label, fontsize=10)
        for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
            if _has(metrics, f"{split}_{name}"):
                ax.plot(epoch, metrics[f"{split}_{name}"], color=colour, label=split, **style)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged (no validation?)", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
    lr_ax = axes[3]
    if _has(metrics, "lr"):
        lr_ax.plot(epoch, metrics["lr"], color="tab:purple", label="learning rate", **style)
        lr = metrics["lr"].dropna()
        if (lr > 0).all() and lr.max() > 20 * lr.min():
            lr_ax.set_yscale("log")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("learning rate" + (" and augmentation strength" if _has(metrics, "strength") else ""),
                    fontsize=10)
    if _has(metrics, "strength"):
        twin = lr_ax.twinx()
        twin.plot(epoch, metrics["strength"], color="tab:gray", linestyle="--", label="aug strength", **style)
        twin.set_ylabel("augmentation strength")
        twin.set_ylim(-0.05, 1.05)
        lr_ax.legend(handles=lr_ax.lines + twin.lines, fontsize=8, loc="center right", framealpha=0.9)
    if best is not None:  # a star on the best epoch's macro-F1, a dotted line through every panel
        axes[2].plot(best["epoch"], best["val_macro_f1"], "*", color="tab:green", markersize=12,
                     label=f"best {best['val_macro_f1']:.4f} (epoch {int(best['epoch'])})")
    for ax in axes:
        if "phase" in metrics:  # each phase named where it starts, a dashed line where it changes
            starts = metrics.index[metrics["phase"].ne(metrics["phase"].shift())]
            for i in starts:
                if i > 0:
                    ax.axvline(epoch[i] - 0.5, color="black", linestyle="--", linewidth=0.8)
                ax.text(epoch[i] - (0.5 if i > 0 else 0), 0.99, f" {metrics['phase'][i]}", va="top", fontsize=8,
                        transform=ax.get_xaxis_transform())
        if best is not None:
            ax.axvline(best["epoch"], color="tab:green", linestyle=":", linewidth=1.2)
        ax.grid(alpha=0.3)
        if ax.lines and ax is not lr_ax:
            ax.legend(fontsize=8, loc="best")
    for ax in axes[2:]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # shared x: both rows get whole epochs
    fig.suptitle(title)
    return _with_copy(save_figure(fig, run_dir / rundir.CURVES), images_dir)


def _with_copy(path: Path, images_dir: str | Path | None) -> list[Path]:
    """[RUN/<figure>.png] and, unless `images_dir` is None, its copy <images_dir>/<run name>_<figure>.png."""
    if images_dir is None:
        return [path]
    copy = Path(images_dir) / f"{path.parent.resolve().name}_{path.name}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    return [path, Path(shutil.copyfile(path, copy))]


def plot_tile_votes(tiles, samples, tile_probs, classes: Sequence[str], truth: Sequence[int], path: str | Path, *,
                    images_dir: str | Path | None = None, title: str = "") -> list[Path]:
    """Slides with each fixed tile filled in the colour of the class it voted for: which regions drove a prediction.

    `tiles`: kitlib.data.tiles.Tiles; `samples`: (n,) image rows to draw (at most 4 fit one figure);
    `tile_probs`: (M', K) probabilities of their fixed tiles, image by image (Tiles.tiles_of order);
    `truth`: (n,) true class indices. Saved at `path` (RUN/tile_votes.png) and, unless `images_dir` is
    None, as <images_dir>/<run name>_tile_votes.png.
    """
    import matplotlib.colors as mcolors
    import matplotlib.patches as patches
    import numpy as np
    import torch

    from kitlib.data.images import open_image, upright

    samples = torch.as_tensor(samples)
    palette = list(mcolors.TABLEAU_COLORS.values())
    colour = {k: palette[k % len(palette)] for k in range(len(classes))}
    fig = Figure(figsize=(4.2 * len(samples), 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(samples)))
    counts = tiles.counts()[samples].tolist()
    votes = torch.as_tensor(tile_probs).argmax(1).tolist()
    start, scale = 0, 1 / tiles.spec.scale
    for ax, sample, count, true in zip(axes, samples.tolist(), counts, truth):
        with open_image(tiles.sources[sample]) as im:
            ax.imshow(np.asarray(upright(im).convert("RGB")))
        mine = votes[start:start + count]
        rows = tiles.tiles_of(torch.tensor([sample]))
        for (piece, y, x), vote in zip(tiles.grid[rows].tolist(), mine):
            y0, x0 = tiles.origins[piece].tolist()
            side = tiles.spec.size * scale if tiles.spec.mode == "tiles" else None
            if side is None:  # a crop: its region's box is not kept; mark its corner
                ax.plot((x0 + 2) * scale, (y0 + 2) * scale, "s", color=colour[vote], markersize=8)
                continue
            ax.add_patch(patches.Rectangle(((x0 + x) * scale, (y0 + y) * scale), side, side, linewidth=1.2,
                                           edgecolor=colour[vote], facecolor=colour[vote], alpha=0.3))
        predicted = max(set(mine), key=mine.count) if mine else true
        ax.set_title(f"true: {shorten(classes[true], 24)}\nmost tiles: {shorten(classes[predicted], 24)} "
                     f"({mine.count(predicted)} of {count})", fontsize=8, loc="left")
        ax.axis("off")
        start += count
    fig.legend(handles=[patches.Patch(color=colour[k], label=shorten(c, 24)) for k, c in enumerate(classes)],
               loc="outside lower center", ncol=min(len(classes), 5), fontsize=8)
    fig.suptitle(title or "Tiles coloured by the class they voted for")
    return _with_copy(save_figure(fig, path), images_dir)


def _flatten(config: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and other non-scalars become their JSON text."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            simple = value is None or isinstance(value, (str, bool, int, float))
            flat[f"{prefix}{key}"] = value if simple else json.dumps(value, default=str)
    return flat


def find_runs(folder: str | Path) -> list[Path]:
    """Every run folder under `folder` (itself included): those holding config.json and metrics.csv."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: no such folder. Pass the folder your runs are in (e.g. runs/).")
    return sorted(p.parent for p in folder.rglob(rundir.CONFIG) if rundir.is_run(p.parent))


def _run_name(run: Path, folder: Path) -> str:
    name = run.relative_to(folder).as_posix()
    return run.resolve().name if name == "." else name


def runs_table(folder: str | Path, *, out: str | Path | None = None) -> pd.DataFrame:
    """One row per run under `folder`: the config keys whose values differ, best validation scores, time.

    Config keys that only name each run's own folder (like an output path) are left out: the `run`
    column says that. Sorted best macro-F1 first; written to `out` (CSV) only when given.
    """
    folder = Path(folder)
    runs = find_runs(folder)
    if not runs:
        raise KitError(f"{folder}: no run folders (config.json + metrics.csv) under it.")
    configs, rows = [], []
    for run in runs:
        configs.append(_flatten(rundir.read_config(run)))
        metrics = read_metrics(run)
        best = _best(metrics)
        rows.append({"best_val_macro_f1": np.nan if best is None else best["val_macro_f1"],
                     "val_accuracy": np.nan if best is None else best.get("val_accuracy", np.nan),
                     "best_epoch": np.nan if best is None else int(best["epoch"]),
                     "epochs": int(metrics["epoch"].max()),
                     "minutes": metrics["seconds"].max() / 60 if "seconds" in metrics else np.nan})
    keys = list(dict.fromkeys(k for config in configs for k in config))
    missing = object()

    def differs(key: str) -> bool:
        values = [config.get(key, missing) for config in configs]
        own_folder = all(isinstance(v, str) and Path(v).name == run.name for v, run in zip(values, runs))
        return len({json.dumps(v, default=str) if v is not missing else "\0" for v in values}) > 1 and not own_folder

    changed = [k for k in keys if differs(k)]
    table = pd.DataFrame({"run": [_run_name(run, folder) for run in runs],
                          **{k: [config.get(k) for config in configs] for k in changed}})
    table = pd.concat([table, pd.DataFrame(rows)], axis=1)
    table = table.sort_values("best_val_macro_f1", ascending=False, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False, float_format="%.6g")
    return table


def plot_runs(folder: str | Path, path: str | Path) -> Path:
    """Every run's validation macro-F1 per epoch in one figure (legend: run name and best score)."""
    folder, path = Path(folder), Path(path)
    runs = find_runs(folder)
    if not runs:
        raise KitError(f"{folder}: no run folders (config.json + metrics.csv) under it.")
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    curves = [(run, read_metrics(run)) for run in runs]
    curves = [(run, metrics, _best(metrics)) for run, metrics in curves if _best(metrics) is not None]
    for run, metrics, best in sorted(curves, key=lambda c: -c[2]["val_macro_f1"]):  # legend: best run first
        ax.plot(metrics["epoch"], metrics["val_macro_f1"], marker="o", markersize=3,
                label=f"{_run_name(run, folder)} (best {best['val_macro_f1']:.4f})")
    if not ax.lines:
        raise KitError(f"{folder}: none of its {len(runs)} runs logged a validation macro-F1.")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation macro-F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"validation macro-F1 of {len(ax.lines)} run(s) in {folder.resolve().name}")
    return save_figure(fig, path)


class TensorBoard:
    """Scalars of each history row as TensorBoard events in RUN/tensorboard; a no-op without tensorboard."""

    def __init__(self, run_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: the CSV and PNGs are the logbook
            self.writer = None
            return
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / rundir.TENSORBOARD))

    @property
    def enabled(self) -> bool:
        """Whether event files are being written."""
        return self.writer is not None

    def log(self, row: dict) -> None:
        """Every finite number of `row` at step row['step']; 'val_loss' is logged as 'loss/val'."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key in ("step", PER_CLASS) or isinstance(value, (bool, str)) or value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                split, _, name = key.partition("_")
                tag = f"{name}/{split}" if split in ("train", "val") and name else key
                self.writer.add_scalar(tag, value, int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "TensorBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
