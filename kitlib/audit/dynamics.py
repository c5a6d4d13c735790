"""Mislabeled samples from the final model's first learning-rate cycle, for an audit without fold models.

    found = first_cycle_suspects(run)      # RUN/label_evidence.npz -> suspects.csv rows (issue mislabeled)
    add_suspects(run, found)               # appended to RUN/suspects.csv, worst first

A network fits the clean labels before it memorizes the wrong ones (Arpit et al., ICML 2017, "A
closer look at memorization in deep networks"); averaged over training, the margin of a sample's given
label (its logit minus the largest other) separates the two: the area under the margin (Pleiss et al.,
NeurIPS 2020). The training loop keeps, free, each sample's training probabilities and margins through
the first cycle, and the held-out samples' validation probabilities over its second half
(TrainConfig.label_evidence). Both groups are read by one rule, each sample against its own class: it
is listed when its margin lies MARGIN_Z robust standard deviations (median and MAD of its class) below
its class's median, and is low in absolute terms too:
- held out: its margin is that of its mean validation probabilities (log of the given label's minus log
  of the largest other's), and it must be below log(1/2) (HELD_OUT_MARGIN): the net, which never trained
  on it, finds another class at least twice as probable;
- trained on: its area under the margin must be among the lowest of the trained-on samples, as many as
  the share e of held-out samples the net gets wrong allows (below the margin of the floor(e n)-th lowest,
  or below 0 if that is lower), with e the lower 95 % Clopper-Pearson bound of that share. A net that
  trained on a sample fits it, and over a long cycle memorizes a wrong label: that lifts the margins but
  keeps their order, while e, measured on samples it never trained on, stays honest; its lower bound
  keeps one unlucky held-out sample from opening the cut on clean labels.
On the audit rehearsal (README: Results) a 1,200 s run on a bf16 CPU (590 epochs in the first cycle)
left no trained-on sample with a negative area under the margin: the net had memorized every flipped
label within the first tenth of the cycle. The rule it replaced asked for a negative margin (and held
out samples went through the kit's confident learning): mislabeled F1 0.19 there, now 0.48, and at
300 s 0.49 to 0.52 (before 0.48 to 0.51). On the digits demo two runs list 36 and 37, with 30 and 29 of
the 30 flips (F1 0.91 and 0.87; without the lower bound and the held-out margin, 49 and 50). On the clean
slide demo none in the three runs whose evidence is kept (one had listed 4 without those guards: a
held-out near-tie let the lowest 1.6 % of trained-on margins through). The quick audit sees no labels; this check costs `all`
nothing but a few sums per batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

from kitlib import rundir
from kitlib.audit.config import ISSUES, SUSPECT_COLUMNS
from kitlib.audit.labels import RARE_CLASS, rare_samples
from kitlib.audit.pixels import robust_z
from kitlib.files import read_csv_strings, write_table

MARGIN_Z = 2.0
"""A sample is listed when its margin is this many robust standard deviations (1.4826 x the median
absolute deviation) below its class's median."""
HELD_OUT_MARGIN = math.log(0.5)
"""A held-out sample is listed only when the net finds another class at least twice as probable as its label."""
CONFIDENCE = 0.95
"""The held-out error share that opens the trained-on cut is its lower bound at this confidence (Clopper-Pearson)."""


def first_cycle_suspects(run: str | Path, max_share: float = 0.1) -> pd.DataFrame:
    """The samples RUN's label evidence calls mislabeled (SUSPECT_COLUMNS, worst first; empty without
    RUN/label_evidence.npz): at most `max_share` of each group (held out, trained on), the most certain first."""
    evidence = rundir.read_label_evidence(run)
    if evidence is None:
        return pd.DataFrame(columns=SUSPECT_COLUMNS)
    held, trained = evidence.held_out, ~evidence.held_out
    held_margins = probability_margins(evidence.probs[held], evidence.targets[held])
    # a held-out sample must be misclassified, clearly; a trained-on one among the lowest margins, as many as the
    # share of held-out samples the net gets wrong (its honest error; memorizing lifts the margins, keeps their order)
    error = error_lower_bound(int((held_margins < 0).sum()), int(held.sum()))
    trained_margins = np.sort(evidence.margins[trained])
    cut = math.floor(error * len(trained_margins))
    memorized = max(0.0, float(trained_margins[cut])) if 0 < cut < len(trained_margins) else 0.0
    rows = []
    for part, margins, below in ((np.flatnonzero(held), held_margins, HELD_OUT_MARGIN),
                                 (np.flatnonzero(trained), evidence.margins[trained], memorized)):
        targets = evidence.targets[part]
        if len(part) == 0 or np.bincount(targets).max() < RARE_CLASS:
            continue
        probs = evidence.probs[part]
        flagged, score, suggested = low_margins(margins, probs, targets, below)
        ranked = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")]
        for r in ranked[:math.floor(max_share * len(part))]:
            rows.append([evidence.ids[part[r]], "mislabeled", round(float(score[r]), 4),
                         evidence.classes[targets[r]], evidence.classes[suggested[r]], "", ""])
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def error_lower_bound(errors: int, samples: int) -> float:
    """The lower CONFIDENCE bound of an error share seen as `errors` in `samples` (Clopper-Pearson, 1934: the
    beta quantile); 0 without errors or samples."""
    if errors <= 0 or samples <= 0:
        return 0.0
    return float(beta.ppf(1.0 - CONFIDENCE, errors, samples - errors + 1))


def probability_margins(probs: np.ndarray, targets: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(N,) log-probability margins: log p(given label) - log of the largest other class's p, from (N, K)
    probabilities and (N,) given labels; the logit margin of a softmax, for probabilities averaged over epochs."""
    given = probs[np.arange(len(targets)), targets]
    return np.log(given + eps) - np.log(_others(probs, targets).max(axis=1) + eps)


def low_margins(margins: np.ndarray, probs: np.ndarray, targets: np.ndarray,
                below: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((N,) flagged, (N,) score in [0, 1], (N,) suggested class) from (N,) margins of the given labels and
    (N, K) probabilities: flagged when the margin is MARGIN_Z robust standard deviations below the median of
    its class and below `below` (0: the net ranked another class first); the score is the share of its class
    with a larger margin; the suggestion the most probable other class. Classes with fewer than RARE_CLASS
    samples, or whose margins are all equal, are never flagged (kitlib.audit.pixels.robust_z, per class)."""
    n = len(targets)
    z, score = np.zeros(n), np.zeros(n)
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        z[members] = robust_z(margins[members])
        ordered = np.sort(margins[members])
        score[members] = 1.0 - np.searchsorted(ordered, margins[members], side="right") / len(members)
    flagged = (z < -MARGIN_Z) & (margins < below) & ~rare_samples(targets, probs.shape[1])
    return flagged, score, _others(probs, targets).argmax(axis=1)


def _others(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A copy of (N, K) `probs` with each given label's entry set to -1: what the other classes offer."""
    others = probs.copy()
    others[np.arange(len(targets)), targets] = -1.0
    return others


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
