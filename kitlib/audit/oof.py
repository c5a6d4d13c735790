"""Out of fold: K fold models, each sample scored by the one that never trained on it.

A model that trained on a mislabeled sample has learned its wrong label and would vouch for it, so
every score of the audit that needs a model comes from the fold whose model did not see the sample.
The fold runs are ordinary training runs (`kitlib.train.fit`) in RUN/folds/fold0 ..., resumable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kitlib import checkpoint, rundir
from kitlib.audit.config import AuditConfig
from kitlib.audit.pixels import knn_distance, robust_z
from kitlib.augment import EvalTransform, MaskEvalTransform, eval_transform
from kitlib.data.dataset import TrainingData
from kitlib.data.splits import stratified_folds
from kitlib.data.tiles import aggregate
from kitlib.errors import KitError
from kitlib.models import head
from kitlib.models.infer import probabilities
from kitlib.rundir import Normalization
from kitlib.runtime import pick_device, pick_precision
from kitlib.train import fit


def _head_linear(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier's last linear layer: its input is the net's feature vector."""
    linears = [m for m in head(model).modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise KitError(f"{type(model).__name__}: no linear layer in its head to read features from.")
    return linears[-1]


@dataclass(frozen=True)
class FoldModel:
    """A fold run's best model, ready to score samples it never trained on."""

    model: torch.nn.Module
    """The network, on `device`, in eval mode."""
    transform: EvalTransform | MaskEvalTransform
    """Its eval transform (the checkpoint's normalization; with the mask as channel 3 when it sees masks)."""
    device: torch.device
    precision: str


def load_fold_model(run: Path, device=None) -> FoldModel:
    """RUN/best.pt of a fold run, on `device` (default: the best available) with its eval transform."""
    device = pick_device(device)
    model, saved = checkpoint.load_model(run / rundir.BEST, device)
    norm = Normalization.from_dict(saved.get("normalization"), str(run))
    model = model.to(memory_format=torch.channels_last)
    transform = eval_transform(size=norm.size, mean=norm.mean, std=norm.std)
    return FoldModel(model, MaskEvalTransform(transform) if norm.mask_channel else transform, device,
                     pick_precision(device))


def features_and_probs(fold: FoldModel, images: torch.Tensor, rows: torch.Tensor, *,
                       batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """((n, D) L2-normalized features, (n, K) probabilities) of uint8 `images[rows]` through the fold's eval transform."""
    captured: list[torch.Tensor] = []
    hook = _head_linear(fold.model).register_forward_hook(lambda m, i, o: captured.append(i[0].detach().float().cpu()))
    batches = (images.index_select(0, rows[start:start + batch_size]) for start in range(0, len(rows), batch_size))
    try:
        probs = probabilities(fold.model, batches, fold.transform, device=fold.device, precision=fold.precision)
    finally:
        hook.remove()
    feats = torch.cat(captured).flatten(1)
    return torch.nn.functional.normalize(feats, dim=1), probs


def sample_features_and_probs(fold: FoldModel, data: TrainingData, rows: torch.Tensor, *,
                              batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """((n, D) L2-normalized features, (n, K) probabilities) of the samples `rows`, as the fold model sees them:
    whole images (with the mask as channel 3 for masks='channel'), or each image's fixed tiles, their
    features averaged and their probabilities aggregated as in training (kitlib.data.tiles.aggregate)."""
    if data.tiles is None:
        images = data.images if data.mask_mode != "channel" else torch.cat([data.images, data.masks], 1)
        return features_and_probs(fold, images, rows, batch_size=batch_size)
    tiles = data.tiles
    tile_rows, owner = tiles.owned(rows)
    feats, probs = [], []
    for start in range(0, len(tile_rows), batch_size):
        f, p = features_and_probs(fold, tiles.cut(tile_rows[start:start + batch_size]), torch.arange(
            min(batch_size, len(tile_rows) - start)), batch_size=batch_size)
        feats.append(f)
        probs.append(p)
    feats, probs = torch.cat(feats), torch.cat(probs)
    mean_feats = torch.zeros(len(rows), feats.shape[1]).index_add_(0, owner, feats)
    return (torch.nn.functional.normalize(mean_feats, dim=1),
            aggregate(probs, owner, len(rows), "mean", tiles.coverage[tile_rows]))


def fold_data(data: TrainingData, folds: np.ndarray, fold: int) -> TrainingData:
    """`data` with fold `fold` as validation and the other folds as training (no pixels copied)."""
    return replace(data, train_index=torch.from_numpy(np.flatnonzero(folds != fold)),
                   val_index=torch.from_numpy(np.flatnonzero(folds == fold)))


def _finished(run: Path, held_ids: list[str]) -> bool:
    """Whether `run` is a finished fold run (validation predictions written) that validated on exactly `held_ids`."""
    validated = rundir.validated_ids(run)
    if validated is None:
        return False
    if validated != held_ids:
        raise KitError(f"{run} holds a fold run of other samples (another competition, seed or --folds): "
                       "give the audit a new --out folder.")
    return True


def out_of_fold(data: TrainingData, config: AuditConfig, out: Path, *, deadline: float | None = None,
                device=None) -> tuple[np.ndarray, np.ndarray]:
    """((N, K) out-of-fold probabilities, (N,) robust z of the kNN feature distance), training K fold runs.

    Each fold run lives in out/folds/fold{i} and resumes when it is there already (a Colab restart).
    With a deadline (time.perf_counter() seconds), the folds share what is left of it equally.
    """
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
        folder = rundir.fold_dir(out, i)
        if _finished(folder, [data.ids[r] for r in held.tolist()]):
            print(f"audit: fold {i + 1} of {config.folds} was trained already: {folder}")
        else:
            print(f"audit: fold {i + 1} of {config.folds}")
            fit(split, train_config, folder, resume=True)
        fold = load_fold_model(folder, device)
        # (<= 4000,) reference rows (fewer when each is many tiles: ~4,000 forward passes)
        per_sample = 1 if data.tiles is None else max(1, round(len(data.tiles) / len(data.ids)))
        reference = trained[torch.from_numpy(rng.permutation(len(trained))[:max(200, 4000 // per_sample)])]
        ref_feats, _ = sample_features_and_probs(fold, data, reference)
        feats, p = sample_features_and_probs(fold, data, held)
        probs[held.numpy()] = p.numpy()
        # log: distances are skewed right, their logs close to normal; z within the fold, since
        # each fold's model has its own feature scale
        z[held.numpy()] = robust_z(np.log(knn_distance(feats, ref_feats, config.neighbours) + 1e-6))
        if budget is not None:
            overhead = max(overhead, time.perf_counter() - fold_started - budget)
    return probs, z
