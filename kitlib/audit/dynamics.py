"""Mislabeled samples from the final model's first learning-rate cycle, for an audit without fold models.

    found = first_cycle_suspects(run)      # RUN/label_evidence.npz -> suspects.csv rows (issue mislabeled)
    add_suspects(run, found)               # appended to RUN/suspects.csv, worst first

A network fits the clean labels before it memorizes the wrong ones (Arpit et al., ICML 2017, "A
closer look at memorization in deep networks"; Liu et al., NeurIPS 2020, "Early-learning
regularization"); averaging its predictions on the training samples over training exposes those it
has not fit (Pleiss et al., NeurIPS 2020, "area under the margin"). The training loop averages
snapshots of the model's probabilities on every sample, taken through the first cycle before its
learning rate anneals (TrainConfig.label_snapshots). They are read separately for the samples held
out then and those trained on, as the two are calibrated differently:
- held out: honest, out-of-fold-like probabilities, read by the kit's confident learning
  (kitlib.audit.labels.label_issues, measured on the confident-learning benchmark);
- trained on: the evidence is that the net has not fit the given label yet, i.e. a low probability of
  it (the margin of Pleiss et al.): cleanlab's `low_self_confidence` filter, which flags as many of the
  lowest as confident learning counts wrong. Confident learning's own filters flag the samples
  confidently of another class, and a net that has not fit a sample yet is seldom confident about it:
  on the audit rehearsal at 300 s (README: Results) the filter found 107 of the 144 flipped labels
  among the trained-on samples in 233 flags, label_issues 54 in 238; on the digits demo both flag
  the same 13.
The quick audit sees no labels; this check costs `all` a few evaluation passes (README: Results).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kitlib import rundir
from kitlib.audit.config import ISSUES, SUSPECT_COLUMNS
from kitlib.audit.labels import RARE_CLASS, cleanlab_issues, label_issues, rare_samples
from kitlib.files import read_csv_strings, write_table


def first_cycle_suspects(run: str | Path, max_share: float = 0.1) -> pd.DataFrame:
    """The samples RUN's label snapshots call mislabeled (SUSPECT_COLUMNS, worst first; empty without
    RUN/label_evidence.npz): at most `max_share` of each group (held out, trained on), the most certain first."""
    evidence = rundir.read_label_evidence(run)
    if evidence is None:
        return pd.DataFrame(columns=SUSPECT_COLUMNS)
    rows = []
    for held_out in (True, False):
        part = np.flatnonzero(evidence.held_out == held_out)
        targets = evidence.targets[part]
        if len(part) == 0 or np.bincount(targets).max() < RARE_CLASS:
            continue
        probs = evidence.probs[part]
        flagged, score, suggested = label_issues(probs, targets) if held_out else not_fit(probs, targets)
        ranked = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")]
        for r in ranked[:math.floor(max_share * len(part))]:
            rows.append([evidence.ids[part[r]], "mislabeled", round(float(score[r]), 4),
                         evidence.classes[targets[r]], evidence.classes[suggested[r]], "", ""])
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def not_fit(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((N,) flagged, (N,) score in [0, 1], (N,) suggested class) of trained-on samples: cleanlab's
    `low_self_confidence` filter; score 1 - p_given, at least 0.5 where flagged; the suggestion is the most
    probable other class. Samples of classes with fewer than RARE_CLASS samples are never flagged."""
    n = len(targets)
    flagged = cleanlab_issues(probs, targets, "low_self_confidence") & ~rare_samples(targets, probs.shape[1])
    score = np.clip(1.0 - probs[np.arange(n), targets].astype(np.float64), 0.0, 1.0)
    score = np.where(flagged, np.maximum(score, 0.5), score)
    others = probs.copy()
    others[np.arange(n), targets] = -1.0
    return flagged, score, others.argmax(axis=1)


def add_suspects(run: str | Path, found: pd.DataFrame) -> pd.DataFrame:
    """Append `found` to RUN/suspects.csv, except samples it already lists (a sample is listed under its first
    issue, ISSUES order, and mislabeled is the last); rewrite it worst first and return it."""
    path = Path(run) / rundir.SUSPECTS
    listed = read_csv_strings(path) if path.is_file() else pd.DataFrame(columns=SUSPECT_COLUMNS)
    listed["score"] = listed["score"].astype(float)
    new = found[~found["sample_index"].isin(listed["sample_index"])]
    table = pd.concat([listed, new], ignore_index=True) if len(listed) else new.reset_index(drop=True)
    order = table["issue"].map({issue: i for i, issue in enumerate(ISSUES)})
    table = table.iloc[np.lexsort((order.to_numpy(), -table["score"].to_numpy()))].reset_index(drop=True)
    write_table(path, table)
    return table
