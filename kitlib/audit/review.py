"""Looking at the samples most likely wrong: the worst validation losses, the flattest images, the review.

    table = top_losses("runs/audit", k=48)           # a run, or a folder of fold runs (out-of-fold)
    plot_top_losses(table, data, "images/top_losses.png")
    review_widget(pd.concat([suspects, table]), data, "runs/audit/decisions.csv", competition=competition)

Losses come from a run's validation predictions (RUN/val_probs.npy + RUN/val.csv, written by
`fit` with the eval transform only, read through kitlib.rundir) through kitlib.train.loss, the one
place losses are computed. They are honest only out of fold: a sample's loss must come from a model that never
trained on it, so train K runs with `folds=K, fold=i` and pass their parent folder. The review
(kitlib.audit.widget) saves each decision as it is made into decisions.csv (`sample_index,action,new_label`,
through kitlib.audit.decisions), which is what `python -m kitlib train --decisions` applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kitlib import rundir
from kitlib.audit.decisions import read_decisions  # noqa: F401 (review's API)
from kitlib.audit.grid import caption, first_text, plot_top_losses, sample_pixels  # noqa: F401 (review's API)
from kitlib.audit.pixels import blank_scores
from kitlib.audit.widget import Review
from kitlib.errors import KitError
from kitlib.train.loss import probability_losses

COLUMNS = ["sample_index", "label", "predicted", "p_label", "p_pred", "loss"]


# --------------------------------------------------------------------------------------------- scores

def top_losses(run: str | Path, k: int | None = None) -> pd.DataFrame:
    """The `k` validation samples with the highest loss, worst first (all when k is None).

    Columns: sample_index, label (given), predicted, p_label and p_pred (probabilities of those two
    classes), loss (cross-entropy of the given label, no label smoothing).
    """
    found = rundir.read_out_of_fold(run)
    table, probs, classes = found.table, found.probs, found.classes
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(table["label"]) - set(index))
    if unknown:
        raise KitError(f"{run}: val.csv has labels {unknown[:5]} that are not classes of its model.")
    targets = table["label"].map(index).to_numpy(dtype=np.int64, copy=True)
    loss = probability_losses(probs, targets).numpy()
    predicted = probs.argmax(axis=1)
    rows = np.arange(len(table))
    out = pd.DataFrame({"sample_index": table["sample_index"], "label": table["label"],
                        "predicted": [classes[i] for i in predicted], "p_label": probs[rows, targets],
                        "p_pred": probs[rows, predicted], "loss": loss})
    out = out.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)
    return out if k is None else out.head(k)


def flattest(data, k: int = 24) -> pd.DataFrame:
    """The `k` training images with the least pixel variation (blanks, lens caps), flattest first.

    `data`: a kitlib.data.TrainingData. Columns: sample_index, label, pixel_std.
    """
    std = blank_scores(data.images)
    order = np.argsort(std, kind="stable")[:k]
    return pd.DataFrame({"sample_index": [data.ids[i] for i in order],
                         "label": [data.classes[int(data.targets[i])] for i in order], "pixel_std": std[order]})


# --------------------------------------------------------------------------------------------- review

def review_widget(table: pd.DataFrame, data, out_csv: str | Path, **options) -> Review:
    """The review (kitlib.audit.widget.Review) over the table's samples; shows itself in a notebook.

    `table`: suspects.csv rows and/or top_losses / flattest rows. `options`: competition= (to open
    the image files), size=, columns=, page_size=, view_size=. Every decision is saved to `out_csv` as it is made.
    """
    return Review(table, data, out_csv, **options)
