"""Near-duplicates: the same picture filed twice under a colour cast, a stain, an ink mark, a small crop or a flip.

Two tests, both relative, so that a data set of look-alikes (digits, skies) does not pair everything:
1. structure: grey 16x16 thumbnails (colour casts and most of a stain gone), mean removed, compared
   by cosine in each of the four flips; a pair is a candidate when each is the other's nearest
   neighbour, the similarity is at least `near_similarity`, and the pair is far closer than the
   next neighbour (Lowe's ratio test: 1 - s1 <= `near_ratio` (1 - s2));
2. detail: the full-resolution high-pass grey images (edges and texture, no stain) aligned over
   flips, two scales and small shifts; their best normalized correlation must reach `near_detail`
   and pass the same ratio test against the first image's next neighbour (`near_detail_ratio`):
   a stained copy shares its twin's texture; a look-alike shares only its outline.
Candidates are searched at 8x8 (a quarter of the work), then rescored at 16x16.
Exact copies are found first by kitlib.audit.pixels (a hash, then every pixel).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kitlib.audit.config import AuditConfig

_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
_FLIPS = ((), (-1,), (-2,), (-2, -1))


def structure(images: torch.Tensor, grid: int = 16) -> torch.Tensor:
    """(N, grid*grid) unit vectors: grey `grid` x `grid` thumbnails of (N, 3, H, W) uint8 images, mean removed."""
    out = []
    for start in range(0, len(images), 2048):
        grey = (images[start:start + 2048].float() * _GREY).sum(1, keepdim=True)
        t = F.adaptive_avg_pool2d(grey, (grid, grid)).flatten(1)
        out.append(F.normalize(t - t.mean(1, keepdim=True), dim=1))
    return torch.cat(out)


def _flipped(images: torch.Tensor, grid: int) -> list[torch.Tensor]:
    return [structure(images.flip(dims) if dims else images, grid) for dims in _FLIPS]


def nearest(query: torch.Tensor, reference: torch.Tensor, *, same: bool, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """((n, k) similarities, (n, k) reference rows) of each query image's k nearest reference images, any flip.

    Searched at 8x8, the best 2k rescored at 16x16. `same`: query and reference are one set (an
    image is not its own neighbour).
    """
    k = min(k, len(reference) - int(same))
    if k < 1:
        return torch.zeros(len(query), 0), torch.zeros(len(query), 0, dtype=torch.int64)
    ref8, ref16 = structure(reference, 8), structure(reference, 16)
    views8, views16 = _flipped(query, 8), _flipped(query, 16)
    wide = min(2 * k + int(same), len(reference))
    sims, rows = [], []
    for start in range(0, len(query), 1024):
        stop = min(start + 1024, len(query))
        coarse = torch.stack([v[start:stop] @ ref8.T for v in views8]).amax(0)  # (n, m)
        if same:
            coarse[torch.arange(stop - start), torch.arange(start, stop)] = -2.0
        cand = coarse.topk(wide, dim=1).indices  # (n, wide)
        fine = torch.stack([(v[start:stop, None, :] * ref16[cand]).sum(-1) for v in views16]).amax(0)
        if same:
            fine = torch.where(cand == torch.arange(start, stop)[:, None], torch.full_like(fine, -2.0), fine)
        best = fine.topk(k, dim=1)
        sims.append(best.values)
        rows.append(cand.gather(1, best.indices))
    return torch.cat(sims), torch.cat(rows)


_THETAS = torch.tensor([[[s * fx, 0.0, dx], [0.0, s * fy, dy]] for fx in (1, -1) for fy in (1, -1)
                        for s in (1.0, 0.92) for dx in np.linspace(-0.1, 0.1, 5) for dy in np.linspace(-0.1, 0.1, 5)],
                       dtype=torch.float32)  # (200, 2, 3): flips, scales 1 and 0.92, shifts up to 5 %


def _high_pass(images: torch.Tensor) -> torch.Tensor:
    grey = (images.float() * _GREY).sum(1, keepdim=True)  # (n, 1, H, W)
    return grey - F.avg_pool2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def detail(first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """(P,) best normalized correlation of the high-pass grey images of pairs (first[p], second[p]), aligned.

    `first`, `second`: (P, 3, H, W) uint8. Each `second` image is warped over flips, scales 1 and
    0.92 and shifts up to 5 % (either image may be the crop), the border eighth left out.
    """
    out = np.zeros(len(first))
    if not len(first):
        return out
    a_all, b_all = _high_pass(first), _high_pass(second)
    h, w = a_all.shape[-2:]
    m = max(1, h // 8), max(1, w // 8)
    grid = F.affine_grid(_THETAS, (len(_THETAS), 1, h, w), align_corners=False)
    for p in range(len(first)):
        best = 0.0
        for a, b in ((a_all[p], b_all[p]), (b_all[p], a_all[p])):
            warped = F.grid_sample(b[None].expand(len(_THETAS), -1, -1, -1), grid, align_corners=False,
                                   padding_mode="border")[..., m[0]:h - m[0], m[1]:w - m[1]].flatten(1)
            centre = a[..., m[0]:h - m[0], m[1]:w - m[1]].flatten()
            centre = F.normalize(centre - centre.mean(), dim=0)
            warped = F.normalize(warped - warped.mean(1, keepdim=True), dim=1)
            best = max(best, float((warped @ centre).max()))
        out[p] = best
    return out


def near_pairs(query: torch.Tensor, reference: torch.Tensor, config: AuditConfig, *, same: bool,
               skip_query: np.ndarray | None = None, skip_reference: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """[(query row, reference row, detail correlation)] of near-duplicate pairs; see the module docstring.

    `same`: query and reference are one set (each pair once, the lower row first, and both must be
    each other's nearest neighbour). `skip_*`: rows left out (blank images, exact copies).
    """
    q_rows = np.flatnonzero(~skip_query) if skip_query is not None else np.arange(len(query))
    r_rows = np.flatnonzero(~skip_reference) if skip_reference is not None else np.arange(len(reference))
    if same:
        r_rows = q_rows
    if len(q_rows) == 0 or len(r_rows) < 2:
        return []
    q_imgs, r_imgs = query[torch.from_numpy(q_rows)], reference[torch.from_numpy(r_rows)]
    sims, rows = nearest(q_imgs, r_imgs, same=same, k=2)
    if sims.shape[1] < 2:
        return []
    s1, s2 = sims[:, 0], sims[:, 1]
    first = rows[:, 0]
    ok = (s1 >= config.near_similarity) & (1 - s1 <= config.near_ratio * (1 - s2).clamp_min(1e-6))
    if same:
        ok &= (rows[first, 0] == torch.arange(len(q_rows))) & (torch.arange(len(q_rows)) < first)
    cand = torch.nonzero(ok).flatten()
    if not len(cand):
        return []
    a = q_imgs[cand]
    near = detail(a, r_imgs[first[cand]])
    runner_up = detail(a, r_imgs[rows[cand, 1]])
    keep = (near >= config.near_detail) & (1 - near <= config.near_detail_ratio * np.maximum(1 - runner_up, 1e-6))
    return [(int(q_rows[int(i)]), int(r_rows[int(first[i])]), round(float(n), 4))
            for i, n, k in zip(cand.tolist(), near, keep) if k]
