"""The loss: per-sample cross-entropy, computed here and nowhere else (training, validation, the audit, the review)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_losses(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0,
                  class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) cross-entropy of (B, K) logits against (B, K) soft or (B,) hard targets: the one place it is computed.

    Log-probabilities are valid logits (log_softmax leaves them as they are), so losses of stored
    probabilities are `sample_losses(probs.clamp_min(1e-12).log(), targets)`.
    """
    if targets.dim() == 1:
        targets = F.one_hot(targets, logits.shape[1]).float()
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / logits.shape[1]
    if class_weight is not None:
        targets = targets * class_weight
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


def probability_losses(probs, targets) -> torch.Tensor:
    """(N,) cross-entropy of the given labels under (N, K) probabilities (NumPy or torch), no label smoothing."""
    probs = torch.as_tensor(probs, dtype=torch.float32)
    return sample_losses(probs.clamp_min(1e-12).log(), torch.as_tensor(targets, dtype=torch.int64))
