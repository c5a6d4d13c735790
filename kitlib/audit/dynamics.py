"""Mislabeled samples from the final model's first learning-rate cycle, for an audit without fold models.

    found = first_cycle_suspects(run)      # RUN/label_evidence.npz -> suspects.csv rows (issue mislabeled)
    add_suspects(run, found)               # appended to RUN/suspects.csv, worst first

A network fits the clean labels before it memorizes the wrong ones (Arpit et al., ICML 2017, "A
closer look at memorization in deep networks"; Liu et al., NeurIPS 2020, "Early-learning
regularization"); averaging its predictions on the training samples over training exposes those it
has not fit (Pleiss et al., NeurIPS 2020, "area under the margin"). The training loop averages
snapshots of the model's probabilities on every sample, taken through the first cycle before its
learning rate anneals (TrainConfig.label_snapshots). Here the kit's confident learning
(kitlib.audit.labels.label_issues, on cleanlab) reads them, separately for the samples held out then
(honest probabilities) and those trained on (confident ones): its per-class thresholds assume one
calibration. The quick audit sees no labels; this check costs `all` a few evaluation passes
(README: Results).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kitlib import rundir
from kitlib.audit.config import ISSUES, SUSPECT_COLUMNS
from kitlib.audit.labels import RARE_CLASS, label_issues
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
        flagged, score, suggested = label_issues(evidence.probs[part], targets)
        ranked = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")]
        for r in ranked[:math.floor(max_share * len(part))]:
            rows.append([evidence.ids[part[r]], "mislabeled", round(float(score[r]), 4),
                         evidence.classes[targets[r]], evidence.classes[suggested[r]], "", ""])
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


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
