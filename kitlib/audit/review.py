"""Looking at the samples most likely wrong: the worst validation losses, the flattest images, a review grid.

    table = top_losses("runs/audit", k=48)           # a run, or a folder of fold runs (out-of-fold)
    plot_top_losses(table, data, "images/top_losses.png")
    review_widget(pd.concat([suspects, table]), data, "runs/audit/decisions.csv")  # audit.audit(...).suspects

Losses come from a run's validation predictions (RUN/val_probs.npy + RUN/val.csv, written by
`fit` with the eval transform only, read through kitlib.rundir) through kitlib.train.loss, the one
place losses are computed. They are honest only out of fold: a sample's loss must come from a model that never
trained on it, so train K runs with `folds=K, fold=i` and pass their parent folder. The widget's
decisions.csv (`sample_index,action,new_label`) is what `python -m kitlib train --decisions` applies.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from kitlib import rundir
from kitlib.audit.grid import caption, first_text, plot_top_losses, sample_pixels  # noqa: F401 (review's API)
from kitlib.audit.pixels import blank_scores
from kitlib.data.dataset import ACTIONS
from kitlib.errors import KitError
from kitlib.files import read_csv_strings, write_table
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

def read_decisions(path: str | Path) -> pd.DataFrame:
    """A decisions.csv as a table (sample_index, action, new_label); empty when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["sample_index", "action", "new_label"], dtype=object)
    table = read_csv_strings(path)
    if list(table.columns) != ["sample_index", "action", "new_label"]:
        raise KitError(f"{path}: columns {list(table.columns)}; expected sample_index,action,new_label.")
    return table.fillna("")


class Review:
    """The review grid: per image keep / drop / relabel (with the new label); Save writes decisions.csv.

    Controls are reachable by sample_index (`actions[id].value = "drop"`), so a test or a script can
    drive it like a user. Saving keeps the file's rows for samples not shown, so reviews add up.
    """

    def __init__(self, table: pd.DataFrame, data, out_csv: str | Path, *, size: int = 112, columns: int = 6):
        import ipywidgets as w
        from PIL import Image

        table = table.drop_duplicates("sample_index").reset_index(drop=True)
        self.path = Path(out_csv)
        self.ids = list(table["sample_index"])
        before = read_decisions(self.path).drop_duplicates("sample_index", keep="last").set_index("sample_index")
        self.actions, self.labels, cells = {}, {}, []
        for image, (_, row) in zip(sample_pixels(table, data), table.iterrows()):
            sample = row["sample_index"]
            action = before["action"].get(sample, "keep")
            if action not in ACTIONS:
                raise KitError(f"{self.path}: action {action!r} for {sample!r}: choose one of {', '.join(ACTIONS)}.")
            guess = before["new_label"].get(sample) or first_text(row, "predicted", "suggested_label")
            guess = guess if guess in data.classes else first_text(row, "label", "given_label")
            buffer = io.BytesIO()
            scale = max(1, size // max(image.shape[:2]))
            Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale),
                                          Image.NEAREST).save(buffer, format="PNG")
            self.actions[sample] = w.ToggleButtons(options=["keep", "drop", "relabel"], value=action,
                                                   style={"button_width": "52px"})
            self.labels[sample] = w.Dropdown(options=list(data.classes), value=guess, disabled=action != "relabel",
                                             layout=w.Layout(width="170px"))
            self.actions[sample].observe(self._toggle(sample), names="value")
            text = w.HTML(f"<pre style='font-size:10px;line-height:1.2'>{html.escape(caption(row))}</pre>")
            cells.append(w.VBox([w.Image(value=buffer.getvalue(), format="png"), text,
                                 self.actions[sample], self.labels[sample]]))
        self.status = w.Label(f"{len(cells)} images; nothing saved yet ({self.path})")
        save = w.Button(description="Save decisions", button_style="primary", icon="save")
        save.on_click(self.save)
        grid = w.GridBox(cells, layout=w.Layout(grid_template_columns=f"repeat({columns}, 180px)"))
        self.widget = w.VBox([w.HBox([save, self.status]), grid])

    def _toggle(self, sample: str):
        """The observer that enables the label menu only while the action is relabel."""
        menu = self.labels[sample]

        def changed(event) -> None:
            menu.disabled = event["new"] != "relabel"

        return changed

    def decisions(self) -> pd.DataFrame:
        """The decisions shown, in grid order: sample_index, action, new_label ('' unless relabel)."""
        return pd.DataFrame({"sample_index": self.ids, "action": [self.actions[s].value for s in self.ids],
                             "new_label": [self.labels[s].value if self.actions[s].value == "relabel" else ""
                                           for s in self.ids]})

    def save(self, *_) -> Path:
        """Write decisions.csv: earlier rows for samples not shown, then this grid's rows (standard CSV quoting)."""
        earlier = read_decisions(self.path)
        rows = pd.concat([earlier[~earlier["sample_index"].isin(self.ids)], self.decisions()], ignore_index=True)
        write_table(self.path, rows)
        counts = rows["action"].value_counts().to_dict()
        self.status.value = (f"saved {self.path}: " + ", ".join(f"{n} {a}" for a, n in counts.items())
                             + " -> train with decisions=this file")
        return self.path

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def review_widget(table: pd.DataFrame, data, out_csv: str | Path, **options) -> Review:
    """The review grid over the table's samples (top_losses and/or flattest rows); shows itself in a notebook."""
    return Review(table, data, out_csv, **options)
