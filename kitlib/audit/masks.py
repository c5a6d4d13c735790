"""Mask checks: masks are part of the data, and planted junk often gives itself away through them.

- shared mask: several images carrying one and the same mask (the same pixels), as the course
  challenge's cartoons all carried one mask file; reported as a group, every member listed;
- empty mask: a mask file with no foreground pixel;
- full mask: a mask whose foreground covers the whole image.
A mask is compared at the decoded size (nearest-neighbour resizing keeps its labels), hashed with
BLAKE2b. Empty and full masks are never a shared group (many honest images have them).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def mask_hashes(masks: torch.Tensor) -> list[str]:
    """(N,) hex BLAKE2b digests of the pixels of (N, 1, H, W) uint8 masks."""
    return [hashlib.blake2b(m.numpy().tobytes(), digest_size=16).hexdigest() for m in masks]


def mask_coverage(masks: torch.Tensor) -> np.ndarray:
    """(N,) share of each mask's pixels that are foreground (non-zero), in [0, 1]."""
    return (masks != 0).flatten(1).double().mean(1).numpy()


def mask_checks(masks: torch.Tensor | None, has_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{'empty', 'full': (N,) bool; 'group': (N,) int64, -1 or the shared-mask group (0, 1, ...)} of (N, 1, H, W) masks.

    `has_mask`: (N,) bool, which samples have a mask file (decoded masks are zeros where there is
    none); default: every sample, when there are masks at all. A group holds two or more samples
    whose masks are identical and neither empty nor full; groups are numbered by their first member.
    """
    n = 0 if masks is None else len(masks)
    empty, full, group = np.zeros(n, bool), np.zeros(n, bool), np.full(n, -1, np.int64)
    if masks is None or n == 0:
        return {"empty": empty, "full": full, "group": group}
    has = np.ones(n, bool) if has_mask is None else np.asarray(has_mask, bool)
    coverage = mask_coverage(masks)
    empty, full = has & (coverage == 0.0), has & (coverage == 1.0)
    members: dict[str, list[int]] = {}
    for row, digest in enumerate(mask_hashes(masks)):
        if has[row] and not empty[row] and not full[row]:
            members.setdefault(digest, []).append(row)
    number = 0
    for rows in sorted((r for r in members.values() if len(r) >= 2), key=lambda r: r[0]):
        group[rows] = number
        number += 1
    return {"empty": empty, "full": full, "group": group}


def shared_with(masks: torch.Tensor, reference: torch.Tensor, reference_group: np.ndarray) -> np.ndarray:
    """(N,) the group of `reference` whose mask each of `masks` repeats exactly, -1 for none (test vs train)."""
    known = {}
    for digest, g in zip(mask_hashes(reference), reference_group):
        if g >= 0:
            known[digest] = int(g)
    return np.array([known.get(d, -1) for d in mask_hashes(masks)], dtype=np.int64)
