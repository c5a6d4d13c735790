"""An exponential moving average of a model's weights: a smoother model for validation and prediction."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `module`, a copy of the model whose weights trail the trained ones.

    ema = d * ema + (1 - d) * weights after every optimizer step, with the decay d warmed up as
    min(decay, (1 + step) / (10 + step)) so that a short run is not dominated by its random start.
    Floating-point buffers (batch-norm statistics) are averaged the same way, so that they describe the
    averaged weights' activations, as timm's ModelEmaV2/V3 do; integer ones (batches counted) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards `model`'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged = [p for p in self.module.parameters()]
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - d)  # ema += (1 - d) * (w - ema)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            if mine.is_floating_point():
                mine.lerp_(theirs, 1.0 - d)
            else:
                mine.copy_(theirs)

    def state_dict(self) -> dict:
        """The averaged weights and the update count (for checkpoints)."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
