"""Classification metrics: confusion matrix, per-class precision/recall/F1, macro-F1, baselines.

Pure functions, cheap enough to call every epoch: labels in (NumPy arrays, torch tensors on
any device, or lists), plain floats and NumPy arrays out. Macro-F1 follows scikit-learn's
`f1_score(average="macro", labels=range(K), zero_division=0)`: the mean over ALL K classes,
so a class that is never predicted (or absent from the truth) counts as F1 = 0; validation and
the report average over the classes present in the truth only (`present_only`, `absent_note`).
"""

from __future__ import annotations

import numpy as np
import torch

from kitlib.errors import KitError


def _labels(values, what: str) -> np.ndarray:
    """(N,) int64 class indices from a 1-D array/tensor/list, or the argmax of (N, K) scores."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2:  # (N, K) probabilities or logits -> predicted class
        array = array.argmax(axis=1)
    if array.ndim != 1:
        raise KitError(f"{what}: expected class indices of shape (N,) or scores (N, K), got {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise KitError(f"{what}: expected integer class indices, got dtype {array.dtype}; "
                           "map class names to indices first (classes.index(name)).")
    return array.astype(np.int64, copy=False)


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) int64 confusion matrix: rows = true class, columns = predicted class."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise KitError(f"y_true has {len(t)} labels but y_pred has {len(p)}: pass one prediction per sample.")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise KitError(f"{name} holds class index {a.min() if a.min() < 0 else a.max()}, outside "
                           f"0..{num_classes - 1}: check num_classes ({num_classes}).")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def per_class_prf(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (float64; 0.0 where undefined) and support (int64) from `conf`."""
    conf = np.asarray(conf, dtype=np.int64)
    tp = np.diag(conf).astype(np.float64)
    predicted = conf.sum(axis=0)  # column sums: how often each class was predicted
    support = conf.sum(axis=1)  # row sums: how many samples truly belong to each class
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        # F1 = 2 TP / (predicted + support): equal to 2PR/(P+R) and defined whenever either is > 0
        f1 = np.where(predicted + support > 0, 2 * tp / (predicted + support), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(y_true, y_pred, num_classes: int, *, present_only: bool = False) -> float:
    """Unweighted mean of the per-class F1 over all `num_classes` classes (sklearn's macro average).

    `present_only=True`: the mean over the classes with at least one true sample only (what a
    validation split that misses a rare class should report; see `absent_note`). Predictions of an
    absent class still count, as the false positives they are, against the true class's recall.
    """
    prf = per_class_prf(confusion(y_true, y_pred, num_classes))
    f1 = prf["f1"][prf["support"] > 0] if present_only else prf["f1"]
    return float(f1.mean()) if len(f1) else float("nan")


def absent_note(support, classes) -> str:
    """'' when every class has a true sample; else one line saying which have none and that macro-F1 leaves them out.

    `support`: (K,) true samples per class (per_class_prf's); `classes`: the K names.
    """
    support = np.asarray(support)
    absent = [str(classes[i]) for i in np.flatnonzero(support == 0)]
    if not absent:
        return ""
    shown = ", ".join(repr(c) for c in absent[:10]) + (" ..." if len(absent) > 10 else "")
    return (f"macro-F1 averages over the {len(support) - len(absent)} of {len(support)} classes that have samples "
            f"to score; {len(absent)} {'has' if len(absent) == 1 else 'have'} none and "
            f"{'is' if len(absent) == 1 else 'are'} left out: {shown}")


def accuracy(y_true, y_pred) -> float:
    """Share of samples whose predicted class is the true class."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise KitError(f"y_true has {len(t)} labels but y_pred has {len(p)}: pass one prediction per sample.")
    if len(t) == 0:
        raise KitError("accuracy of zero samples is undefined: the evaluation split is empty.")
    return float((t == p).mean())


def random_baseline_f1(class_counts, guess_counts=None) -> dict[str, float]:
    """Macro-F1 that guessing without looking at the image reaches: 'uniform', 'prior', 'majority', 'best'.

    `class_counts` (K,) are the true class counts of the set being scored (n_k, N = sum n_k,
    p_k = n_k / N); `guess_counts` (K,) are the counts the guesser knows (the training labels;
    default: `class_counts`), giving its prior q_k and its majority class m.

    A guesser that answers class k with probability g_k, independently of the truth, has
    E[TP_k] = n_k g_k and E[predicted_k] = N g_k; with F1_k = 2 TP_k / (predicted_k + n_k) the
    large-N value (ratio of expectations, exact as N grows; within ~0.01 from N ~ 1000) is
        F1_k = 2 p_k g_k / (p_k + g_k),    macro-F1 = (1/K) sum_k F1_k.
    - 'uniform' (g_k = 1/K):     (1/K) sum_k 2 p_k / (K p_k + 1)  (= 1/K when balanced)
    - 'prior'   (g_k = q_k):     (1/K) sum_k 2 p_k q_k / (p_k + q_k) (= 1/K when q = p and no class is empty)
    - 'majority' (always m):     (1/K) 2 p_m / (1 + p_m), exact for any N (no randomness)
    'best' is the largest of the three: a model at or below it has learned nothing useful.
    """
    n = np.asarray(class_counts, dtype=np.float64)
    q = np.asarray(n if guess_counts is None else guess_counts, dtype=np.float64)
    if n.ndim != 1 or q.shape != n.shape or n.sum() <= 0 or q.sum() <= 0 or (n < 0).any() or (q < 0).any():
        raise KitError(f"class counts must be two non-negative (K,) arrays with a positive total; got "
                       f"shapes {n.shape} and {q.shape}.")
    k = len(n)
    p, q = n / n.sum(), q / q.sum()

    def macro(g: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(p + g > 0, 2 * p * g / (p + g), 0.0)
        return float(f1.mean())

    majority = np.zeros(k)
    majority[int(q.argmax())] = 1.0
    out = {"uniform": macro(np.full(k, 1.0 / k)), "prior": macro(q), "majority": macro(majority)}
    out["best"] = max(out.values())
    return out
