"""kitlib.review: losses from a run's validation predictions, blank scores, the grid PNG, the review widget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kitlib import checkpoint
from kitlib.audit import review
from kitlib.data import TrainingData, apply_decisions
from kitlib.errors import KitError

CLASSES = ["a", "b, c", 'd "quoted"']
D = CLASSES[2]


def _run(folder, ids, labels, probs):
    """A run folder as fit leaves it, reduced to what review reads: val.csv, val_probs.npy, best.pt's classes."""
    folder.mkdir(parents=True)
    pd.DataFrame({"sample_index": ids, "label": labels}).to_csv(folder / "val.csv", index=False)
    np.save(folder / "val_probs.npy", np.asarray(probs, dtype=np.float32))
    checkpoint.save({"classes": CLASSES}, folder / "best.pt")
    return folder


PROBS = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]]


def test_top_losses_worst_first_with_literal_values(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    table = review.top_losses(run)
    assert list(table.columns) == review.COLUMNS
    assert table["sample_index"].tolist() == ["s1", "s2", "s0"]
    assert table["predicted"].tolist() == [D, "b, c", "a"]
    np.testing.assert_allclose(table["loss"], [2.302585, 0.693147, 0.356675], atol=1e-6)  # -ln p(label)
    np.testing.assert_allclose(table["p_label"], [0.1, 0.5, 0.7], atol=1e-7)
    np.testing.assert_allclose(table["p_pred"], [0.8, 0.5, 0.7], atol=1e-7)
    assert review.top_losses(run, k=1)["sample_index"].tolist() == ["s1"]


def test_top_losses_joins_the_folds_of_one_split(tmp_path):
    _run(tmp_path / "audit" / "fold0", ["s0", "s1"], ["a", "a"], PROBS[:2])
    _run(tmp_path / "audit" / "fold1", ["s2"], ["b, c"], PROBS[2:])
    assert review.top_losses(tmp_path / "audit")["sample_index"].tolist() == ["s1", "s2", "s0"]
    _run(tmp_path / "audit" / "fold2", ["s2"], ["b, c"], PROBS[2:])
    with pytest.raises(KitError, match=r"samples \['s2'\] are in more than one run's validation split"):
        review.top_losses(tmp_path / "audit")
    with pytest.raises(KitError, match="no val_probs.npy there or in its subfolders"):
        review.top_losses(tmp_path)


def _data(images: torch.Tensor, labels: list[str]) -> TrainingData:
    n = len(images)
    return TrainingData(classes=CLASSES, ids=[f"s{i}" for i in range(n)], images=images, masks=None,
                        targets=torch.tensor([CLASSES.index(x) for x in labels]),
                        train_index=torch.arange(n), val_index=torch.arange(0), fit="squash")


def _images() -> torch.Tensor:
    """(3, 3, 4, 4) uint8: s0 half black / half white in every channel, s1 one flat colour, s2 only red varies."""
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    images[0, :, :, 2:] = 255
    images[1] = torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1)
    images[2, 0, :, 2:] = 255
    images[2, 1:] = 90
    return images


def test_blank_scores_and_flattest():
    np.testing.assert_allclose(review.blank_scores(_images()), [0.5, 0.0, 0.5 / 3], atol=1e-12)
    flat = review.flattest(_data(_images(), ["a", "b, c", "a"]), k=2)
    assert flat["sample_index"].tolist() == ["s1", "s2"]
    assert flat["label"].tolist() == ["b, c", "a"]


def test_plot_top_losses_captions_each_image(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    table = review.top_losses(run)
    assert review.caption(table.iloc[0]) == 's1\nlabel: a\npred: d "quoted" (0.80)\nloss 2.30, p(label) 0.10'
    data = _data(_images(), ["a", "a", "b, c"])
    path = review.plot_top_losses(table, data, tmp_path / "images" / "top.png", columns=2)
    assert Image.open(path).size == (420, 540)  # 2 columns x 2.1 in, 2 rows x 2.7 in, at 100 dpi
    with pytest.raises(KitError, match=r"samples \['s9'\] are not in the decoded data"):
        review.plot_top_losses(pd.DataFrame({"sample_index": ["s9"], "label": ["a"]}), data, tmp_path / "x.png")


def test_review_widget_saves_the_exact_csv_that_training_applies(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    data = _data(_images(), ["a", "a", "b, c"])
    table = pd.concat([review.top_losses(run, k=2), review.flattest(data, k=1)])  # s1, s2, then s1 again
    out = tmp_path / "decisions.csv"
    grid = review.review_widget(table, data, out)
    assert grid.ids == ["s1", "s2"]
    assert grid.labels["s1"].value == D and grid.labels["s1"].disabled  # starts at the model's guess
    grid.actions["s1"].value = "relabel"
    grid.actions["s2"].value = "drop"
    assert not grid.labels["s1"].disabled and grid.labels["s2"].disabled
    save_button = grid.widget.children[0].children[0]
    save_button.click()  # as a user would
    assert out.read_text(encoding="utf-8") == (
        'sample_index,action,new_label\ns1,relabel,"d ""quoted"""\ns2,drop,\n')

    # a second review shows s0 and s2: s2 starts as saved, s1 (not shown) is kept in the file
    again = review.review_widget(review.top_losses(run).iloc[1:], data, out)
    assert (again.actions["s2"].value, again.actions["s0"].value) == ("drop", "keep")
    again.actions["s0"].value = "relabel"
    again.labels["s0"].value = "b, c"
    again.actions["s2"].value = "keep"
    again.save()
    assert out.read_text(encoding="utf-8") == (
        'sample_index,action,new_label\ns1,relabel,"d ""quoted"""\ns2,keep,\ns0,relabel,"b, c"\n')

    samples = pd.DataFrame({"sample_index": ["s0", "s1", "s2", "s3"], "label": ["a", "a", "b, c", "a"]})
    applied = apply_decisions(samples, out, CLASSES)
    assert applied.to_dict("list") == {"sample_index": ["s0", "s1", "s2", "s3"], "label": ["b, c", D, "b, c", "a"]}


def test_review_starts_from_the_audits_suggestion(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    data = _data(_images(), ["a", "a", "b, c"])
    suspects = pd.DataFrame({"sample_index": ["s0", "s2"], "issue": ["mislabeled", "blank"], "score": [0.9, 1.0],
                             "given_label": ["a", "b, c"], "suggested_label": ["b, c", ""]})
    table = pd.concat([suspects, review.top_losses(run, k=2)])  # as notebook 01 shows them: s0, s2, then s1
    grid = review.review_widget(table, data, tmp_path / "decisions.csv")
    assert grid.ids == ["s0", "s2", "s1"]
    assert [grid.labels[s].value for s in grid.ids] == ["b, c", "b, c", D]  # suggestion, given label, prediction
    assert review.caption(table.iloc[0]) == "s0\nlabel: a\nmislabeled 0.90\nsuggested: b, c"
    assert review.caption(table.iloc[1]) == "s2\nlabel: b, c\nblank 1.00"
