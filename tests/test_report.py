"""The evaluation report: literal numbers on a hand-made case, the verdict, files, real predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from kitlib.errors import KitError
from kitlib.predict.report import evaluate, plot_confusion

CLASSES = ["cat", "dog", "rocking chair, rocker"]
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 0, 1, 1]  # 'rocking chair, rocker' is never predicted


def _probs(pred, k=3):
    """Soft (N, K) probabilities whose argmax is `pred`."""
    probs = np.full((len(pred), k), 0.1)
    probs[np.arange(len(pred)), pred] = 0.8
    return probs


def test_hand_made_case_numbers_and_files(tmp_path, capsys):
    report = evaluate(Y_TRUE, _probs(Y_PRED), CLASSES, out_dir=tmp_path / "eval", title="fold 0")
    assert report.macro_f1 == pytest.approx((2 / 3 + 4 / 7) / 3)  # 0.4127
    assert report.accuracy == 0.5
    assert report.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 2, 0]]
    table = report.per_class
    assert table.index.tolist() == CLASSES
    np.testing.assert_allclose(table["precision"], [2 / 3, 0.4, 0.0])
    np.testing.assert_allclose(table["recall"], [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(table["f1"], [2 / 3, 4 / 7, 0.0])
    assert table["support"].tolist() == [3, 2, 3] and table["predicted"].tolist() == [3, 5, 0]
    pairs = report.confused_pairs
    assert pairs[["true", "predicted", "count"]].values.tolist() == [
        ["rocking chair, rocker", "dog", 2], ["cat", "dog", 1], ["rocking chair, rocker", "cat", 1]]
    np.testing.assert_allclose(pairs["share"], [2 / 3, 1 / 3, 1 / 3])
    # truth counts 3, 2, 3 (p = .375, .25, .375): uniform = mean 2p/(3p+1), majority = 2(.375)/1.375/3
    assert report.baseline == pytest.approx({"uniform": 0.330532, "prior": 1 / 3,
                                             "majority": 0.181818, "best": 1 / 3}, abs=1e-6)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fold 0: macro-F1 0.4127 | accuracy 0.5000 | 8 samples, 3 classes"
    assert lines[1] == ("random-guess macro-F1 0.3333 (prior guessing; uniform 0.3305, prior 0.3333, "
                        "always-majority 0.1818)")
    assert lines[2] == "above the random baseline by 0.0794 (1.2x)."
    assert lines[3] == "1 class(es) never predicted: 'rocking chair, rocker'"
    assert lines[5].startswith("most confused (true -> predicted): 'rocking chair, rocker' -> 'dog' 2 (67%)")
    assert str(report) == "\n".join(lines)

    assert set(report.files) == {"per_class", "confusion", "summary"}
    saved = pd.read_csv(report.files["per_class"], dtype={"class": str})
    assert saved.columns.tolist() == ["class", "precision", "recall", "f1", "support", "predicted"]
    assert saved["class"].tolist() == CLASSES and saved["f1"].round(6).tolist() == [0.666667, 0.571429, 0.0]
    assert report.files["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "eval" / "report.txt").read_text().startswith("fold 0: macro-F1 0.4127")


def test_says_plainly_when_not_above_the_baseline(capsys):
    report = evaluate(Y_TRUE, _probs([0] * 8), CLASSES)  # always 'cat' = the majority guesser
    assert report.macro_f1 == pytest.approx(report.baseline["majority"])  # 2 * .375 / 1.375 / 3
    assert "NOT above the random baseline" in capsys.readouterr().out
    assert report.files == {}


def test_names_torch_and_logits_agree(capsys):
    names = [CLASSES[i] for i in Y_TRUE]
    logits = torch.log(torch.tensor(_probs(Y_PRED), dtype=torch.float16))
    report = evaluate(names, logits, CLASSES)
    assert report.macro_f1 == pytest.approx((2 / 3 + 4 / 7) / 3)
    with pytest.raises(KitError, match="expected \\(N, 3\\)"):
        evaluate(Y_TRUE, _probs(Y_PRED, 4), CLASSES)
    with pytest.raises(KitError, match="not in classes: \\['bird'\\]"):
        evaluate(["bird"] + names[1:], _probs(Y_PRED), CLASSES)
    with pytest.raises(KitError, match="7 true labels for 8 rows"):
        evaluate(Y_TRUE[:7], _probs(Y_PRED), CLASSES)


def test_plot_many_classes_abbreviated(tmp_path):
    classes = [f"class number {i} with a very long name, and a comma" for i in range(100)]
    conf = np.random.default_rng(0).integers(0, 5, size=(100, 100)) + np.eye(100, dtype=int) * 50
    path = plot_confusion(conf, classes, tmp_path / "c.png", title="100 classes")
    assert path.stat().st_size > 10_000


def test_real_out_of_fold_predictions(cl_noisy_root, capsys):
    """The confident-learning benchmark's 4-fold ResNet-50 probabilities on CIFAR-10 (20% label noise)."""
    labels = json.loads((cl_noisy_root / "noisy_labels__sparsity_0.0__noise_0.2.json").read_text())
    probs = np.load(cl_noisy_root / "pred_probs__sparsity_0.0__noise_0.2.npy").astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    classes = sorted({path.split("/")[-2] for path in labels})
    true = np.array([classes.index(path.split("/")[-2]) for path in labels])
    noisy = np.array(list(labels.values()))
    report = evaluate(true, probs, classes)
    assert report.macro_f1 == pytest.approx(f1_score(true, probs.argmax(1), average="macro"), abs=1e-12)
    assert round(report.macro_f1, 4) == 0.8033 and round(report.accuracy, 4) == 0.8041
    assert report.confused_pairs.iloc[0][["true", "predicted", "count"]].tolist() == ["dog", "cat", 806]
    assert report.baseline["best"] == pytest.approx(0.1)  # 5,000 images a class
    against_noisy = evaluate(noisy, probs, classes)  # what a user sees scoring against noisy labels
    assert round(against_noisy.macro_f1, 4) == 0.6405
    assert capsys.readouterr().out.count("above the random baseline by") == 2
