"""The audit: find the training samples that would poison training, before training on them.

    result = audit(competition, AuditConfig(folds=4, time_budget=600), "runs/audit")
    result.suspects          # RUN/suspects.csv: sample_index, issue, score, given_label, suggested_label
    python -m kitlib train DATA --out runs/clean --decisions runs/audit/suspects.csv   # drops them

Four issues, each scored in [0, 1] (higher = more certain; a sample is flagged at 0.5 or more):
- blank: one flat colour (an empty scan, a lens cap): pixel standard deviation near zero;
- duplicate: the same picture filed twice (a difference hash, then a pixel check); the first copy
  in id order is kept and the later ones are flagged, since duplicates split over training and
  validation inflate the validation score;
- alien: an image from outside the task: far from the other images both in an 8x8 colour thumbnail
  and in the features of an out-of-fold model (k nearest neighbours, robust z-scores);
- mislabeled: confident learning (Northcutt et al., JAIR 2021) on out-of-fold probabilities: the
  sample is confidently another class, judged by per-class thresholds, not by one global cut-off,
  and by a margin over its given label.

Out of fold: K models are trained with `kitlib.train.fit` (RUN/folds/fold0 ..., resumable),
each sample is scored by the one model that never trained on it. A model that trained on a
mislabeled sample has learned its wrong label and would vouch for it. The quick audit (folds=0)
trains no model: blank, duplicate, and aliens from thumbnails alone, in seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from kitlib.data import read_csv_strings
from kitlib.dataset import TrainingData
from kitlib.errors import KitError
from kitlib.files import write_table
from kitlib.recipe import TrainConfig
from kitlib.splits import stratified_folds

ISSUES = ("blank", "duplicate", "alien", "mislabeled")  # a sample flagged twice is listed under the first
SUSPECT_COLUMNS = ["sample_index", "issue", "score", "given_label", "suggested_label"]


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit depends on; the fold runs record their own TrainConfig."""

    folds: int = 4
    """K: each sample is scored by the one of K models that did not train on it (K >= 2); 0: the
    quick audit, no models (blank, duplicate, and aliens from thumbnails alone; in seconds)."""
    time_budget: float | None = None
    """Wall-clock seconds for the whole audit (all folds and the scoring); None: `train.epochs` per fold."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, images_dir=None))
    """How each fold model trains (its folds, fold and time budget are set by the audit)."""
    blank_std: float = 0.02
    """Pixel standard deviation (pixels in 0..1) at which an image stops counting as blank; also
    never more than a tenth of the data set's median, so a data set of faint images is not all blank."""
    duplicate_diff: float = 0.02
    """Mean absolute pixel difference (0..1) up to which two images with one hash are the same picture."""
    alien_z: float = 4.5
    """Robust z-score of the log nearest-neighbour distance (the mean of the model features' and the
    thumbnails') at which an image counts as alien."""
    neighbours: int = 10
    """k of the k-nearest-neighbour distances (thumbnails and features)."""
    max_mislabeled: float = 0.05
    """At most this share of the samples is flagged mislabeled, the most certain first: a weak
    model calls many hard samples mislabeled, and training on the suspects drops them."""
    seed: int = 0
    """Seeds the folds (the fold runs take theirs from `train.seed`)."""


@dataclass
class AuditResult:
    """What an audit found, and where it wrote it."""

    run_dir: Path
    """RUN: suspects.csv, scores.csv, suspects.png, and the fold runs in folds/fold0 ... fold{K-1}."""
    scores: pd.DataFrame
    """Every sample: sample_index, given_label, one score column per issue, oof_loss, predicted_label."""
    suspects: pd.DataFrame
    """The flagged samples, worst first (the columns of suspects.csv)."""
    oof_probs: np.ndarray | None
    """(N, K) out-of-fold class probabilities, rows in the order of `scores` (None: the quick audit)."""


# --------------------------------------------------------------------------------------------- pixel issues

def blank_scores(images: torch.Tensor) -> np.ndarray:
    """(N,) pixel std of (N, 3, H, W) uint8 images (per channel, then averaged), in [0, 0.5]: 0 = one flat colour."""
    out = np.empty(len(images), dtype=np.float64)
    for start in range(0, len(images), 1024):  # float64 copies of 1,024 images at a time
        chunk = images[start:start + 1024].double() / 255.0  # (n, 3, H, W)
        out[start:start + len(chunk)] = chunk.flatten(2).std(dim=2, unbiased=False).mean(dim=1).numpy()
    return out


def blank_issue(std: np.ndarray, config: AuditConfig) -> np.ndarray:
    """(N,) blank score in [0, 1] from pixel stds: 1 = one flat colour, 0.5 at the threshold."""
    threshold = min(config.blank_std, 0.1 * float(np.median(std))) if len(std) else config.blank_std
    if threshold <= 0:  # over half the images are perfectly flat: nothing to compare against
        return np.zeros_like(std)
    return np.clip(1.0 - std / (2.0 * threshold), 0.0, 1.0)


def difference_hashes(images: torch.Tensor) -> np.ndarray:
    """(N,) 64-bit difference hashes: the signs of horizontal steps of a 9x8 grey thumbnail."""
    out = np.empty(len(images), dtype=np.uint64)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    bits = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))  # (64,) 1, 2, 4, ... 2**63
    for start in range(0, len(images), 1024):
        grey = (images[start:start + 1024].float() * weights).sum(1, keepdim=True)  # (n, 1, H, W)
        thumb = torch.nn.functional.adaptive_avg_pool2d(grey, (8, 9))[:, 0]  # (n, 8, 9)
        steps = (thumb[:, :, 1:] > thumb[:, :, :-1]).flatten(1).numpy().astype(np.uint64)  # (n, 64)
        out[start:start + len(steps)] = (steps * bits).sum(axis=1, dtype=np.uint64)
    return out


def duplicate_issue(images: torch.Tensor, ids: list[str], config: AuditConfig,
                    skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((N,) duplicate score, (N,) row of the copy kept, -1 for none): later copies in id order score.

    An image is compared pixel by pixel with the earlier images (in id order) that share its
    difference hash and are not copies themselves, until one matches; score 1 = identical, 0.5 at
    `duplicate_diff`. `skip`: rows left out (blank images would all match each other).
    """
    score, kept = np.zeros(len(ids)), np.full(len(ids), -1, dtype=np.int64)
    hashes = difference_hashes(images)
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    groups: dict[int, list[int]] = {}
    for row in order:
        if skip is None or not skip[row]:
            groups.setdefault(int(hashes[row]), []).append(int(row))
    for rows in groups.values():
        for j, row in enumerate(rows[1:], start=1):
            # the earliest copy it matches: a hash group may hold two different pictures
            for first in rows[:j]:
                if kept[first] >= 0:
                    continue
                diff = float((images[row].float() - images[first].float()).abs().mean()) / 255.0
                s = max(0.0, 1.0 - diff / (2.0 * config.duplicate_diff))
                if s >= 0.5:
                    score[row], kept[row] = s, first
                    break
    return score, kept


# --------------------------------------------------------------------------------------------- model issues

def label_issues(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged, score, suggested) of confident learning on (N, K) out-of-fold probabilities.

    Class j's threshold is the mean probability of j over the samples labelled j (how confident
    the model is on its own class); a sample is flagged when its most probable class is another
    class that clears its threshold, by a margin: score = max(0, max other p - p(given)) >= 0.5.
    The margin trades recall for precision (on the confident-learning CIFAR-10 benchmark at 20 %
    noise: precision 0.67 -> 0.75, recall 0.85 -> 0.73), since the flagged samples are dropped.
    """
    n, k = probs.shape
    rows = np.arange(n)
    thresholds = np.array([probs[targets == j, j].mean() if (targets == j).any() else 1.0 for j in range(k)])
    confident = np.where(probs >= thresholds, probs, -1.0).argmax(axis=1)
    clears = (probs >= thresholds).any(axis=1)
    predicted = probs.argmax(axis=1)
    others = probs.copy()
    others[rows, targets] = -1.0
    score = np.clip(others.max(axis=1) - probs[rows, targets], 0.0, 1.0)
    flagged = clears & (confident != targets) & (predicted == confident) & (score >= 0.5)
    return flagged, score, predicted


def _head_linear(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier's last linear layer: its input is the net's feature vector."""
    from kitlib.models import head

    linears = [m for m in head(model).modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise KitError(f"{type(model).__name__}: no linear layer in its head to read features from.")
    return linears[-1]


def features_and_probs(run, images: torch.Tensor, rows: torch.Tensor, *, device=None,
                       batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """((n, D) L2-normalized features, (n, K) probabilities) of `images[rows]` through a Run's eval transform."""
    from kitlib import predict

    captured: list[torch.Tensor] = []
    hook = _head_linear(run.model).register_forward_hook(lambda m, i, o: captured.append(i[0].detach().float().cpu()))
    try:
        probs = predict.predict_probs([run], images.index_select(0, rows), tta="none", device=device,
                                      batch_size=batch_size, progress=False)
    finally:
        hook.remove()
    feats = torch.cat(captured).flatten(1)
    return torch.nn.functional.normalize(feats, dim=1), torch.from_numpy(probs)


def knn_distance(query: torch.Tensor, reference: torch.Tensor, k: int, *, skip_nearest: bool = False) -> np.ndarray:
    """(n,) mean cosine distance of each (n, D) unit query row to its k nearest (m, D) reference rows.

    `skip_nearest`: leave out each query's nearest reference row (itself, when the query set and
    the reference set overlap).
    """
    k = max(1, min(k, len(reference) - int(skip_nearest)))
    out = []
    for start in range(0, len(query), 1024):  # (1024, m) similarities at a time
        sims = query[start:start + 1024] @ reference.T
        nearest = sims.topk(k + int(skip_nearest), dim=1).values[:, int(skip_nearest):]
        out.append((1.0 - nearest).mean(dim=1))
    return torch.cat(out).clamp_min(0).numpy().astype(np.float64)


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """(N, 192) unit vectors of 8x8 colour thumbnails, each image's mean level removed (brightness-free)."""
    out = []
    for start in range(0, len(images), 1024):
        x = torch.nn.functional.adaptive_avg_pool2d(images[start:start + 1024].float() / 255.0, (8, 8)).flatten(1)
        out.append(torch.nn.functional.normalize(x - x.mean(dim=1, keepdim=True), dim=1))
    return torch.cat(out)


def pixel_z(images: torch.Tensor, config: AuditConfig) -> np.ndarray:
    """(N,) robust z of each image's log kNN distance among thumbnails of (at most 4,000) others."""
    x = thumbnails(images)
    generator = torch.Generator().manual_seed(config.seed)
    reference = x[torch.randperm(len(x), generator=generator)[:4000]]
    return robust_z(np.log(knn_distance(x, reference, config.neighbours, skip_nearest=True) + 1e-6))


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD): a z-score that a few outliers cannot inflate."""
    median = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - median))
    return (values - median) / max(mad, 1e-12)


def alien_issue(feature_z: np.ndarray, thumbnail_z: np.ndarray, config: AuditConfig) -> np.ndarray:
    """(N,) alien score in [0, 1]: the mean of the two robust z-scores, 0.5 at `alien_z`, logistic around it.

    Both must agree: a foreign image is far from the rest in the model's features and in its
    thumbnail; on CIFAR-10 and Tiny ImageNet no image's thumbnail z exceeds 2.6.
    """
    return 1.0 / (1.0 + np.exp(-((feature_z + thumbnail_z) / 2.0 - config.alien_z)))


# --------------------------------------------------------------------------------------------- out of fold

def fold_data(data: TrainingData, folds: np.ndarray, fold: int) -> TrainingData:
    """`data` with fold `fold` as validation and the other folds as training (no pixels copied)."""
    return replace(data, train_index=torch.from_numpy(np.flatnonzero(folds != fold)),
                   val_index=torch.from_numpy(np.flatnonzero(folds == fold)))


def _finished(run: Path, held_ids: list[str]) -> bool:
    """Whether `run` is a finished fold run (val_probs.npy written) that validated on exactly `held_ids`."""
    if not (run / "val_probs.npy").is_file():
        return False
    if read_csv_strings(run / "val.csv")["sample_index"].tolist() != held_ids:
        raise KitError(f"{run} holds a fold run of other samples (another competition, seed or --folds): "
                       "give the audit a new --out folder.")
    return True


def out_of_fold(data: TrainingData, config: AuditConfig, out: Path, *, deadline: float | None = None,
                device=None) -> tuple[np.ndarray, np.ndarray]:
    """((N, K) out-of-fold probabilities, (N,) robust z of the kNN feature distance), training K fold runs.

    Each fold run lives in out/folds/fold{i} and resumes when it is there already (a Colab restart).
    With a deadline (time.perf_counter() seconds), the folds share what is left of it equally.
    """
    from kitlib.predict import load_runs
    from kitlib.train import fit

    n = len(data.ids)
    folds = stratified_folds(data.targets.numpy(), config.folds, seed=config.seed)
    probs = np.zeros((n, len(data.classes)), dtype=np.float32)
    z = np.zeros(n)
    rng = np.random.default_rng(config.seed)
    overhead = 0.0  # seconds a fold spends outside its training budget (validation, scoring), measured
    for i in range(config.folds):
        train_config = replace(config.train, folds=config.folds, fold=i)
        fold_started = time.perf_counter()
        budget = None
        if deadline is not None:
            share = (deadline - fold_started) / (config.folds - i)
            # before the first fold is measured, 15 % of its share is kept for its scoring
            budget = share - (overhead if i else 0.15 * share)
            if budget < 3:
                raise KitError(f"the audit's time budget is spent after {i} of {config.folds} folds: give more "
                               "seconds or fewer --folds.")
            train_config = replace(train_config, epochs=None, time_budget=budget)
        split = fold_data(data, folds, i)
        held, trained = split.val_index, split.train_index
        folder = out / "folds" / f"fold{i}"
        if _finished(folder, [data.ids[r] for r in held.tolist()]):
            print(f"audit: fold {i + 1} of {config.folds} was trained already: {folder}")
        else:
            print(f"audit: fold {i + 1} of {config.folds}")
            fit(split, train_config, folder, resume=True)
        run = load_runs(folder, device)[0]
        reference = trained[torch.from_numpy(rng.permutation(len(trained))[:4000])]  # (<= 4000,) rows
        ref_feats, _ = features_and_probs(run, data.images, reference, device=device)
        feats, p = features_and_probs(run, data.images, held, device=device)
        probs[held.numpy()] = p.numpy()
        # log: distances are skewed right, their logs close to normal; z within the fold, since
        # each fold's model has its own feature scale
        z[held.numpy()] = robust_z(np.log(knn_distance(feats, ref_feats, config.neighbours) + 1e-6))
        if budget is not None:
            overhead = max(overhead, time.perf_counter() - fold_started - budget)
    return probs, z


# --------------------------------------------------------------------------------------------- the audit

def score_table(data: TrainingData, probs: np.ndarray | None, feature_z: np.ndarray | None,
                config: AuditConfig) -> pd.DataFrame:
    """Every sample with its four issue scores, out-of-fold loss, prediction, and the copy it duplicates.

    `probs`: (N, K) out-of-fold probabilities; `feature_z`: (N,) robust z of the kNN feature distance;
    both None for the quick audit (no models: no mislabeled score, aliens from thumbnails alone).
    """
    targets = data.targets.numpy()
    n = len(targets)
    blank = blank_issue(blank_scores(data.images), config)
    duplicate, kept = duplicate_issue(data.images, data.ids, config, skip=blank >= 0.5)
    thumbnail_z = pixel_z(data.images, config)
    if probs is None:
        flagged, mislabeled, loss, predicted = np.zeros(n, bool), np.zeros(n), np.full(n, np.nan), None
    else:
        flagged, mislabeled, predicted = label_issues(probs, targets)
        loss = -np.log(np.clip(probs[np.arange(n), targets], 1e-12, 1.0))
    table = pd.DataFrame({
        "sample_index": data.ids, "given_label": [data.classes[t] for t in targets],
        "blank": blank, "duplicate": duplicate,
        "alien": alien_issue(thumbnail_z if feature_z is None else feature_z, thumbnail_z, config),
        "mislabeled": mislabeled, "oof_loss": loss,
        "predicted_label": [""] * n if predicted is None else [data.classes[p] for p in predicted],
        "duplicate_of": [data.ids[k] if k >= 0 else "" for k in kept],
    })
    # mislabeled counts only where confident learning flags it, the most certain first, capped
    cap = math.floor(config.max_mislabeled * len(table))
    ranked = np.flatnonzero(flagged)[np.argsort(-mislabeled[flagged], kind="stable")]
    table["mislabeled_flag"] = False
    table.loc[ranked[:cap], "mislabeled_flag"] = True
    return table.round({"blank": 4, "duplicate": 4, "alien": 4, "mislabeled": 4, "oof_loss": 4})


def suspects_from(scores: pd.DataFrame) -> pd.DataFrame:
    """The flagged rows of a score table, one per sample under its first issue (ISSUES order), worst first."""
    label_of = dict(zip(scores["sample_index"], scores["given_label"]))  # a duplicate suggests its kept copy's
    rows = []
    for r in scores.itertuples(index=False):
        for issue in ISSUES:
            value = getattr(r, issue)
            if value >= 0.5 and (issue != "mislabeled" or r.mislabeled_flag):
                suggested = {"mislabeled": r.predicted_label, "duplicate": label_of.get(r.duplicate_of, "")}
                rows.append([r.sample_index, issue, round(float(value), 4), r.given_label, suggested.get(issue, "")])
                break
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def plot_suspects(suspects: pd.DataFrame, data: TrainingData, path: Path, k: int = 36) -> Path | None:
    """A captioned grid PNG of the `k` worst suspects (None when there are none)."""
    from kitlib.review import plot_top_losses

    if len(suspects) == 0:
        return None
    table = suspects.head(k).rename(columns={"given_label": "label"})
    title = f"Audit: the {len(table)} most certain of {len(suspects)} suspects"
    return plot_top_losses(table, data, path, title=title)


def audit(data, config: AuditConfig = AuditConfig(), out: str | Path = "runs/audit", *,
          started: float | None = None) -> AuditResult:
    """Score every training sample for the four issues; write RUN/scores.csv, suspects.csv, suspects.png.

    `data`: a TrainingData (every sample is audited, whatever its split) or a competition (decoded
    as `config.train` says). `started`: time.perf_counter() at which `config.time_budget` began
    (default: now), so a command's decoding counts against it.
    """
    from kitlib.train import prepare_for

    started = time.perf_counter() if started is None else started
    if config.folds == 1 or config.folds < 0:
        raise KitError(f"folds={config.folds}: the audit needs K >= 2 folds (each sample scored out of fold), "
                       "or 0 for the quick audit without models.")
    if not isinstance(data, TrainingData):
        data = prepare_for(data, replace(config.train, val_fraction=0, folds=None))
    counts = np.bincount(data.targets.numpy(), minlength=len(data.classes))
    if counts.max(initial=0) < config.folds:
        raise KitError(f"{len(data.ids)} samples cannot fill {config.folds} folds: give fewer --folds.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None if config.time_budget is None else started + config.time_budget
    probs, z = out_of_fold(data, config, out, deadline=deadline) if config.folds else (None, None)
    with tqdm(total=1, desc="audit: scoring", disable=not config.train.progress) as bar:
        scores = score_table(data, probs, z, config)
        suspects = suspects_from(scores)
        bar.update(1)
    scores = scores.drop(columns=["mislabeled_flag"])  # suspects.csv says which were flagged
    write_table(out / "scores.csv", scores)
    write_table(out / "suspects.csv", suspects)
    plot_suspects(suspects, data, out / "suspects.png")
    found = suspects["issue"].value_counts().reindex(ISSUES, fill_value=0)
    print(f"audit: {len(suspects)} suspects of {len(scores)} samples ("
          + ", ".join(f"{n} {issue}" for issue, n in found.items()) + f"); wrote {out / 'suspects.csv'}, "
          f"{out / 'scores.csv'}, {out / 'suspects.png'}")
    return AuditResult(out, scores, suspects, probs)
