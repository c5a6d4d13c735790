"""Mislabeled samples: cleanlab's confident learning on out-of-fold probabilities, and its noise model.

    flagged, score, suggested = label_issues(oof_probs, given)          # the kit's choice
    flagged = cleanlab_issues(oof_probs, given)                         # cleanlab's default filter, for comparison

Confident learning (Northcutt et al., JAIR 2021; the `cleanlab` package) estimates the joint
distribution of given and true labels, Q[i, j] = P(given = i, true = j), from per-class confidence
thresholds; its filters remove, per class, as many samples as Q says are wrong. The kit flags a
sample that cleanlab's `confident_learning` filter flags (its best single filter on the benchmark
below), and also one that Q read as a noise model calls wrong: with P(given = i | true = j) =
Q[i, j] / sum_i Q[i, j] and p(x) the out-of-fold probabilities calibrated by the same per-class
thresholds, the posterior P(true = given | x, given) ∝ p_given(x) P(given | true = given) falls
below one half. The noise model knows which flips happen (at high sparsity most pairs of classes
never swap); the filter keeps the recall when the probabilities are soft (a weak fold model), where
the posterior alone defers to the given label. On the paper's CIFAR-10 benchmark (12 settings) the
kit's choice measures a mean F1 of 0.826 (0.832 and 0.822 with the probabilities softened to the
power 1/2 and 1/4), cleanlab's default filter 0.763, its confident_learning filter 0.790 (README:
Results; `python -m bench.audit labels`).
"""

from __future__ import annotations

import warnings

import numpy as np

RARE_CLASS = 5
"""A class with fewer training samples cannot be judged: its samples are never flagged (rarity alone
never makes a suspect; a fold model may never have seen the class)."""


def rare_samples(targets: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the sample's class has fewer than RARE_CLASS samples among `targets` ((N,) int in [0, k))."""
    return (np.bincount(targets, minlength=k) < RARE_CLASS)[targets]


def calibrated(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, K) probabilities divided by each class's confidence threshold (confident learning's), rows renormalized.

    Class j's threshold is the mean p_j over the samples labelled j (1 for a class with none):
    a class the model is shy of is lifted, one it over-predicts is lowered.
    """
    k = probs.shape[1]
    thresholds = np.array([probs[targets == j, j].mean() if (targets == j).any() else 1.0 for j in range(k)])
    scaled = probs / np.maximum(thresholds, 1e-12)
    return scaled / np.maximum(scaled.sum(axis=1, keepdims=True), 1e-12)


def noise_model(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K, K) P(given = i | true = j) from cleanlab's calibrated confident joint (columns sum to 1)."""
    from cleanlab.count import estimate_joint

    with warnings.catch_warnings():  # cleanlab warns about classes without a confident sample
        warnings.simplefilter("ignore")
        joint = estimate_joint(targets, probs)  # (K, K) P(given = i, true = j)
    return joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-12)


def label_posterior(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, K) P(true = j | x, given) under cleanlab's estimated noise model; see the module docstring."""
    p = calibrated(probs, targets)
    noise = noise_model(p, targets)
    weights = p * noise[targets]  # (N, K): p_j(x) * P(given | true = j)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def label_issues(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((N,) flagged, (N,) score in [0, 1], (N,) suggested class) from (N, K) out-of-fold probabilities.

    score = 1 - P(true = given | x, given) under cleanlab's noise model, at least 0.5 where cleanlab's
    confident_learning filter flags the sample; flagged from 0.5; the suggestion is the most probable
    true class. Samples of classes with fewer than RARE_CLASS samples score 0. Only honest on
    out-of-fold probabilities (a model that trained on a sample vouches for it).
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n, k = probs.shape
    posterior = label_posterior(probs, targets)
    score = np.clip(1.0 - posterior[np.arange(n), targets], 0.0, 1.0)
    score = np.where(cleanlab_issues(probs, targets, "confident_learning"), np.maximum(score, 0.5), score)
    score = np.where(rare_samples(targets, k), 0.0, score)
    suggested = np.where(posterior.argmax(axis=1) == targets, calibrated(probs, targets).argmax(axis=1),
                         posterior.argmax(axis=1))
    return score >= 0.5, score, suggested


def cleanlab_issues(probs: np.ndarray, targets: np.ndarray, filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """(N,) bool: `cleanlab.filter.find_label_issues` with `filter_by` (its default), for comparison."""
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_label_issues(np.asarray(targets), np.asarray(probs, dtype=np.float64), filter_by=filter_by)


def margin_issues(probs: np.ndarray, targets: np.ndarray, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """((N,) flagged, (N,) score): the kit's former rule, for comparison (README: Results).

    Per-class thresholds (the mean p_j over samples labelled j); flagged when the most probable class
    is another class above its threshold by `margin` over the given label.
    """
    n, k = probs.shape
    rows = np.arange(n)
    thresholds = np.array([probs[targets == j, j].mean() if (targets == j).any() else 1.0 for j in range(k)])
    confident = np.where(probs >= thresholds, probs, -1.0).argmax(axis=1)
    clears = (probs >= thresholds).any(axis=1)
    others = probs.copy()
    others[rows, targets] = -1.0
    score = np.clip(others.max(axis=1) - probs[rows, targets], 0.0, 1.0)
    flagged = clears & (confident != targets) & (probs.argmax(axis=1) == confident) & (score >= margin)
    return flagged, score
