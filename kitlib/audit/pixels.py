"""What a pixel shows without a model: blank images, exact copies, and images far from all others.

Blank: one flat colour (an empty scan, a lens cap): pixel standard deviation near zero. Exact copy:
the same picture filed twice (a difference hash, then a pixel check); the first copy in id order is
kept, since duplicates split over training and validation inflate the validation score (copies under
a stain or a crop: kitlib.audit.duplicates). Far from the others: an 8x8 colour thumbnail's
k-nearest-neighbour distance as a robust z-score, half of the alien evidence (kitlib.audit.foreign).
"""

from __future__ import annotations

import numpy as np
import torch

from kitlib.audit.config import AuditConfig


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
