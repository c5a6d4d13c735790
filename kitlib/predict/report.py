"""The evaluation report: how good the model is per class, what it confuses, and versus chance.

    evaluate_run("runs/a", out_dir="images/a_report")        # a run's best model on its validation split
    evaluate_oof(ids, labels, oof_probs, classes)             # out-of-fold predictions of the whole set
    evaluate_ensemble(["runs/a", "runs/b"], competition, "images/ensemble_report", tta="hflip")

`evaluate` takes true labels and predicted probabilities of a validation split (or out-of-fold
predictions over the whole training set) and returns a `Report` with macro-F1, accuracy, a
per-class table, the confusion matrix, the most-confused pairs and the random-guessing baseline,
and prints a short summary that says plainly when the model is no better than guessing. With an
`out_dir` it also writes `per_class.csv`, `confusion.png` and `report.txt` there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from kitlib import rundir
from kitlib.errors import KitError
from kitlib.files import read_csv_strings
from kitlib.figures import save_figure, shorten
from kitlib.metrics import absent_note, confusion, per_class_prf, random_baseline_f1
from kitlib.predict.ensemble import load_runs, predict_probs

FULL_NAMES_UP_TO = 30  # classes; beyond this the axes show "index short-name" and thin the ticks


@dataclass(frozen=True)
class Report:
    """The numbers of one evaluation and the files written for it."""

    macro_f1: float
    """Mean F1 over the classes that have samples here (all classes, as sklearn's macro average, when each
    has one); the summary names the classes left out."""
    accuracy: float
    """Share of samples predicted correctly."""
    per_class: pd.DataFrame
    """One row per class (index: class name): precision, recall, f1, support, predicted (count)."""
    confusion: np.ndarray
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    confused_pairs: pd.DataFrame
    """The largest off-diagonal cells: true, predicted, count, share (of the true class's samples)."""
    baseline: dict[str, float]
    """Macro-F1 of guessing over the same classes: 'uniform', 'prior', 'majority', 'best' (metrics.random_baseline_f1)."""
    summary: str
    """The printed text summary."""
    files: dict[str, Path] = field(default_factory=dict)
    """What was written: 'per_class', 'confusion', 'summary' -> path (empty without out_dir)."""

    def __str__(self) -> str:
        return self.summary


def _targets(y_true, classes: Sequence[str]) -> np.ndarray:
    """(N,) int64 class indices from indices or class names."""
    if isinstance(y_true, torch.Tensor):
        y_true = y_true.detach().cpu().numpy()
    array = np.asarray(y_true)
    if array.dtype.kind in "USO":  # class names -> indices
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in array if v not in index})
        if unknown:
            raise KitError(f"y_true holds {len(unknown)} label(s) not in classes: {unknown[:5]}. "
                           "Pass class indices, or names spelled exactly as in classes.")
        array = np.array([index[v] for v in array], dtype=np.int64)
    return array


def confused_pairs(conf: np.ndarray, classes: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The `top` most frequent mistakes: true, predicted, count, share of the true class's samples."""
    off = conf.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    support = conf.sum(axis=1)
    table = pd.DataFrame({"true": [classes[i] for i in rows], "predicted": [classes[j] for j in cols],
                          "count": off[rows, cols], "share": off[rows, cols] / support[rows]})
    table = table.sort_values(["count", "share"], ascending=False, kind="stable")
    return table.head(top).reset_index(drop=True)


def plot_confusion(conf: np.ndarray, classes: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Save counts and row-normalized confusion matrices side by side as a PNG; return the path."""
    k = len(classes)
    rows = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)  # (K, K) share of each true class
    side = float(np.clip(2.5 + 0.3 * k, 5, 16))  # inches per panel
    if k <= FULL_NAMES_UP_TO:
        ticks, names, size = np.arange(k), [shorten(c, 22) for c in classes], 8
    else:  # every step-th class, as "index name" so the rest can be looked up in per_class.csv
        ticks = np.arange(0, k, math.ceil(k / 40))
        names, size = [f"{i} {shorten(classes[i], 12)}" for i in ticks], 6
    fig = Figure(figsize=(2 * side + 2, side), layout="constrained")
    for ax, values, what in zip(fig.subplots(1, 2), (conf, rows), ("counts", "share of true class")):
        # square-root colour scale: the few-sample mistakes off the diagonal stay visible
        norm = PowerNorm(0.5, vmin=0, vmax=max(values.max(), 1) if values is conf else 1)
        image = ax.imshow(values, cmap="Blues", norm=norm, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(ticks, names, rotation=90, fontsize=size)
        ax.set_yticks(ticks, names, fontsize=size)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(what)
        if k <= 20:  # numbers in the cells while they still fit
            for i, j in zip(*np.nonzero(conf)):
                text = f"{values[i, j]:.2f}" if values is rows else str(values[i, j])
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if norm(values[i, j]) > 0.6 else "black")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, bbox_inches="tight")


def _summary(title: str, report: dict, classes: Sequence[str], n: int) -> str:
    """The text summary: headline numbers, the verdict against guessing, weakest classes, confusions."""
    f1, base = report["macro_f1"], report["baseline"]
    best = max(("uniform", "prior", "majority"), key=base.get)
    lines = [f"{title + ': ' if title else ''}macro-F1 {f1:.4f} | accuracy {report['accuracy']:.4f} | "
             f"{n} samples, {len(classes)} classes",
             *filter(None, [absent_note(report["per_class"]["support"], classes)]),
             f"random-guess macro-F1 {base['best']:.4f} ({best} guessing; uniform {base['uniform']:.4f}, "
             f"prior {base['prior']:.4f}, always-majority {base['majority']:.4f})"]
    if f1 <= base["best"]:
        lines.append("NOT above the random baseline: the model has learned nothing that guessing from the "
                     "class counts does not give. Check labels, the split and the training loss first.")
    else:
        lines.append(f"above the random baseline by {f1 - base['best']:.4f} ({f1 / base['best']:.1f}x).")
    table = report["per_class"]
    never = table.index[(table["predicted"] == 0) & (table["support"] > 0)].tolist()
    if never:
        lines.append(f"{len(never)} class(es) never predicted: "
                     + ", ".join(repr(shorten(c, 40)) for c in never[:5]) + (" ..." if len(never) > 5 else ""))
    weakest = table[table["support"] > 0].sort_values("f1").head(5)
    lines.append("weakest classes (F1): "
                 + ", ".join(f"{shorten(c, 40)!r} {r.f1:.2f}" for c, r in weakest.iterrows()))
    pairs = report["confused_pairs"].head(5)
    if len(pairs):
        lines.append("most confused (true -> predicted): " + "; ".join(
            f"{shorten(r.true, 40)!r} -> {shorten(r.predicted, 40)!r} {r.count} ({r.share:.0%})"
            for r in pairs.itertuples()))
    return "\n".join(lines)


def evaluate(y_true, probs, classes: Sequence[str], *, out_dir: Path | None = None, title: str = "",
             train_counts=None, top_pairs: int = 10) -> Report:
    """Score (N, K) predicted probabilities (or logits) against true labels; print and return a `Report`.

    `y_true`: (N,) class indices or class names. `train_counts`: (K,) training class counts for
    the prior/majority guessers (default: the counts of `y_true`).
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().float().cpu().numpy()
    probs = np.asarray(probs)
    classes = [str(c) for c in classes]
    k = len(classes)
    if probs.ndim != 2 or probs.shape[1] != k:
        raise KitError(f"probs has shape {probs.shape}; expected (N, {k}): one column per class.")
    targets = _targets(y_true, classes)
    if len(targets) != len(probs) or len(targets) == 0:
        raise KitError(f"{len(targets)} true labels for {len(probs)} rows of probabilities: "
                       "pass one row per labelled sample (and at least one).")
    conf = confusion(targets, probs.argmax(axis=1), k)
    prf = per_class_prf(conf)
    per_class = pd.DataFrame({**prf, "predicted": conf.sum(axis=0)}, index=pd.Index(classes, name="class"))
    present = prf["support"] > 0  # a class without samples here has no F1: left out of the mean, and said so
    numbers = {"macro_f1": float(prf["f1"][present].mean()), "accuracy": float(np.trace(conf) / conf.sum()),
               "per_class": per_class, "confusion": conf,
               "confused_pairs": confused_pairs(conf, classes, top_pairs),
               # guessing's macro-F1 over the same classes (an absent class's F1 is 0 for every guesser)
               "baseline": {name: value * k / max(int(present.sum()), 1) for name, value in
                            random_baseline_f1(prf["support"], guess_counts=train_counts).items()}}
    summary = _summary(title, numbers, classes, len(targets))
    files: dict[str, Path] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        per_class.to_csv(out_dir / "per_class.csv", float_format="%.6f")
        files["per_class"] = out_dir / "per_class.csv"
        files["confusion"] = plot_confusion(conf, classes, out_dir / "confusion.png", title=title)
        (out_dir / "report.txt").write_text(summary + "\n", encoding="utf-8")
        files["summary"] = out_dir / "report.txt"
        summary += f"\nwrote {', '.join(str(p) for p in files.values())}"
    print(summary)
    return Report(**numbers, summary=summary, files=files)


def evaluate_run(run: str | Path, out_dir: str | Path | None = None, *, title: str | None = None) -> Report:
    """The evaluation report of a run's best model on its validation split (val_probs.npy + val.csv); for a run
    whose validation samples then joined training (`all`), of its first cycle's model, scored before they did."""
    run = Path(run).expanduser()
    found = rundir.read_validation(run)
    when = " (validation, before those samples joined training)" if rundir.joined(run) else " (validation)"
    return evaluate(found.table["label"].tolist(), found.probs, found.classes,
                    out_dir=None if out_dir is None else Path(out_dir), title=title or f"{run.name}{when}")


def evaluate_oof(ids: Sequence[str], labels: Sequence[str], probs, classes: Sequence[str], *,
                 out_dir: str | Path | None = None, title: str = "out-of-fold") -> Report:
    """The evaluation report on out-of-fold probabilities: every sample once, each predicted by a model
    that never trained on it (rows of NaN, samples no fold predicted, are rejected)."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(ids) == len(labels) == len(probs):
        raise KitError(f"{len(ids)} ids, {len(labels)} labels and {len(probs)} rows of probabilities: "
                       "pass one of each per training sample.")
    series = pd.Series(list(ids), dtype=object)
    repeated = series[series.duplicated()].tolist()
    if repeated:
        raise KitError(f"ids {repeated[:5]} appear more than once: out-of-fold predictions hold every sample "
                       "once (average a sample's folds first).")
    missing = np.flatnonzero(~np.isfinite(probs).all(axis=1)) if probs.ndim == 2 else []
    if len(missing):
        raise KitError(f"{len(missing)} sample(s) have no out-of-fold prediction (NaN), e.g. "
                       f"{[ids[i] for i in missing[:5]]}: every sample must be in exactly one validation fold.")
    return evaluate(list(labels), probs, classes, out_dir=None if out_dir is None else Path(out_dir), title=title)


def evaluate_ensemble(runs, competition, out_dir: Path, *, tta: str = "none", scales=(1.0,)):
    """The evaluation report of the runs' ensemble (with TTA) on their shared validation split.

    Every run must have validated on the same samples (same split, same decisions); a fold
    folder has no single split, so it is refused here: evaluate its out-of-fold predictions instead.
    """
    for run in runs:
        if rundir.validated_ids(run) is None:
            raise KitError(f"{run}: no {rundir.VAL_TABLE} (a run without a validation split, or a folder of folds).")
        if rundir.joined(run):
            raise KitError(f"{run}: its final model trained on its validation samples too (`all` lets them join), so "
                           "it cannot be scored on them: evaluate_run reports its first cycle's honest predictions.")
    if any(rundir.validated_ids(run) != rundir.validated_ids(runs[0]) for run in runs[1:]):
        raise KitError(f"runs {', '.join(str(r) for r in runs)} validated on different samples: give them the same "
                       "val_fraction, seed and decisions to compare them on one split.")
    table = read_csv_strings(Path(runs[0]) / rundir.VAL_TABLE)
    models = load_runs(list(runs))
    samples = competition.samples.set_index("sample_index").loc[table["sample_index"]].reset_index()
    probs = predict_probs(models, samples, tta=tta, scales=scales)
    return evaluate(table["label"].tolist(), probs, models[0].classes, out_dir=Path(out_dir),
                    title=f"ensemble of {len(runs)} run(s), TTA {tta} (validation)")
