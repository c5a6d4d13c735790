"""Validation splits: stratified hold-out and K folds, seeded, optionally group-aware.

Every class is spread evenly over the folds (rare classes too), and the same seed always gives
the same split, so scores of two runs are comparable. With groups (a patient, a slide, a video),
all samples of a group land in the same fold, so validation never sees a training group.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from kitlib.errors import KitError


def stratified_folds(labels: Sequence, k: int = 5, *, seed: int = 0,
                     groups: Sequence | None = None) -> np.ndarray:
    """Fold number (0..k-1) of each sample; every class is dealt round-robin over the folds."""
    labels = np.asarray(labels)
    if k < 2:
        raise KitError(f"folds={k}: K folds need k >= 2.")
    if groups is not None:
        return _group_folds(labels, np.asarray(groups), k, seed)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0  # where the next class starts dealing, so fold sizes stay within one of each other
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        folds[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return folds


def _group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    if len(np.unique(groups)) < k:
        raise KitError(f"{len(np.unique(groups))} groups cannot fill {k} folds: use fewer folds.")
    folds = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only N members": expected for rare classes
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[held_out] = fold
    return folds


def holdout(labels: Sequence, val_fraction: float = 0.2, *, seed: int = 0,
            groups: Sequence | None = None) -> np.ndarray:
    """Boolean mask of validation samples: `val_fraction` of each class (at least one of any class with two)."""
    if not 0.0 < val_fraction < 1.0:
        raise KitError(f"val_fraction={val_fraction}: choose a fraction between 0 and 1.")
    labels = np.asarray(labels)
    if groups is not None:
        k = max(2, round(1 / val_fraction))
        return _group_folds(labels, np.asarray(groups), k, seed) == 0
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(members) * val_fraction))
        if len(members) >= 2:  # a class seen in validation must also stay in training
            count = min(max(count, 1), len(members) - 1)
        is_val[members[:count]] = True
    return is_val
