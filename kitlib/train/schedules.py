"""Learning-rate schedules as functions of the fraction of training done, and the clock behind it.

Every schedule maps progress in [0, 1] to a multiplier of the base learning rate. Progress is
steps done / steps planned when training for a number of epochs, or seconds used / seconds
budgeted under a time budget: the same curve then fits a Colab session with an hour left or a
CPU with ten minutes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from kitlib.errors import KitError

SCHEDULES = ("onecycle", "cosine", "triangular2", "plateau", "constant")


def lr_factor(schedule: str, progress: float, *, warmup: float = 0.05, cycles: int = 4,
              final: float = 0.01) -> float:
    """The multiplier of the base LR at `progress` in [0, 1] for a named schedule.

    onecycle: linear ramp 0.04 -> 1 over the first 25 %, then cosine down to `final` (fast.ai style).
    cosine: linear warm-up over `warmup`, then cosine from 1 to `final`.
    triangular2: `cycles` triangles between `final` and a peak that halves every cycle (CyclicLR).
    plateau, constant: warm-up, then 1 (plateau's reductions are applied by `Plateau`).
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        peak = 0.25
        if p < peak:
            return 0.04 + (1 - 0.04) * p / peak
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * (p - peak) / (1 - peak)))
    if schedule == "triangular2":
        cycle = min(int(p * cycles), cycles - 1)
        x = p * cycles - cycle  # position within the cycle, 0..1
        height = 1.0 / 2 ** cycle
        return final + (height - final) * (1 - abs(2 * x - 1))
    if schedule not in SCHEDULES:
        raise KitError(f"schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if warmup > 0 and p < warmup:
        return max(p / warmup, 0.01)
    if schedule == "cosine":
        q = (p - warmup) / max(1 - warmup, 1e-9)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * q))
    return 1.0


@dataclass
class Plateau:
    """Reduce-on-plateau: multiply the LR by `factor` after `patience` epochs without improvement."""

    factor: float = 0.3
    """Multiplier applied at each reduction."""
    patience: int = 2
    """Epochs without a better validation score before reducing."""
    scale: float = 1.0
    """The current multiplier (state, saved in checkpoints)."""
    best: float = -math.inf
    """The best score seen (state)."""
    waited: int = 0
    """Epochs since the best score (state)."""

    def update(self, score: float) -> float:
        """Record an epoch's validation score (higher is better); return the current multiplier."""
        if score > self.best + 1e-6:
            self.best, self.waited = score, 0
        else:
            self.waited += 1
            if self.waited > self.patience:
                self.scale, self.waited = self.scale * self.factor, 0
        return self.scale


@dataclass
class Clock:
    """Progress of a run in [0, 1]: by steps (epochs mode) or by seconds (time-budget mode).

    `elapsed` counts only this run's training time, so it carries over a resume.
    """

    total_steps: int
    """Optimizer steps planned (epochs x steps per epoch); the fallback in budget mode."""
    budget: float | None = None
    """Seconds allowed for training, or None to train for `total_steps`."""
    elapsed: float = 0.0
    """Seconds of training done before this session (from the checkpoint)."""
    started: float = field(default_factory=time.perf_counter)
    reserve: float = 3.0
    """Seconds kept at the end of the budget for validating and saving (raised as they are measured):
    training stops when fewer remain, and progress reaches 1 there, so the schedule ends where training does."""

    def seconds(self) -> float:
        """Training seconds so far, earlier sessions included."""
        return self.elapsed + time.perf_counter() - self.started

    def progress(self, step: int) -> float:
        """Fraction of training done at optimizer step `step`."""
        if self.budget is None:
            return step / max(self.total_steps, 1)
        return min(self.seconds() / max(self.budget - self.reserve, 1e-9), 1.0)

    def remaining(self) -> float:
        """Seconds left in the budget (infinite without one)."""
        return math.inf if self.budget is None else self.budget - self.seconds()

    def out_of_time(self) -> bool:
        """Whether training must stop to leave `reserve` seconds of the budget."""
        return self.remaining() < self.reserve

    def keep(self, seconds: float) -> None:
        """Raise the reserve to `seconds` if that is more (a measured validation or save)."""
        self.reserve = max(self.reserve, seconds)
