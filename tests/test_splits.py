"""kitlib.splits: stratified, disjoint, deterministic; groups never straddle folds."""

from __future__ import annotations

import numpy as np
import pytest

from kitlib.errors import KitError
from kitlib.data.splits import holdout, stratified_folds

LABELS = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 7 + ["d"])


def test_folds_are_stratified_and_cover_every_sample_once():
    folds = stratified_folds(LABELS, 5, seed=0)
    assert np.bincount(folds).tolist() == [18, 18, 18, 17, 17]
    for label, per_fold in [("a", [10] * 5), ("b", [6] * 5)]:
        assert np.bincount(folds[LABELS == label], minlength=5).tolist() == per_fold
    assert sorted(np.bincount(folds[LABELS == "c"], minlength=5).tolist()) == [1, 1, 1, 2, 2]


def test_folds_are_deterministic_under_a_seed():
    assert np.array_equal(stratified_folds(LABELS, 5, seed=3), stratified_folds(LABELS, 5, seed=3))
    assert not np.array_equal(stratified_folds(LABELS, 5, seed=3), stratified_folds(LABELS, 5, seed=4))
    assert stratified_folds(LABELS, 5, seed=0)[:8].tolist() == [2, 0, 4, 0, 3, 3, 3, 0]


def test_holdout_takes_a_fraction_of_each_class():
    is_val = holdout(LABELS, 0.2, seed=0)
    assert [int(is_val[LABELS == c].sum()) for c in "abcd"] == [10, 6, 1, 0]
    assert np.array_equal(is_val, holdout(LABELS, 0.2, seed=0))
    pair = np.array(["x", "x", "y"])  # a class of two keeps one for training
    assert holdout(pair, 0.9, seed=0)[:2].sum() == 1


def test_group_folds_keep_groups_together():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 20, len(LABELS))
    folds = stratified_folds(LABELS, 4, seed=0, groups=groups)
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1
    assert set(folds) == {0, 1, 2, 3}
    is_val = holdout(LABELS, 0.25, seed=0, groups=groups)
    assert not set(groups[is_val]) & set(groups[~is_val])


def test_bad_options_are_explained():
    with pytest.raises(KitError, match="K folds need k >= 2"):
        stratified_folds(LABELS, 1)
    with pytest.raises(KitError, match="between 0 and 1"):
        holdout(LABELS, 1.5)
    with pytest.raises(KitError, match="3 groups cannot fill 5 folds"):
        stratified_folds(LABELS, 5, groups=np.arange(len(LABELS)) % 3)
