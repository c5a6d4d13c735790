"""Metrics: literal values on a hand-made case, parity with scikit-learn, the random baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from kitlib.errors import KitError
from kitlib.metrics import accuracy, confusion, macro_f1, per_class_prf, random_baseline_f1

# 3 classes, 8 samples; class 2 is never predicted.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 0, 1, 1]


def test_hand_made_case_literal_values():
    conf = confusion(Y_TRUE, Y_PRED, 3)
    assert conf.dtype == np.int64
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 2, 0]]
    prf = per_class_prf(conf)
    # class 0: TP 2, predicted 3, support 3; class 1: TP 2, predicted 5, support 2; class 2: TP 0
    np.testing.assert_allclose(prf["precision"], [2 / 3, 2 / 5, 0.0])
    np.testing.assert_allclose(prf["recall"], [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(prf["f1"], [2 / 3, 4 / 7, 0.0])
    assert prf["support"].tolist() == [3, 2, 3]
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((2 / 3 + 4 / 7) / 3)  # 0.4127
    assert accuracy(Y_TRUE, Y_PRED) == 0.5


def test_a_class_absent_from_truth_and_predictions_counts_as_zero():
    # sklearn with labels=range(4): class 3 never occurs -> F1 0, and the mean is over 4 classes
    assert macro_f1([0, 1, 2], [0, 1, 2], 4) == 0.75


def test_inputs_torch_scores_and_lists_agree():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    truth = torch.tensor([0, 1, 2, 2])
    assert confusion(truth, scores, 3).tolist() == confusion([0, 1, 2, 2], [0, 1, 2, 0], 3).tolist()
    assert macro_f1(truth, scores, 3) == macro_f1(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]), 3)
    assert accuracy(truth, scores) == 0.75


@pytest.mark.parametrize("seed", range(20))
def test_matches_sklearn_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    n = int(rng.integers(1, 300))
    # skewed classes, some possibly missing from truth or predictions
    y_true = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 0.5)))
    y_pred = np.where(rng.random(n) < 0.4, y_true, rng.choice(k, size=n))
    labels = list(range(k))
    assert confusion(y_true, y_pred, k).tolist() == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert macro_f1(y_true, y_pred, k) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0), abs=1e-12)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    prf = per_class_prf(confusion(y_true, y_pred, k))
    np.testing.assert_allclose(prf["precision"], p, atol=1e-12)
    np.testing.assert_allclose(prf["recall"], r, atol=1e-12)
    np.testing.assert_allclose(prf["f1"], f, atol=1e-12)
    assert prf["support"].tolist() == s.tolist()
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))


def test_bad_inputs_raise_kit_errors():
    with pytest.raises(KitError, match="outside 0..2"):
        confusion([0, 3], [0, 1], 3)
    with pytest.raises(KitError, match="2 labels but y_pred has 3"):
        macro_f1([0, 1], [0, 1, 1], 2)
    with pytest.raises(KitError, match="class names to indices"):
        accuracy(np.array(["cat", "dog"]), np.array(["cat", "cat"]))


def test_random_baselines_closed_forms_literal():
    balanced = random_baseline_f1([100] * 10)
    assert balanced["uniform"] == pytest.approx(0.1)
    assert balanced["prior"] == pytest.approx(0.1)
    assert balanced["majority"] == pytest.approx(2 * 0.1 / 1.1 / 10)  # 0.01818
    assert balanced["best"] == pytest.approx(0.1)
    skewed = random_baseline_f1([80, 15, 5])  # p = 0.8, 0.15, 0.05
    assert skewed["uniform"] == pytest.approx((1.6 / 3.4 + 0.3 / 1.45 + 0.1 / 1.15) / 3)  # 0.2550
    assert skewed["prior"] == pytest.approx(1 / 3)
    assert skewed["majority"] == pytest.approx(1.6 / 1.8 / 3)  # 0.2963
    assert skewed["best"] == pytest.approx(1 / 3)
    # the guesser knows the training prior (balanced) but the scored set is skewed
    shifted = random_baseline_f1([80, 15, 5], guess_counts=[1, 1, 1])
    assert shifted["prior"] == pytest.approx(shifted["uniform"])
    with pytest.raises(KitError, match="non-negative"):
        random_baseline_f1([3, -1])


@pytest.mark.parametrize("counts", [[700, 200, 100], [250] * 4, [500, 300, 150, 40, 10]])
def test_random_baselines_match_simulated_guessing(counts):
    rng = np.random.default_rng(0)
    k, y_true = len(counts), np.repeat(np.arange(len(counts)), counts)
    expected = random_baseline_f1(counts)
    prior = np.asarray(counts) / sum(counts)
    for name, guess in (("uniform", np.full(k, 1 / k)), ("prior", prior)):
        sims = [macro_f1(y_true, rng.choice(k, size=len(y_true), p=guess), k) for _ in range(200)]
        assert np.mean(sims) == pytest.approx(expected[name], abs=0.01), name
    always = np.full(len(y_true), int(np.argmax(counts)))
    assert macro_f1(y_true, always, k) == pytest.approx(expected["majority"], abs=1e-12)
