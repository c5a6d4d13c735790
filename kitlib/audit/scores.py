"""The audit: find the training samples that would poison training, before training on them.

    result = audit(competition, AuditConfig(folds=4, time_budget=600), "runs/audit")
    result.suspects          # RUN/suspects.csv: sample_index, issue, score, given_label, suggested_label
    python -m kitlib train DATA --out runs/clean --decisions runs/audit/suspects.csv   # drops them

Four issues, each scored in [0, 1] (higher = more certain; a sample is flagged at 0.5 or more):
- blank: one flat colour (an empty scan, a lens cap): pixel standard deviation near zero;
- duplicate: the same picture filed twice (a difference hash, then a pixel check); the first copy
  in id order is kept and the later ones are flagged, since duplicates split over training and
  validation inflate the validation score;
- alien: an image from outside the task: far from the other images both in an 8x8 colour thumbnail
  and in the features of an out-of-fold model (k nearest neighbours, robust z-scores);
- mislabeled: confident learning (Northcutt et al., JAIR 2021) on out-of-fold probabilities: the
  sample is confidently another class, judged by per-class thresholds, not by one global cut-off,
  and by a margin over its given label.

Out of fold: K models are trained with `kitlib.train.fit` (RUN/folds/fold0 ..., resumable),
each sample is scored by the one model that never trained on it. A model that trained on a
mislabeled sample has learned its wrong label and would vouch for it. The quick audit (folds=0)
trains no model: blank, duplicate, and aliens from thumbnails alone, in seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kitlib import rundir
from kitlib.audit.config import ISSUES, SUSPECT_COLUMNS, AuditConfig
from kitlib.audit.grid import plot_suspects
from kitlib.audit.labels import label_issues
from kitlib.audit.oof import out_of_fold
from kitlib.audit.pixels import alien_issue, blank_issue, blank_scores, duplicate_issue, pixel_z
from kitlib.data.dataset import TrainingData, prepare_for
from kitlib.errors import KitError
from kitlib.files import write_table
from kitlib.train.loss import probability_losses


@dataclass
class AuditResult:
    """What an audit found, and where it wrote it."""

    run_dir: Path
    """RUN: suspects.csv, scores.csv, suspects.png, and the fold runs in folds/fold0 ... fold{K-1}."""
    scores: pd.DataFrame
    """Every sample: sample_index, given_label, one score column per issue, oof_loss, predicted_label."""
    suspects: pd.DataFrame
    """The flagged samples, worst first (the columns of suspects.csv)."""
    oof_probs: np.ndarray | None
    """(N, K) out-of-fold class probabilities, rows in the order of `scores` (None: the quick audit)."""


def score_table(data: TrainingData, probs: np.ndarray | None, feature_z: np.ndarray | None,
                config: AuditConfig) -> pd.DataFrame:
    """Every sample with its four issue scores, out-of-fold loss, prediction, and the copy it duplicates.

    `probs`: (N, K) out-of-fold probabilities; `feature_z`: (N,) robust z of the kNN feature distance;
    both None for the quick audit (no models: no mislabeled score, aliens from thumbnails alone).
    """
    targets = data.targets.numpy()
    n = len(targets)
    blank = blank_issue(blank_scores(data.images), config)
    duplicate, kept = duplicate_issue(data.images, data.ids, config, skip=blank >= 0.5)
    thumbnail_z = pixel_z(data.images, config)
    if probs is None:
        flagged, mislabeled, loss, predicted = np.zeros(n, bool), np.zeros(n), np.full(n, np.nan), None
    else:
        flagged, mislabeled, predicted = label_issues(probs, targets)
        loss = probability_losses(probs, targets).numpy().astype(np.float64)
    table = pd.DataFrame({
        "sample_index": data.ids, "given_label": [data.classes[t] for t in targets],
        "blank": blank, "duplicate": duplicate,
        "alien": alien_issue(thumbnail_z if feature_z is None else feature_z, thumbnail_z, config),
        "mislabeled": mislabeled, "oof_loss": loss,
        "predicted_label": [""] * n if predicted is None else [data.classes[p] for p in predicted],
        "duplicate_of": [data.ids[k] if k >= 0 else "" for k in kept],
    })
    # mislabeled counts only where confident learning flags it, the most certain first, capped
    cap = math.floor(config.max_mislabeled * len(table))
    ranked = np.flatnonzero(flagged)[np.argsort(-mislabeled[flagged], kind="stable")]
    table["mislabeled_flag"] = False
    table.loc[ranked[:cap], "mislabeled_flag"] = True
    return table.round({"blank": 4, "duplicate": 4, "alien": 4, "mislabeled": 4, "oof_loss": 4})


def suspects_from(scores: pd.DataFrame) -> pd.DataFrame:
    """The flagged rows of a score table, one per sample under its first issue (ISSUES order), worst first."""
    label_of = dict(zip(scores["sample_index"], scores["given_label"]))  # a duplicate suggests its kept copy's
    rows = []
    for r in scores.itertuples(index=False):
        for issue in ISSUES:
            value = getattr(r, issue)
            if value >= 0.5 and (issue != "mislabeled" or r.mislabeled_flag):
                suggested = {"mislabeled": r.predicted_label, "duplicate": label_of.get(r.duplicate_of, "")}
                rows.append([r.sample_index, issue, round(float(value), 4), r.given_label, suggested.get(issue, "")])
                break
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def audit(data, config: AuditConfig = AuditConfig(), out: str | Path = "runs/audit", *,
          started: float | None = None) -> AuditResult:
    """Score every training sample for the four issues; write RUN/scores.csv, suspects.csv, suspects.png.

    `data`: a TrainingData (every sample is audited, whatever its split) or a competition (decoded
    as `config.train` says). `started`: time.perf_counter() at which `config.time_budget` began
    (default: now), so a command's decoding counts against it.
    """
    started = time.perf_counter() if started is None else started
    if not isinstance(data, TrainingData):
        data = prepare_for(data, config.train, split=False)
    counts = np.bincount(data.targets.numpy(), minlength=len(data.classes))
    if counts.max(initial=0) < config.folds:
        raise KitError(f"{len(data.ids)} samples cannot fill {config.folds} folds: give fewer --folds.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None if config.time_budget is None else started + config.time_budget
    probs, z = out_of_fold(data, config, out, deadline=deadline) if config.folds else (None, None)
    with tqdm(total=1, desc="audit: scoring", disable=not config.train.progress) as bar:
        scores = score_table(data, probs, z, config)
        suspects = suspects_from(scores)
        bar.update(1)
    scores = scores.drop(columns=["mislabeled_flag"])  # suspects.csv says which were flagged
    write_table(out / rundir.SCORES, scores)
    write_table(out / rundir.SUSPECTS, suspects)
    plot_suspects(suspects, data, out / rundir.SUSPECTS_PNG)
    found = suspects["issue"].value_counts().reindex(ISSUES, fill_value=0)
    print(f"audit: {len(suspects)} suspects of {len(scores)} samples ("
          + ", ".join(f"{n} {issue}" for issue, n in found.items()) + f"); wrote {out / rundir.SUSPECTS}, "
          f"{out / rundir.SCORES}, {out / rundir.SUSPECTS_PNG}")
    return AuditResult(out, scores, suspects, probs)
