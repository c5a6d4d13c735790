"""Predictions from trained runs: test-time augmentation, ensembles, the submission, the evaluation.

    runs = load_runs(["runs/a", "runs/b"])                  # best.pt of each; a folder of folds: every fold
    probs = predict_probs(runs, data.test, tta="hflip")     # (N, K) float32
    predict_submission(runs, data, "runs/a/submission.csv", tta="flips", scales=(0.875, 1.0, 1.125))
    evaluate_run("runs/a", out_dir="runs/a/report")         # the report on its validation predictions

Ensembling averages probabilities, never logits, in three steps: over the TTA views of a model, over
the folds of a run, then over the runs, so a run of 5 folds counts as much as a run of one model.
Runs may differ in model, input size and normalization: the test images are decoded once per
distinct (cache size, fit) and each run applies its own eval transform (its checkpoint says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import kitlib
from kitlib import cache, checkpoint
from kitlib.augment import eval_transform
from kitlib.data import Competition, load_competition, read_csv_strings
from kitlib.errors import KitError
from kitlib.report import Report, evaluate
from kitlib.runtime import autocast, pick_device, pick_precision
from kitlib.submission import WrittenSubmission, write_submission

# TTA name -> the (horizontal, vertical) flips averaged; "flips" is the group the two flips generate
TTA_MODES = {
    "none": ((False, False),),
    "hflip": ((False, False), (True, False)),
    "flips": ((False, False), (True, False), (False, True), (True, True)),
}


@dataclass
class Run:
    """One trained model ready to predict, with the checkpoint it came from."""

    model: torch.nn.Module
    """The network (put in eval mode before predicting)."""
    checkpoint: dict
    """Its checkpoint (format in kitlib.checkpoint): classes, normalization, config, git_commit, ..."""
    path: Path | None = None
    """The checkpoint file it was read from (None when built in memory)."""
    group: str = ""
    """The run it belongs to: folds of one run share it and are averaged first ('': a run of its own)."""

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the model's outputs."""
        return [str(c) for c in self.checkpoint["classes"]]

    @property
    def name(self) -> str:
        """How messages name the run: its group, else its path."""
        return self.group or str(self.path or "run")

    def decode_key(self) -> tuple[tuple[int, int], str]:
        """(cache size (h, w), fit): what the images must be decoded to for this run."""
        norm = self._normalization()
        size = norm.get("cache_size") or norm["size"]
        return (int(size[0]), int(size[1])), str(norm.get("fit", "squash"))

    def transform(self):
        """The run's eval transform: uint8 (B, 3, h, w) -> normalized float32 (B, 3, H, W)."""
        norm = self._normalization()
        return eval_transform(size=tuple(int(s) for s in norm["size"]), mean=norm["mean"], std=norm["std"])

    def _normalization(self) -> dict:
        norm = self.checkpoint.get("normalization")
        if not isinstance(norm, dict) or not {"mean", "std", "size"} <= set(norm):
            raise KitError(f"{self.name}: the checkpoint has no normalization {{mean, std, size, cache_size, "
                           "fit}; it was not written by the kit's training loop. Retrain it with kitlib.")
        return norm


def _checkpoint_files(path: Path) -> list[Path]:
    """best.pt of a run folder, the best.pt of each fold subfolder, or the checkpoint file itself."""
    if path.is_file():
        return [path]
    if (path / "best.pt").is_file():
        return [path / "best.pt"]
    folds = sorted(p / "best.pt" for p in path.iterdir() if (p / "best.pt").is_file()) if path.is_dir() else []
    if not folds:
        raise KitError(f"{path}: no best.pt there or in its subfolders (folds). Pass a run folder written by "
                       "`python -m kitlib train`, or a checkpoint file.")
    return folds


def load_runs(paths: str | Path | Sequence[str | Path], device: str | torch.device | None = None) -> list[Run]:
    """Every model of the given run folders (a folder of fold runs gives one Run per fold) or .pt files."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise KitError("no runs given: pass at least one run folder (with best.pt).")
    device = pick_device(device)
    runs = []
    for given in paths:
        for file in _checkpoint_files(Path(given).expanduser()):
            model, ckpt = checkpoint.load_model(file, device)
            runs.append(Run(model, ckpt, file, group=str(given)))
    check_classes(runs)
    return runs


def check_classes(runs: Sequence[Run]) -> list[str]:
    """The class list all runs share; KitError naming the runs whose lists differ."""
    first = runs[0].classes
    for run in runs[1:]:
        if run.classes != first:
            a, b = set(first), set(run.classes)
            detail = ("the same classes in another order" if a == b else
                      f"only in {runs[0].name}: {sorted(a - b)[:5]}; only in {run.name}: {sorted(b - a)[:5]}")
            raise KitError(f"runs {runs[0].name} ({len(first)} classes) and {run.name} ({len(run.classes)} "
                           f"classes) predict different class lists ({detail}). Ensemble only runs trained on "
                           "the same competition and labels.")
    return first


def tta_views(tta: str = "hflip", scales: Sequence[float] = (1.0,)) -> list[tuple[float, tuple]]:
    """The TTA views as (scale, ((hflip, vflip), ...)) per scale; KitError for unknown names or scales."""
    if tta not in TTA_MODES:
        raise KitError(f"tta={tta!r}: choose one of {', '.join(TTA_MODES)}.")
    scales = [float(s) for s in ((scales,) if isinstance(scales, (int, float)) else scales)]
    if not scales or not all(0.25 <= s <= 4 for s in scales):
        raise KitError(f"scales={scales}: give input-size factors between 0.25 and 4, e.g. (0.875, 1.0, 1.125).")
    return [(s, TTA_MODES[tta]) for s in scales]


def _view(x: torch.Tensor, scale: float, flips: tuple) -> torch.Tensor:
    """(B, 3, H, W) normalized -> (B * len(flips), 3, H', W'): resized by `scale`, each flip stacked."""
    if scale != 1.0:  # the nets pool globally, so any input size works
        size = (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale)))
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=scale < 1)
    out = [x.flip([d for d, on in ((3, h), (2, v)) if on]) if h or v else x for h, v in flips]
    return (torch.cat(out) if len(out) > 1 else x).contiguous(memory_format=torch.channels_last)


def _predict_model(run: Run, pixels: torch.Tensor, views, *, device: torch.device, precision: str,
                   batch_size: int, bar) -> torch.Tensor:
    """(N, K) float32 probabilities of one model on uint8 (N, 3, h, w) pixels, averaged over the views."""
    model = run.model.to(device, memory_format=torch.channels_last).eval()
    transform = run.transform()
    flips = max(len(f) for _, f in views)
    step = max(1, batch_size // flips)  # images per forward pass: batch_size counts the flipped copies too
    out = torch.empty(len(pixels), len(run.classes))
    with torch.inference_mode():
        for start in range(0, len(pixels), step):
            x = transform(pixels[start:start + step].to(device, non_blocking=True))  # (B, 3, H, W) float32
            total = 0.0
            for scale, pairs in views:
                with autocast(device, precision):
                    logits = model(_view(x, scale, pairs))  # (B * flips, K)
                total = total + logits.float().softmax(1).view(len(pairs), len(x), -1).sum(0)
            out[start:start + len(x)] = (total / sum(len(p) for _, p in views)).cpu()
            bar.update(len(x))
    return out


def predict_probs(runs: Sequence[Run], images: pd.DataFrame | torch.Tensor, *, tta: str = "hflip",
                  scales: Sequence[float] = (1.0,), batch_size: int = 256, device: str | torch.device | None = None,
                  precision: str = "auto", progress: bool = True) -> np.ndarray:
    """(N, K) float32 class probabilities, averaged over TTA views, folds and runs.

    `images`: a sample or test table (its `image` column is decoded once per distinct run decode
    size and fit, through the cache) or a uint8 (N, 3, h, w) tensor used as is by every run.
    `batch_size`: images per forward pass, flipped copies included. `device`: default CUDA when
    available; `precision`: 'auto' picks runtime.pick_precision's (fp16 on a T4, never bf16 on a CPU
    without fast bf16). The models are moved to `device` (channels_last) and put in eval mode.
    """
    runs = list(runs)
    if not runs:
        raise KitError("no runs given: pass at least one Run (see load_runs).")
    check_classes(runs)
    views = tta_views(tta, scales)
    device = pick_device(device)
    precision = pick_precision(device, precision)
    if isinstance(images, pd.DataFrame):
        if len(images) == 0 or "image" not in images:
            raise KitError("the table to predict is empty or has no 'image' column: pass data.test.")
    elif images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise KitError(f"images: expected a non-empty (N, 3, h, w) uint8 tensor, got {tuple(images.shape)} "
                       f"{images.dtype}.")
    n = len(images)
    keys = sorted({run.decode_key() for run in runs})  # decode each (size, fit) once, then free it
    probs: dict[int, torch.Tensor] = {}
    bar = tqdm(total=n * len(runs), unit="img", disable=not progress,
               desc=f"predict: {len(runs)} model(s) x {sum(len(p) for _, p in views)} view(s)")
    for key in keys:
        pixels = images if isinstance(images, torch.Tensor) else cache.decode(
            list(images["image"]), size=key[0], fit=key[1], progress=progress).images  # (N, 3, h, w) uint8
        for i, run in enumerate(runs):
            if run.decode_key() == key:
                probs[i] = _predict_model(run, pixels, views, device=device, precision=precision,
                                          batch_size=batch_size, bar=bar)
    bar.close()
    groups: dict[str, list[torch.Tensor]] = {}
    for i, run in enumerate(runs):  # folds of a run first, then runs: each run weighs the same
        groups.setdefault(run.group or f"#{i}", []).append(probs[i])
    return torch.stack([torch.stack(g).mean(0) for g in groups.values()]).mean(0).numpy()


def _run_record(run: Run) -> dict:
    """What submission.json says about one model: where it is, how it was built and trained."""
    ckpt = run.checkpoint
    return {"path": str(run.path) if run.path else None, "run": run.group or None, "model": ckpt.get("model"),
            "epoch": ckpt.get("epoch"), "metrics": ckpt.get("metrics"), "config": ckpt.get("config"),
            "git_commit": ckpt.get("git_commit"), "kit_version": ckpt.get("kit_version")}


def predict_submission(runs: Sequence[Run | str | Path] | str | Path, data: Competition | str | Path,
                       out_csv: str | Path, *, tta: str = "hflip", scales: Sequence[float] = (1.0,),
                       batch_size: int = 256, device: str | torch.device | None = None,
                       progress: bool = True) -> WrittenSubmission:
    """Predict the test set with the runs' ensemble and write the submission CSV and its .json record.

    The CSV has the sample file's columns, id order and row count (or sample_index,label over the
    sorted test ids) and the training label strings; it is validated before it replaces any file.
    The .json beside it holds the models (paths, configs, git commits), the TTA and the kit version.
    """
    views = tta_views(tta, scales)  # fail on a bad option before loading anything
    if not isinstance(data, Competition):
        data = load_competition(data)
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    runs = [run for item in runs for run in ([item] if isinstance(item, Run) else load_runs(item, device))]
    if not runs:
        raise KitError("no runs given: pass at least one run folder (with best.pt).")
    classes = check_classes(runs)
    unknown = [c for c in classes if c not in set(data.classes)]
    if unknown:
        raise KitError(f"{runs[0].name} predicts {len(unknown)} class(es) that {data.root} does not have: "
                       f"{unknown[:5]}. Predict with runs trained on this competition.")
    if len(data.test) == 0:
        raise KitError(f"{data.root}: no test images to predict (no test folder found).")
    probs = predict_probs(runs, data.test, tta=tta, scales=scales, batch_size=batch_size, device=device,
                          progress=progress)
    ids = data.test["sample_index"].tolist()
    meta = {"runs": [_run_record(run) for run in runs],
            "tta": {"mode": tta, "scales": [s for s, _ in views], "views": sum(len(p) for _, p in views)},
            "ensemble": "mean of probabilities over TTA views, then over the folds of a run, then over runs",
            "data": str(data.root), "kit_version": kitlib.__version__, "git_commit": checkpoint.git_commit()}
    return write_submission(out_csv, ids, [classes[i] for i in probs.argmax(1)], classes=classes,
                            sample_submission=data.sample_submission, test_ids=ids,
                            train_labels=data.samples["label"].tolist(), id_column=data.id_column,
                            label_column=data.label_column, meta=meta)


def evaluate_run(run: str | Path, out_dir: str | Path | None = None, *, title: str | None = None) -> Report:
    """The evaluation report of a run's best model on its validation split (val_probs.npy + val.csv)."""
    run = Path(run).expanduser()
    probs_file, table_file = run / "val_probs.npy", run / "val.csv"
    for file in (probs_file, table_file):
        if not file.is_file():
            raise KitError(f"{file}: not found. The training loop writes val_probs.npy and val.csv at the end of "
                           "a run that has a validation split; evaluate out-of-fold predictions with evaluate_oof.")
    probs, table = np.load(probs_file), read_csv_strings(table_file)
    if list(table.columns[:2]) != ["sample_index", "label"]:
        raise KitError(f"{table_file}: columns {list(table.columns)}; expected sample_index,label.")
    if probs.ndim != 2 or len(probs) != len(table):
        raise KitError(f"{probs_file} has shape {probs.shape} but {table_file} {len(table)} rows: "
                       "they must describe the same samples, one row each. Re-run the training.")
    classes = checkpoint.load(_checkpoint_files(run)[0])["classes"]
    return evaluate(table["label"].tolist(), probs, classes, out_dir=None if out_dir is None else Path(out_dir),
                    title=title or f"{run.name} (validation)")


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
    tables = []
    for run in runs:
        if not (Path(run) / "val.csv").is_file():
            raise KitError(f"{run}: no val.csv (a run without a validation split, or a folder of folds).")
        tables.append(read_csv_strings(Path(run) / "val.csv"))
    if any(not t["sample_index"].equals(tables[0]["sample_index"]) for t in tables[1:]):
        raise KitError(f"runs {', '.join(str(r) for r in runs)} validated on different samples: give them the same "
                       "val_fraction, seed and decisions to compare them on one split.")
    models = load_runs(list(runs))
    samples = competition.samples.set_index("sample_index").loc[tables[0]["sample_index"]].reset_index()
    probs = predict_probs(models, samples, tta=tta, scales=scales)
    return evaluate(tables[0]["label"].tolist(), probs, models[0].classes, out_dir=Path(out_dir),
                    title=f"ensemble of {len(runs)} run(s), TTA {tta} (validation)")
