"""Foreign images: cartoons, drawings, screenshots, photos of another domain among the competition's own.

Without a model, an image is described by a few statistics of how it is drawn, not of what it shows:
colour flatness (how many of its pixels share its few most common colours), the share of flat
pixels and of strong edges, how sharp its edges are against its texture, its saturation, its mean
colour. A competition's own images (photos, slides, scans) vary in content but little in these;
a cartoon is flat with hard edges, a screenshot flat with thin text, a photo among slides of another
colour and texture. A robust Mahalanobis distance (Rousseeuw's minimum covariance determinant,
scikit-learn's MinCovDet, fitted on at most 4,000 images) measures how far each image is from the
bulk of the competition; a group of foreign images, however alike among themselves, stays far from
that bulk, where a nearest-neighbour distance would find them close to each other.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

STATISTICS = ("flat_colours", "colours", "flat_pixels", "edge_pixels", "edge_sharpness", "texture",
              "saturation", "saturation_spread", "red", "green", "blue")


def image_statistics(images: torch.Tensor) -> np.ndarray:
    """(N, 11) statistics of (N, 3, H, W) uint8 images, in STATISTICS order.

    flat_colours: share of pixels in the 4 most common colours (4 bits a channel); colours: log
    number of colours used; flat_pixels / edge_pixels: share of pixels whose grey gradient is below
    2 / above 40 levels; edge_sharpness: log of the 99th to the 50th percentile of the gradient;
    texture: log mean absolute Laplacian; saturation (max - min channel, 0..1) mean and spread;
    red, green, blue: mean channel levels (0..1).
    """
    out = np.empty((len(images), len(STATISTICS)), dtype=np.float64)
    for start in range(0, len(images), 512):
        x = images[start:start + 512].to(torch.int64)  # (n, 3, H, W)
        n = len(x)
        codes = ((x[:, 0] >> 4) * 256 + (x[:, 1] >> 4) * 16 + (x[:, 2] >> 4)).flatten(1)  # (n, HW) 4096 colours
        counts = torch.zeros(n, 4096, dtype=torch.int64).scatter_add_(1, codes, torch.ones_like(codes))
        pixels = codes.shape[1]
        flat = counts.topk(4, dim=1).values.sum(1).double() / pixels
        used = (counts > 0).sum(1).double().log()
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).double()  # (n, H, W)
        gx = (grey[:, :, 1:] - grey[:, :, :-1]).abs()[:, :-1, :]
        gy = (grey[:, 1:, :] - grey[:, :-1, :]).abs()[:, :, :-1]
        grad = torch.maximum(gx, gy).flatten(1)  # (n, (H-1)(W-1))
        q = torch.quantile(grad, torch.tensor([0.5, 0.99], dtype=torch.float64), dim=1)  # (2, n)
        lap = (4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2]
               - grey[:, 1:-1, 2:]).abs().flatten(1).mean(1)
        sat = (x.max(1).values - x.min(1).values).double().flatten(1) / 255.0
        mean = x.double().mean((2, 3)) / 255.0  # (n, 3)
        out[start:start + n] = torch.stack([
            flat, used, (grad < 2).double().mean(1), (grad > 40).double().mean(1),
            torch.log((q[1] + 1.0) / (q[0] + 1.0)), torch.log(lap + 1.0), sat.mean(1), sat.std(1),
            mean[:, 0], mean[:, 1], mean[:, 2]], dim=1).numpy()
    return out


def robust_distance(values: np.ndarray, *, seed: int = 0, fit_rows: int = 4000) -> np.ndarray:
    """(N,) robust Mahalanobis distance of each row of (N, D) `values` from their bulk (MinCovDet).

    Fitted on at most `fit_rows` rows drawn at random; columns with no spread are left out.
    """
    from sklearn.covariance import MinCovDet

    if len(values) < 2 * values.shape[1] + 2:
        return np.zeros(len(values))
    spread = values.std(axis=0)
    values = values[:, spread > 1e-9]
    rng = np.random.default_rng(seed)
    fit = values[rng.permutation(len(values))[:fit_rows]]
    with warnings.catch_warnings():  # MinCovDet warns when the covariance is near-singular
        warnings.simplefilter("ignore")
        mcd = MinCovDet(random_state=seed).fit(fit)
    return np.sqrt(np.maximum(mcd.mahalanobis(values), 0.0))


def statistics_z(images: torch.Tensor, skip: np.ndarray | None = None, *, seed: int = 0) -> np.ndarray:
    """(N,) robust z of the log robust distance of each image's statistics from the bulk; 0 for `skip` rows.

    `skip`: rows neither fitted nor scored (blank images, which are their own issue).
    """
    from kitlib.audit.pixels import robust_z

    z = np.zeros(len(images))
    rows = np.arange(len(images)) if skip is None else np.flatnonzero(~skip)
    if len(rows) == 0:
        return z
    stats = image_statistics(images[torch.from_numpy(rows)])
    z[rows] = robust_z(np.log(robust_distance(stats, seed=seed) + 1e-6))
    return z


def foreign_z(statistics: np.ndarray, thumbnail: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """(N,) the alien evidence: the larger of the statistics' z and the thumbnails' z (averaged with the
    fold models' feature z when given, so that a model alone never calls a photo foreign)."""
    pictures = thumbnail if features is None else (thumbnail + features) / 2.0
    return np.maximum(statistics, pictures)
