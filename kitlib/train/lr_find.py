"""The learning-rate range test: raise the LR exponentially for a few dozen batches, watch the loss.

The users found their hyper-parameters "very sensitive". This test (Smith, 2015; fast.ai's
lr_find) shows in a minute which learning rates train at all: the suggestion is the LR where the
smoothed loss falls fastest, well below the one where it blows up.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kitlib import runtime  # noqa: E402
from kitlib.data.dataset import TrainingData  # noqa: E402
from kitlib.figures import save_figure  # noqa: E402
from kitlib.progress import progress_bar  # noqa: E402
from kitlib.train import distributed  # noqa: E402
from kitlib.train.config import TrainConfig  # noqa: E402
from kitlib.train.loop import train_step  # noqa: E402
from kitlib.train.trainer import State, batch_order, build_trainer  # noqa: E402


@dataclass(frozen=True)
class LRFinding:
    """The range test's curve and its suggestion."""

    lrs: np.ndarray
    """Learning rate of each batch tried."""
    losses: np.ndarray
    """Smoothed training loss after each batch."""
    suggestion: float
    """The LR of steepest descent of the smoothed loss (a good peak LR for one-cycle)."""
    plot: Path | None


def lr_find(data: TrainingData, config: TrainConfig = TrainConfig(), *, start: float = 1e-4,
            end: float = 10.0, steps: int = 100, plot: str | Path | None = "images/lr_find.png") -> LRFinding:
    """Train `steps` batches with the LR rising from `start` to `end`; return the curve and a suggested LR."""
    runtime.set_threads(config.threads)
    with tempfile.TemporaryDirectory() as folder:  # the test's model is thrown away
        t = build_trainer(data, replace(config, ema=None, schedule="constant"), Path(folder), distributed.Context(),
                          resuming=False)
    state, lrs, losses, smooth, best = State(), [], [], 0.0, math.inf
    t.net.train()
    order = batch_order(t, 0)  # training samples, or their tiles
    size = t.config.batch_size
    for i in progress_bar(range(steps), desc="lr_find", disable=not config.progress):
        lr = start * (end / start) ** (i / max(steps - 1, 1))
        for group in t.optimizer.param_groups:
            group["lr"] = lr * group["base_lr"] / t.config.lr  # keeps layer-wise ratios
        offset = (i * size) % max(len(order) - size, 1)
        loss = train_step(t, state, order[offset:offset + size], progress=0.0)
        state.step += 1
        smooth = 0.9 * smooth + 0.1 * loss
        value = smooth / (1 - 0.9 ** (i + 1))  # bias-corrected moving average
        lrs.append(lr)
        losses.append(value)
        best = min(best, value)
        if not math.isfinite(value) or value > 4 * best:  # diverged: the rest of the curve says nothing
            break
    lrs, losses = np.array(lrs), np.array(losses)
    suggestion = _steepest(lrs, losses)
    path = _plot(lrs, losses, suggestion, Path(plot), t.config.model) if plot else None
    print(f"lr_find: suggested peak learning rate {suggestion:.2g} ({len(lrs)} batches)")
    return LRFinding(lrs, losses, suggestion, path)


def _steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest per log-LR, in the first valley of the curve: after its first
    tenth (the moving average is still settling there) and before the loss first climbs 5 % above its
    best so far; a tenth of the valley's lowest LR if the valley is too short to measure a slope."""
    start = max(3, len(lrs) // 10)
    rising = np.flatnonzero(losses > 1.05 * np.minimum.accumulate(losses))
    end = int(rising[0]) if len(rising) else len(losses)
    stop = int(np.argmin(losses[:end])) + 1
    if stop - start < 3:
        return float(lrs[stop - 1] / 10)
    slopes = np.gradient(losses[start:stop], np.log(lrs[start:stop]))
    return float(lrs[start + int(np.argmin(slopes))])


def _plot(lrs, losses, suggestion: float, path: Path, model: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"Learning-rate range test: {model}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
