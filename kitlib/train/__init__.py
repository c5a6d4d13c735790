"""The training stage: a documented config, the recipe that resolves it, and one loop.

    result = fit(prepare_for(competition, config), TrainConfig(time_budget=600), "runs/first")

config.py holds TrainConfig; recipe.py resolves it and answers the loop's per-step questions
(phase, learning rate, augmentation strength); trainer.py builds what a run trains with and
saves or restores it; loop.py is `fit`; loss.py the one per-sample loss. Around them:
schedules.py, ema.py, lr_find.py (the learning-rate range test), distributed.py (DDP).
"""

from kitlib.train.config import TrainConfig  # noqa: F401
from kitlib.train.loop import FitResult, fit, train  # noqa: F401
from kitlib.train.loss import sample_losses  # noqa: F401
