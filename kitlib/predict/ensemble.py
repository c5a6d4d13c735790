"""Predictions from trained runs: test-time augmentation, ensembles, the submission.

    runs = load_runs(["runs/a", "runs/b"])                  # best.pt of each; a folder of folds: every fold
    probs = predict_probs(runs, data.test, tta="hflip")     # (N, K) float32
    predict_submission(runs, data, "runs/a/submission.csv", tta="flips", scales=(0.875, 1.0, 1.125))

Ensembling averages probabilities, never logits, in three steps: over the TTA views of a model, over
the folds of a run, then over the runs, so a run of 5 folds counts as much as a run of one model.
Runs may differ in model, input size and normalization: the test images are decoded once per
distinct (cache size, fit) and each run applies its own eval transform (its checkpoint says which).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import kitlib
from kitlib import checkpoint, rundir
from kitlib.augment import MaskEvalTransform, eval_transform
from kitlib.data import cache
from kitlib.data.tiles import AGGREGATES, TileSpec, Tiles, build_tiles
from kitlib.data.tiles import aggregate as aggregate_tiles
from kitlib.data.layouts import Competition, load_competition
from kitlib.errors import KitError
from kitlib.models.infer import TTA_MODES, probabilities, tta_views, view_count  # noqa: F401 (TTA_MODES: API)
from kitlib.predict.submission import WrittenSubmission, write_submission
from kitlib.progress import progress_bar
from kitlib.rundir import Normalization
from kitlib.runtime import pick_device, pick_precision


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

    @property
    def normalization(self) -> Normalization:
        """How its input is made from decoded pixels (KitError for a checkpoint the kit did not write)."""
        return Normalization.from_dict(self.checkpoint.get("normalization"), self.name)

    def decode_key(self) -> tuple[tuple[int, int], str]:
        """(cache size (h, w), fit): what the images must be decoded to for this run."""
        norm = self.normalization
        return norm.cache_size, norm.fit

    def input_key(self) -> tuple:
        """What the test images must become for this run: ('tiles', spec as JSON) for a tile model, else
        ('images', (h, w), fit, whether the mask is a channel). Runs with one key share the decoding."""
        norm = self.normalization
        if norm.tiles is not None:
            return "tiles", json.dumps(norm.tiles, sort_keys=True)
        return "images", norm.cache_size, norm.fit, norm.mask_channel

    def transform(self):
        """The run's eval transform: uint8 (B, 3, h, w) -> normalized float32 (B, 3, H, W); with the mask
        as a channel, (B, 4, h, w) -> (B, 4, H, W)."""
        norm = self.normalization
        images = eval_transform(size=norm.size, mean=norm.mean, std=norm.std)
        return MaskEvalTransform(images) if norm.mask_channel else images


def load_runs(paths: str | Path | Sequence[str | Path], device: str | torch.device | None = None) -> list[Run]:
    """Every model of the given run folders (a folder of fold runs gives one Run per fold) or .pt files."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise KitError("no runs given: pass at least one run folder (with best.pt).")
    device = pick_device(device)
    runs = []
    for given in paths:
        for file in rundir.checkpoint_files(given):
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


def _predict_model(run: Run, pixels: torch.Tensor, views, *, device: torch.device, precision: str,
                   batch_size: int, bar) -> torch.Tensor:
    """(N, K) float32 probabilities of one model on uint8 (N, 3, h, w) pixels, averaged over the views."""
    model = run.model.to(device, memory_format=torch.channels_last)
    step = max(1, batch_size // max(len(f) for _, f in views))  # batch_size counts the flipped copies too

    def batches():
        for start in range(0, len(pixels), step):
            yield pixels[start:start + step]
            bar.update(min(step, len(pixels) - start))

    return probabilities(model, batches(), run.transform(), views=views, device=device, precision=precision)


def _predict_tiles(run: Run, tiles: Tiles, views, *, device: torch.device, precision: str, batch_size: int,
                   aggregate_as: str | None, bar) -> torch.Tensor:
    """(N, K) float32 per-image probabilities of a tile model: each image's fixed tiles through the views,
    then aggregated (the run's way unless `aggregate_as` says otherwise)."""
    rows = torch.arange(len(tiles))
    model = run.model.to(device, memory_format=torch.channels_last)
    step = max(1, batch_size // max(len(f) for _, f in views))
    sizes = tiles.counts()

    def batches():
        done = 0
        for start in range(0, len(rows), step):
            yield tiles.cut(rows[start:start + step])
            finished = int((torch.cumsum(sizes, 0) <= start + step).sum())  # images whose tiles are all done
            bar.update(finished - done)
            done = finished

    probs = probabilities(model, batches(), run.transform(), views=views, device=device, precision=precision)
    how = aggregate_as or run.normalization.aggregate
    return aggregate_tiles(probs, tiles.tile_sample, len(sizes), how, tiles.coverage)


def _inputs(key: tuple, images: pd.DataFrame | torch.Tensor, progress: bool):
    """The decoded test images of one input key: uint8 (N, 3 or 4, h, w) pixels, or the Tiles of a tile model."""
    if key[0] == "tiles":
        if isinstance(images, torch.Tensor):
            raise KitError("a tile model predicts from image files: pass the sample or test table, not a tensor.")
        return build_tiles(images["image"], images["mask"] if "mask" in images else None,
                           TileSpec.from_dict(json.loads(key[1])), progress=progress)
    _, size, fit, channel = key
    if isinstance(images, torch.Tensor):
        if channel:
            raise KitError("a model that sees the mask predicts from image and mask files: pass the table.")
        return images
    masks = list(images["mask"]) if "mask" in images else None  # as decode_table: the audit's decoding is reused
    decoded = cache.decode(list(images["image"]), size=size, fit=fit, mask_paths=masks, progress=progress)
    if not channel:
        return decoded.images
    masks = decoded.masks if decoded.masks is not None else torch.zeros_like(decoded.images[:, :1])
    return torch.cat([decoded.images, masks], 1)


def predict_probs(runs: Sequence[Run], images: pd.DataFrame | torch.Tensor, *, tta: str = "hflip",
                  scales: Sequence[float] = (1.0,), batch_size: int = 256, device: str | torch.device | None = None,
                  precision: str = "auto", aggregate: str | None = None, progress: bool = True) -> np.ndarray:
    """(N, K) float32 class probabilities, per image, averaged over TTA views, folds and runs.

    `images`: a sample or test table (its `image` column, and `mask` for models that use masks, is
    decoded once per distinct kind of input the runs need, through the caches: whole images at a run's
    size and fit, or tiles cut as a tile model's checkpoint says) or a uint8 (N, 3, h, w) tensor used
    as is by every whole-image run. A tile model's tile predictions are aggregated per image as its
    training did, unless `aggregate` ('mean', 'coverage', 'logit') says otherwise.
    `batch_size`: images per forward pass, flipped copies included. `device`: default CUDA when
    available; `precision`: 'auto' picks runtime.pick_precision's (fp16 on a T4, never bf16 on a CPU
    without fast bf16). The models are moved to `device` (channels_last) and put in eval mode.
    """
    runs = list(runs)
    if not runs:
        raise KitError("no runs given: pass at least one Run (see load_runs).")
    check_classes(runs)
    views = tta_views(tta, scales)
    if aggregate is not None and aggregate not in AGGREGATES:
        raise KitError(f"aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}.")
    device = pick_device(device)
    precision = pick_precision(device, precision)
    if isinstance(images, pd.DataFrame):
        if len(images) == 0 or "image" not in images:
            raise KitError("the table to predict is empty or has no 'image' column: pass data.test.")
    elif images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise KitError(f"images: expected a non-empty (N, 3, h, w) uint8 tensor, got {tuple(images.shape)} "
                       f"{images.dtype}.")
    n = len(images)
    keys = sorted({run.input_key() for run in runs}, key=str)  # decode each kind of input once, then free it
    probs: dict[int, torch.Tensor] = {}
    bar = progress_bar(total=n * len(runs), unit="img", disable=not progress,
                       desc=f"predict: {len(runs)} model(s) x {view_count(views)} view(s)")
    for key in keys:
        inputs = _inputs(key, images, progress)
        for i, run in enumerate(runs):
            if run.input_key() != key:
                continue
            if isinstance(inputs, Tiles):
                probs[i] = _predict_tiles(run, inputs, views, device=device, precision=precision,
                                          batch_size=batch_size, aggregate_as=aggregate, bar=bar)
            else:
                probs[i] = _predict_model(run, inputs, views, device=device, precision=precision,
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
                       aggregate: str | None = None, progress: bool = True,
                       meta: dict | None = None) -> WrittenSubmission:
    """Predict the test set with the runs' ensemble and write the submission CSV and its .json record.

    The CSV has the sample file's columns, id order and row count (or sample_index,label over the
    sorted test ids) and the training label strings; it is validated before it replaces any file.
    The .json beside it holds the models (paths, configs, git commits), the TTA and the kit version, and
    `meta`'s entries (e.g. `all`'s estimate of the score).
    """
    views = tta_views(tta, scales)  # fail on a bad option before loading anything
    if aggregate is not None and aggregate not in AGGREGATES:
        raise KitError(f"aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}.")
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
        raise KitError(f"{data.root}: no test images to predict (no test folder, or one without images: "
                       "test_data/ or test/ holding the images, beside the training data).")
    probs = predict_probs(runs, data.test, tta=tta, scales=scales, batch_size=batch_size, device=device,
                          aggregate=aggregate, progress=progress)
    ids = data.test["sample_index"].tolist()
    meta = {"runs": [_run_record(run) for run in runs],
            "tta": {"mode": tta, "scales": [s for s, _ in views], "views": view_count(views)},
            "ensemble": "mean of probabilities over TTA views, then over a tile model's tiles of an image (as "
                        "its aggregate says), then over the folds of a run, then over runs",
            "aggregate": aggregate or "as each tile model was trained",
            "data": str(data.root), "kit_version": kitlib.__version__, "git_commit": checkpoint.git_commit(),
            **(meta or {})}
    return write_submission(out_csv, ids, [classes[i] for i in probs.argmax(1)], classes=classes,
                            sample_submission=data.sample_submission, test_ids=ids,
                            train_labels=data.samples["label"].tolist(), id_column=data.id_column,
                            label_column=data.label_column, meta=meta)
