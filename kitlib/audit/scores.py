"""The audit: find the training samples that would poison training, before training on them.

    result = audit(competition, AuditConfig(folds=4, time_budget=600), "runs/audit")
    result.suspects          # RUN/suspects.csv: sample_index, issue, score, given_label, suggested_label, twin, group
    python -m kitlib train DATA --out runs/clean --decisions runs/audit/suspects.csv   # drops them

The issues, each scored in [0, 1] (higher = more certain; a sample is flagged at 0.5 or more):
- blank: one flat colour (an empty scan, a lens cap): pixel standard deviation near zero;
- shared_mask: one of three or more images carrying the same mask (kitlib.audit.masks), every member
  flagged (two images with one mask are a copy: a duplicate or a conflict);
- alien: an image from outside the task (a cartoon, a drawing, a screenshot, a photo among slides):
  far from the bulk in how it is drawn (kitlib.audit.foreign) or far from the other images in its
  thumbnail (and in the fold models' features);
- conflict: one of two copies of a picture (exact, or under a stain, an ink mark, a crop, a flip:
  kitlib.audit.duplicates) filed under different labels: the likelier wrong one is flagged (lower
  out-of-fold probability of its label, when the fold models are good enough (`trust_probs`); else
  the more atypical, stained copy);
- duplicate: one of two copies filed under one label: the later id of an exact copy, the more
  atypical of a near one; `twin` names the other, which is kept;
- mislabeled: cleanlab's confident_learning filter, or its noise model read as a posterior
  (kitlib.audit.labels), on the out-of-fold probabilities.
Samples of classes with fewer than labels.RARE_CLASS samples are never alien nor mislabeled: rarity
alone never makes a suspect. Empty and full masks, and on the test set shared masks and train/test
duplicates (leaks), go to RUN/checks.csv: reported, never dropped.

Out of fold: K models are trained with `kitlib.train.fit` (RUN/folds/fold0 ..., resumable),
each sample is scored by the one model that never trained on it. The quick audit (folds=0)
trains no model: everything but mislabeled, in seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kitlib import rundir
from kitlib.audit.config import CHECK_COLUMNS, ISSUES, SUSPECT_COLUMNS, AuditConfig
from kitlib.audit.duplicates import near_pairs
from kitlib.audit.foreign import foreign_z, statistics_z
from kitlib.audit.grid import plot_suspects
from kitlib.audit.labels import label_issues, rare_samples
from kitlib.audit.masks import mask_checks, mask_hashes, shared_with
from kitlib.audit.oof import out_of_fold
from kitlib.audit.pixels import blank_issue, blank_scores, difference_hashes, duplicate_issue, pixel_z
from kitlib.data.cache import decode_table
from kitlib.data.dataset import TrainingData, prepare_for
from kitlib.data.layouts import Competition, load_competition
from kitlib.data.tiles import cut_tiles
from kitlib.errors import KitError
from kitlib.files import write_table
from kitlib.progress import progress_bar
from kitlib.train.loss import probability_losses

SCORE_COLUMNS = ["blank", "shared_mask", "alien", "conflict", "duplicate", "mislabeled"]
MASK_PAIR_SCORE = 0.75
"""Score of two images that carry one mask (and nothing else does): a copy, whatever its pixels say."""


@dataclass
class AuditResult:
    """What an audit found, and where it wrote it."""

    run_dir: Path
    """RUN: suspects.csv, scores.csv, checks.csv, suspects.png, and the fold runs in folds/fold0 ... fold{K-1}."""
    scores: pd.DataFrame
    """Every sample: sample_index, given_label, one score column per issue, oof_loss, predicted_label,
    twin, group, empty_mask, full_mask."""
    suspects: pd.DataFrame
    """The flagged samples, worst first (the columns of suspects.csv)."""
    oof_probs: np.ndarray | None
    """(N, K) out-of-fold class probabilities, rows in the order of `scores` (None: the quick audit)."""
    checks: pd.DataFrame | None = None
    """What is reported but never dropped (the columns of checks.csv)."""
    features: np.ndarray | None = None
    """(N, D) the fold models' out-of-fold features (None: the quick audit)."""


def _pairs(data: TrainingData, blank: np.ndarray, config: AuditConfig) -> list[tuple[int, int, float]]:
    """[(row, row, score)] of exact copies (score 1 to 0.5, by pixel difference) and near-duplicates (0.5 + detail / 2)."""
    exact, kept = duplicate_issue(data.images, data.ids, config, skip=blank >= 0.5)
    pairs = [(int(kept[r]), int(r), float(exact[r])) for r in np.flatnonzero(kept >= 0)]
    near = near_pairs(data.images, data.images, config, same=True, skip_query=(blank >= 0.5) | (kept >= 0))
    return pairs + [(a, b, 0.5 + d / 2) for a, b, d in near]


def score_table(data: TrainingData, probs: np.ndarray | None, feature_z: np.ndarray | None,
                config: AuditConfig, *, has_mask: np.ndarray | None = None) -> pd.DataFrame:
    """Every sample with its issue scores, out-of-fold loss, prediction, twin and mask group.

    `probs`: (N, K) out-of-fold probabilities; `feature_z`: (N,) robust z of the kNN feature distance;
    both None for the quick audit. `has_mask`: (N,) which samples have a mask file (kitlib.audit.masks).
    """
    targets = data.targets.numpy()
    n = len(targets)
    ids = data.ids
    rare = rare_samples(targets, len(data.classes))
    blank = blank_issue(blank_scores(data.images), config)
    stats_z = statistics_z(data.images, blank >= 0.5, seed=config.seed)
    z = foreign_z(stats_z, pixel_z(data.images, config), feature_z)
    alien = np.where(rare | (blank >= 0.5), 0.0, 1.0 / (1.0 + np.exp(-(z - config.alien_z))))
    if probs is None:
        flagged, mislabeled, loss, predicted = np.zeros(n, bool), np.zeros(n), np.full(n, np.nan), None
    else:
        flagged, mislabeled, predicted = label_issues(probs, targets)
        loss = probability_losses(probs, targets).numpy().astype(np.float64)
    mislabeled = np.where(rare, 0.0, mislabeled)
    flagged &= ~rare

    masks = mask_checks(data.masks, has_mask)
    pairs = _pairs(data, blank, config)
    paired = {frozenset(pair[:2]) for pair in pairs}
    shared, group = np.zeros(n), [""] * n
    for g in np.unique(masks["group"][masks["group"] >= 0]):
        rows = np.flatnonzero(masks["group"] == g)
        if len(rows) == 2:  # two images, one mask: one slide filed twice (a copy keeps its mask)
            if frozenset(rows.tolist()) not in paired:
                pairs.append((int(rows[0]), int(rows[1]), MASK_PAIR_SCORE))
            continue
        shared[rows] = 1.0
        for r in rows:
            group[r] = ids[rows[0]]
    duplicate, conflict = np.zeros(n), np.zeros(n)
    twin = [""] * n
    trusted = probs is not None and float((probs.argmax(axis=1) == targets).mean()) >= config.trust_probs
    for a, b, score in pairs:
        if trusted and targets[a] != targets[b]:  # the side its fold model believes less
            wrong = b if probs[b, targets[b]] <= probs[a, targets[a]] else a
        else:  # the more atypical copy (a stain, an ink mark), the later id on a tie
            wrong = b if stats_z[b] >= stats_z[a] - 1e-9 else a
        right = a + b - wrong
        (conflict if targets[a] != targets[b] else duplicate)[wrong] = score
        twin[wrong], twin[right] = ids[right], twin[right] or ids[wrong]
    table = pd.DataFrame({
        "sample_index": ids, "given_label": [data.classes[t] for t in targets],
        "blank": blank, "shared_mask": shared, "alien": alien, "conflict": conflict, "duplicate": duplicate,
        "mislabeled": mislabeled, "oof_loss": loss,
        "predicted_label": [""] * n if predicted is None else [data.classes[p] for p in predicted],
        "twin": twin, "group": group, "empty_mask": masks["empty"] if len(masks["empty"]) else np.zeros(n, bool),
        "full_mask": masks["full"] if len(masks["full"]) else np.zeros(n, bool),
    })
    # mislabeled counts only where the noise model flags it, the most certain first, capped
    cap = math.floor(config.max_mislabeled * len(table))
    ranked = np.flatnonzero(flagged)[np.argsort(-mislabeled[flagged], kind="stable")]
    table["mislabeled_flag"] = False
    table.loc[ranked[:cap], "mislabeled_flag"] = True
    return table.round({c: 4 for c in SCORE_COLUMNS + ["oof_loss"]})


def suspects_from(scores: pd.DataFrame) -> pd.DataFrame:
    """The flagged rows of a score table, one per sample under its first issue (ISSUES order), worst first."""
    label_of = dict(zip(scores["sample_index"], scores["given_label"]))
    rows = []
    for r in scores.itertuples(index=False):
        for issue in ISSUES:
            value = getattr(r, issue)
            if value >= 0.5 and (issue != "mislabeled" or r.mislabeled_flag):
                paired = issue in ("duplicate", "conflict")
                suggested = {"mislabeled": r.predicted_label}.get(issue, label_of.get(r.twin, "") if paired else "")
                rows.append([r.sample_index, issue, round(float(value), 4), r.given_label, suggested,
                             r.twin if paired else "", r.group if issue == "shared_mask" else ""])
                break
    table = pd.DataFrame(rows, columns=SUSPECT_COLUMNS)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def train_checks(scores: pd.DataFrame, stretched: dict[str, str] | None = None) -> list[list]:
    """checks.csv rows of the training set: empty and full masks, and the samples of `stretched` (TrainingData.
    stretched_masks: masks of another size than their image, stretched onto it) among the scored ones."""
    return [["train", r.sample_index, check, 1.0, "", ""] for r in scores.itertuples(index=False)
            for check in ("empty_mask", "full_mask") if getattr(r, check)] + \
        [["train", name, "mask_size", 1.0, "", ""] for name in scores["sample_index"] if name in (stretched or {})]


def test_checks(competition: Competition, data: TrainingData, scores: pd.DataFrame, config: AuditConfig) -> list[list]:
    """checks.csv rows of the test set: empty, full and shared masks (also one of a training group's), and leaks.

    A leak is a test image that is a copy of a training image: exact, near (as kitlib.audit.duplicates
    finds them) or carrying the same mask as that one training image; `twin` names the training image.
    """
    test = competition.test
    if not len(test):
        return []
    ready = {}
    if data.tiles is not None:  # the tiles the prediction will cut, cut now: each test slide is read once
        ready = cut_tiles(test["image"], test["mask"], data.tiles.spec, thumbnail=(data.size, data.fit),
                          progress=config.train.progress)[1]
    decoded = decode_table(test, size=data.size, fit=data.fit, progress=config.train.progress, ready=ready)
    ids = list(test["sample_index"])
    rows = []
    has_mask = test["mask"].notna().to_numpy()
    mask_twin: dict[int, int] = {}  # test row -> the one training image with the same mask: a copy
    if decoded.masks is not None:
        checks = mask_checks(decoded.masks, has_mask)
        train_group = np.full(len(data.ids), -1, np.int64)
        first_of: dict[int, str] = {}
        for g, name in enumerate(dict.fromkeys(scores.loc[scores["group"] != "", "group"])):
            train_group[(scores["group"] == name).to_numpy()] = g
            first_of[g] = name
        known = np.full(len(ids), -1)
        if data.masks is not None:
            known = shared_with(decoded.masks, data.masks, train_group)
            plain = ~(scores["empty_mask"] | scores["full_mask"]).to_numpy() & (data.masks.flatten(1) != 0).any(1).numpy()
            single = {h: r for r, h in enumerate(mask_hashes(data.masks)) if plain[r] and train_group[r] < 0}
            for r, h in enumerate(mask_hashes(decoded.masks)):
                if has_mask[r] and not checks["empty"][r] and not checks["full"][r] and h in single:
                    mask_twin[r] = single[h]
        for r, name in enumerate(ids):
            for check in ("empty", "full"):
                if checks[check][r]:
                    rows.append(["test", name, f"{check}_mask", 1.0, "", ""])
            if known[r] >= 0:
                rows.append(["test", name, "shared_mask", 1.0, "", first_of[int(known[r])]])
            elif checks["group"][r] >= 0:
                first = ids[int(np.flatnonzero(checks["group"] == checks["group"][r])[0])]
                rows.append(["test", name, "shared_mask", 1.0, "", first])
    blank_train = (scores["blank"] >= 0.5).to_numpy()
    blank_test = blank_issue(blank_scores(decoded.images), config) >= 0.5
    # exact copies: one difference hash, then every pixel
    by_hash: dict[int, list[int]] = {}
    for r, h in enumerate(difference_hashes(data.images)):
        if not blank_train[r]:
            by_hash.setdefault(int(h), []).append(r)
    leaked = set()
    for r, h in enumerate(difference_hashes(decoded.images)):
        for t in by_hash.get(int(h), []) if not blank_test[r] else []:
            diff = float((decoded.images[r].float() - data.images[t].float()).abs().mean()) / 255.0
            if diff <= config.duplicate_diff:
                rows.append(["test", ids[r], "leak", round(max(0.5, 1.0 - diff / (2 * config.duplicate_diff)), 4),
                             data.ids[t], ""])
                leaked.add(r)
                break
    for q, t, d in near_pairs(decoded.images, data.images, config, same=False,
                              skip_query=blank_test | np.isin(np.arange(len(ids)), list(leaked)),
                              skip_reference=blank_train):
        rows.append(["test", ids[q], "leak", round(0.5 + d / 2, 4), data.ids[t], ""])
        leaked.add(q)
    for r, t in mask_twin.items():
        if r not in leaked:
            rows.append(["test", ids[r], "leak", MASK_PAIR_SCORE, data.ids[t], ""])
    return rows + [["test", ids[r], "mask_size", 1.0, "", ""] for r in decoded.stretched]


def _has_mask(competition: Competition | None, ids: list[str]) -> np.ndarray | None:
    if competition is None:
        return None
    has = competition.samples.set_index("sample_index")["mask"].notna()
    return has.reindex(ids, fill_value=False).to_numpy()


def audit(data, config: AuditConfig = AuditConfig(), out: str | Path = "runs/audit", *,
          started: float | None = None, competition: Competition | None = None) -> AuditResult:
    """Score every training sample for every issue; write RUN/scores.csv, suspects.csv, checks.csv, suspects.png.

    `data`: a TrainingData (every sample is audited, whatever its split) or a competition (decoded
    as `config.train` says). `competition`: the Competition a TrainingData came from, for the mask
    files (which samples have one) and the test set's checks; given a competition as `data`, that one.
    `started`: time.perf_counter() at which `config.time_budget` began (default: now), so a
    command's decoding counts against it.
    """
    started = time.perf_counter() if started is None else started
    if not isinstance(data, TrainingData):
        competition = data if isinstance(data, Competition) else load_competition(data)
        data = prepare_for(competition, config.train, split=False)
    counts = np.bincount(data.targets.numpy(), minlength=len(data.classes))
    if counts.max(initial=0) < config.folds:
        raise KitError(f"{len(data.ids)} samples cannot fill {config.folds} folds: give fewer --folds.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None if config.time_budget is None else started + config.time_budget
    probs = z = features = None
    if config.folds:
        probs, z, features = out_of_fold(data, config, out, deadline=deadline)
        np.savez_compressed(out / rundir.OOF, ids=np.array(data.ids), probs=probs, features=features)
    with progress_bar(total=2, desc="audit: scoring", disable=not config.train.progress) as bar:
        scores = score_table(data, probs, z, config, has_mask=_has_mask(competition, data.ids))
        suspects = suspects_from(scores)
        bar.update(1)
        rows = train_checks(scores, data.stretched_masks)
        if competition is not None and config.test:
            rows += test_checks(competition, data, scores, config)
        rows.sort(key=lambda row: (row[0] != "train", row[1], row[2]))  # train first, then by id
        checks = pd.DataFrame(rows, columns=CHECK_COLUMNS)
        bar.update(1)
    scores = scores.drop(columns=["mislabeled_flag"])  # suspects.csv says which were flagged
    write_table(out / rundir.SCORES, scores)
    write_table(out / rundir.SUSPECTS, suspects)
    write_table(out / rundir.CHECKS, checks)
    plot_suspects(suspects, data, out / rundir.SUSPECTS_PNG)
    found = suspects["issue"].value_counts().reindex(ISSUES, fill_value=0)
    print(f"audit: {len(suspects)} suspects of {len(scores)} samples ("
          + ", ".join(f"{n} {issue}" for issue, n in found.items()) + f"); {len(checks)} checks reported; wrote "
          f"{out / rundir.SUSPECTS}, {out / rundir.SCORES}, {out / rundir.CHECKS}, {out / rundir.SUSPECTS_PNG}")
    return AuditResult(out, scores, suspects, probs, checks, features)
