"""Mislabeled samples from the final model's first learning-rate cycle, for an audit without fold models.

    found = first_cycle_suspects(run)      # RUN/label_evidence.npz -> suspects.csv rows (issue mislabeled)
    add_suspects(run, found)               # appended to RUN/suspects.csv, worst first

A network fits the clean labels before it memorizes the wrong ones (Arpit et al., ICML 2017, "A
closer look at memorization in deep networks"); averaged over training, the margin of a sample's given
label (its logit minus the largest other) separates the two: the area under the margin (Pleiss et al.,
NeurIPS 2020). The training loop keeps, free, each sample's training probabilities and margins through
the first cycle, and the held-out samples' validation probabilities over its second half
(TrainConfig.label_evidence). The two groups are read apart, as they are calibrated differently:
- held out: honest, out-of-fold-like probabilities, read by the kit's confident learning
  (kitlib.audit.labels.label_issues, measured on the confident-learning benchmark);
- trained on: a sample the net did not fit has a negative area under the margin (on average the net
  ranked another class first) that also lies far below its class's: NOT_FIT_Z robust standard
  deviations (median and MAD of the class). Both parts are needed, as the margins' level moves with the
  budget: on the audit rehearsal (README: Results) a 300 s run left 882 of its 2,251 samples with a
  negative margin (the relative part picks 118, 75 of them among the 144 flipped labels), a 1,200 s run
  50 (40 flipped); on the clean slide demo no margin is negative, while the relative part alone would
  list 13 of its 250 samples. Cleanlab's filters, given the mean training probabilities, flag none at
  1,200 s: a net that has trained on a sample is rarely confident of another class for it.
The quick audit sees no labels; this check costs `all` nothing but a few sums per batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kitlib import rundir
from kitlib.audit.config import ISSUES, SUSPECT_COLUMNS
from kitlib.audit.labels import RARE_CLASS, label_issues, rare_samples
from kitlib.files import read_csv_strings, write_table

NOT_FIT_Z = 2.0
"""A trained-on sample is not fit when its area under the margin is this many robust standard deviations
(1.4826 x the median absolute deviation) below its class's median."""


def first_cycle_suspects(run: str | Path, max_share: float = 0.1) -> pd.DataFrame:
    """The samples RUN's label evidence calls mislabeled (SUSPECT_COLUMNS, worst first; empty without
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
        flagged, score, suggested = (label_issues(probs, targets) if held_out
                                     else not_fit(evidence.margins[part], probs, targets))
        ranked = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")]
        for r in ranked[:math.floor(max_share * len(part))]:
            rows.append([evidence.ids[part[r]], "mislabeled", round(float(score[r]), 4),
                         evidence.classes[targets[r]], evidence.classes[suggested[r]], "", ""])
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def not_fit(margins: np.ndarray, probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((N,) flagged, (N,) score in [0, 1], (N,) suggested class) of trained-on samples, from their (N,) mean
    training margins and (N, K) mean training probabilities: flagged when the margin is negative (on average
    the net ranked another class first) and NOT_FIT_Z robust standard deviations below the median of its
    class; the score is the share of its class with a larger margin; the suggestion the most probable other
    class. Classes with fewer than RARE_CLASS samples, or whose margins do not spread, are never flagged."""
    n = len(targets)
    z, score = np.zeros(n), np.zeros(n)
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        centre = np.median(margins[members])
        spread = 1.4826 * np.median(np.abs(margins[members] - centre))
        if spread > 0:
            z[members] = (margins[members] - centre) / spread
        ordered = np.sort(margins[members])
        score[members] = 1.0 - np.searchsorted(ordered, margins[members], side="right") / len(members)
    flagged = (z < -NOT_FIT_Z) & (margins < 0) & ~rare_samples(targets, probs.shape[1])
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
