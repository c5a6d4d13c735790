"""The run folder: every file a run writes is named here once, and read back through here.

    RUN/
      config.json          the resolved TrainConfig, model spec, normalization, counts, kit version, git commit
      metrics.csv          one row per epoch, and per_class_f1.csv beside it (kitlib.logbook)
      curves.png           the learning curves (kitlib.logbook)
      tile_votes.png       a tile model's validation slides, each tile in the colour of its vote (kitlib.logbook)
      last.pt, best.pt     checkpoints (kitlib.checkpoint): last.pt resumes, best.pt predicts
      val_probs.npy        (N_val, K) float32: the best model's probabilities on the validation samples
      val.csv              sample_index,label of those N_val samples, in the same order
      tensorboard/         event files, when tensorboard is installed
      folds/fold0, ...     fold runs (the audit's), each a run folder of its own
      suspects.csv, scores.csv, suspects.png, decisions.csv    the audit's and the review's (kitlib.audit)
      checks.csv, oof.npz  the audit's reported-only checks; a full audit's out-of-fold probabilities and features
      label_evidence.npz   the first cycle's averaged probabilities on every sample (TrainConfig.label_evidence)
      dropped.csv          the decisions `all` trained with (sample_index,action,new_label)
      submission.csv, submission.json                          `all`'s submission (kitlib.predict)

Validation predictions are per sample (per image, also when a model sees tiles of it), always
from the evaluation transform, so they are honest inputs for the audit and the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kitlib import checkpoint
from kitlib.errors import KitError
from kitlib.files import read_csv_strings, replace_atomically, write_csv

CONFIG = "config.json"
METRICS = "metrics.csv"
PER_CLASS_F1 = "per_class_f1.csv"
CURVES = "curves.png"
TILE_VOTES = "tile_votes.png"
LAST = "last.pt"
BEST = "best.pt"
VAL_PROBS = "val_probs.npy"
VAL_TABLE = "val.csv"
TENSORBOARD = "tensorboard"
FOLDS = "folds"
SUSPECTS = "suspects.csv"
SCORES = "scores.csv"
SUSPECTS_PNG = "suspects.png"
DECISIONS = "decisions.csv"
CHECKS = "checks.csv"
"""RUN/checks.csv: what the audit reports but never drops (kitlib.audit.config.CHECK_COLUMNS)."""
OOF = "oof.npz"
"""RUN/oof.npz of a full audit: ids, probs (N, K) out of fold, features (N, D) of the fold models."""
LABEL_EVIDENCE = "label_evidence.npz"
"""RUN/label_evidence.npz: ids, targets, classes, probs (N, K) averaged over the first cycle, held_out (N,),
margins (N,) (kitlib.train.loop.write_label_evidence, read by kitlib.audit.dynamics)."""
DROPPED = "dropped.csv"
"""RUN/dropped.csv: the decisions (sample_index,action,new_label) `all` trained with."""
SUBMISSION = "submission.csv"


def fold_dir(run: str | Path, fold: int) -> Path:
    """RUN/folds/fold{fold}: the run folder of one fold model."""
    return Path(run) / FOLDS / f"fold{fold}"


# --------------------------------------------------------------------------------------------- normalization

@dataclass(frozen=True)
class Normalization:
    """How a model's input is made from decoded uint8 pixels: what prediction must repeat exactly."""

    mean: tuple[float, float, float]
    """Channel means in 0..1 units."""
    std: tuple[float, float, float]
    """Channel stds in 0..1 units."""
    size: tuple[int, int]
    """(H, W) of the model's input in px."""
    cache_size: tuple[int, int]
    """(h, w) the images were decoded to (the cache key, with `fit`)."""
    fit: str
    """How other shapes reached `cache_size`: squash, pad or crop."""
    tiles: dict | None = None
    """The TileSpec (kitlib.data.tiles) the model was trained on, as a dict; None: whole images."""
    aggregate: str = "mean"
    """How a tile model's tile predictions make an image's: mean, coverage or logit."""
    mask_channel: bool = False
    """The model takes the mask as a 4th input channel (masks='channel')."""

    def to_dict(self) -> dict:
        """The checkpoint's form: {mean, std, size, cache_size, fit, tiles, aggregate, mask_channel}, plain values."""
        return {"mean": list(self.mean), "std": list(self.std), "size": list(self.size),
                "cache_size": list(self.cache_size), "fit": self.fit, "tiles": self.tiles,
                "aggregate": self.aggregate, "mask_channel": self.mask_channel}

    @classmethod
    def from_dict(cls, value, source: str) -> Normalization:
        """Read `to_dict`'s form; KitError naming `source` when it is not one."""
        if not isinstance(value, dict) or not {"mean", "std", "size"} <= set(value):
            raise KitError(f"{source}: the checkpoint has no normalization {{mean, std, size, cache_size, fit}}; "
                           "it was not written by the kit's training loop. Retrain it with kitlib.")
        size = tuple(int(s) for s in value["size"])
        return cls(tuple(float(m) for m in value["mean"]), tuple(float(s) for s in value["std"]), size,
                   tuple(int(s) for s in value.get("cache_size") or size), str(value.get("fit", "squash")),
                   value.get("tiles"), str(value.get("aggregate", "mean")), bool(value.get("mask_channel", False)))


# --------------------------------------------------------------------------------------------- config.json

def write_config(run: str | Path, record: dict) -> Path:
    """Write RUN/config.json (atomically, indented)."""
    text = json.dumps(record, indent=1, default=str)
    return replace_atomically(Path(run) / CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_config(run: str | Path) -> dict:
    """RUN/config.json as a dict; KitError when it is missing or not JSON."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise KitError(f"{path}: not found. Pass a run folder written by `python -m kitlib train`.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: not readable JSON ({error}).") from error


def joined(run: str | Path) -> bool:
    """Whether RUN's validation samples joined its training set for the final model (TrainConfig.join_at, as
    `all` trains): its val.csv then holds the first cycle's predictions, and best.pt has seen those samples."""
    metrics = Path(run) / METRICS
    return metrics.is_file() and "joined" in set(read_csv_strings(metrics).get("phase", []))


def is_run(folder: str | Path) -> bool:
    """Whether `folder` holds a run's logbook (config.json and metrics.csv)."""
    return (Path(folder) / CONFIG).is_file() and (Path(folder) / METRICS).is_file()


# --------------------------------------------------------------------------------------------- validation predictions

@dataclass(frozen=True)
class Validation:
    """A run's validation predictions: one row per sample."""

    table: pd.DataFrame
    """sample_index, label (the given label), one row per sample."""
    probs: np.ndarray
    """(N, K) float32 class probabilities, rows in the table's order."""
    classes: list[str]
    """The K class names, in the order of the columns of `probs`."""


def write_validation(run: str | Path, ids: Sequence[str], labels: Sequence[str], probs: np.ndarray) -> None:
    """Write RUN/val_probs.npy ((N, K) float32) and RUN/val.csv (sample_index,label), rows in the same order."""
    run = Path(run)
    probs = np.asarray(probs, dtype=np.float32)
    replace_atomically(run / VAL_PROBS, lambda tmp: save_array(tmp, probs))
    write_csv(run / VAL_TABLE, ["sample_index", "label"], zip(ids, labels))


def save_array(path: Path, array: np.ndarray) -> None:
    """np.save to exactly `path` (np.save given a name would append '.npy' to a temporary file's)."""
    with open(path, "wb") as f:
        np.save(f, array)


def validated_ids(run: str | Path) -> list[str] | None:
    """The sample ids a finished run validated on, in order; None when it has no validation predictions."""
    run = Path(run)
    if not (run / VAL_PROBS).is_file():
        return None
    return read_csv_strings(run / VAL_TABLE)["sample_index"].tolist()


def read_validation(run: str | Path) -> Validation:
    """RUN's validation predictions, checked: both files present, one row each, the classes of its best.pt."""
    run = Path(run).expanduser()
    probs_file, table_file = run / VAL_PROBS, run / VAL_TABLE
    for file in (probs_file, table_file):
        if not file.is_file():
            raise KitError(f"{file}: not found. The training loop writes {VAL_PROBS} and {VAL_TABLE} at the end of "
                           "a run that has a validation split; evaluate out-of-fold predictions with evaluate_oof.")
    probs, table = np.load(probs_file), read_csv_strings(table_file)
    if list(table.columns[:2]) != ["sample_index", "label"]:
        raise KitError(f"{table_file}: columns {list(table.columns)}; expected sample_index,label.")
    if probs.ndim != 2 or len(probs) != len(table):
        raise KitError(f"{probs_file} has shape {probs.shape} but {table_file} {len(table)} rows: "
                       "they must describe the same samples, one row each. Re-run the training.")
    classes = [str(c) for c in checkpoint.load(checkpoint_files(run)[0])["classes"]]
    return Validation(table[["sample_index", "label"]], probs.astype(np.float32), classes)


def validation_runs(run: str | Path) -> list[Path]:
    """The run itself when it holds validation predictions, else its subfolders that do (the folds of one split)."""
    run = Path(run).expanduser()
    if (run / VAL_PROBS).is_file():
        return [run]
    folds = sorted(p for p in run.iterdir() if (p / VAL_PROBS).is_file()) if run.is_dir() else []
    if not folds:
        raise KitError(f"{run}: no {VAL_PROBS} there or in its subfolders. Train with a validation split "
                       f"(the loop writes {VAL_PROBS} and {VAL_TABLE} at the end), e.g. folds=K, fold=i per subfolder.")
    return folds


def read_out_of_fold(run: str | Path) -> Validation:
    """The validation predictions of a run, or of a folder of fold runs joined (each sample validated once)."""
    parts = [read_validation(folder) for folder in validation_runs(run)]
    if any(part.classes != parts[0].classes for part in parts[1:]):
        raise KitError(f"{run}: the fold runs' classes differ; pass the folds of one competition.")
    table = pd.concat([part.table for part in parts], ignore_index=True)
    repeated = table["sample_index"][table["sample_index"].duplicated()].tolist()
    if repeated:
        raise KitError(f"{run}: samples {repeated[:5]} are in more than one run's validation split: pass the "
                       "folds of one K-fold split (folds=K, fold=0..K-1), each sample validated once.")
    return Validation(table, np.concatenate([part.probs for part in parts]), parts[0].classes)


@dataclass(frozen=True)
class LabelEvidence:
    """A run's probabilities on every sample, averaged over its first learning-rate cycle: the training
    probabilities of the samples trained on then, the validation probabilities of those held out."""

    ids: list[str]
    targets: np.ndarray
    """(N,) int64: the given labels, as indices into `classes`."""
    classes: list[str]
    probs: np.ndarray
    """(N, K) float32, rows in the order of `ids`."""
    held_out: np.ndarray
    """(N,) bool: the sample was a validation sample then (honest probabilities), not trained on."""
    margins: np.ndarray
    """(N,) float32: a trained-on sample's mean training margin (its given label's logit minus the largest
    other; the area under the margin), NaN for a held-out one."""


def write_label_evidence(run: str | Path, evidence: LabelEvidence) -> Path:
    """Write RUN/label_evidence.npz (atomically)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, ids=np.array(evidence.ids), targets=evidence.targets.astype(np.int64),
                                classes=np.array(evidence.classes), probs=evidence.probs.astype(np.float32),
                                held_out=evidence.held_out.astype(bool), margins=evidence.margins.astype(np.float32))
    return replace_atomically(Path(run) / LABEL_EVIDENCE, write)


def read_label_evidence(run: str | Path) -> LabelEvidence | None:
    """RUN/label_evidence.npz, or None when the run wrote none (TrainConfig.label_evidence)."""
    path = Path(run) / LABEL_EVIDENCE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return LabelEvidence([str(i) for i in saved["ids"]], saved["targets"].astype(np.int64),
                             [str(c) for c in saved["classes"]], saved["probs"].astype(np.float32),
                             saved["held_out"].astype(bool), saved["margins"].astype(np.float32))


# --------------------------------------------------------------------------------------------- models

def checkpoint_files(path: str | Path) -> list[Path]:
    """best.pt of a run folder, the best.pt of each fold subfolder, or the checkpoint file itself."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if (path / BEST).is_file():
        return [path / BEST]
    folds = sorted(p / BEST for p in path.iterdir() if (p / BEST).is_file()) if path.is_dir() else []
    if not folds:
        raise KitError(f"{path}: no {BEST} there or in its subfolders (folds). Pass a run folder written by "
                       "`python -m kitlib train`, or a checkpoint file.")
    return folds


def has_model(run: str | Path) -> bool:
    """Whether a run folder (or its fold subfolders) holds a best.pt to predict with."""
    run = Path(run)
    return (run / BEST).is_file() or any(run.glob(f"*/{BEST}"))
