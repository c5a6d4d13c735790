"""The training recipe: how a TrainConfig turns into model, optimizer, schedule and phases.

`resolve` fills the config's 'auto' values from the data and the hardware (the result is what
config.json records). The rest are the small decisions the loop asks for at each step: which
phase, which learning rate, how strong the augmentation, which parameters train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from kitlib import augment, models, runtime
from kitlib.data.dataset import TrainingData
from kitlib.train.config import TrainConfig
from kitlib.train.schedules import lr_factor

BASE_LR = {"sgd": 0.2, "adamw": 1e-3}
"""Peak learning rate per 128 images in a batch (scaled linearly with the batch size), per optimizer."""
WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}
"""Default weight decay per optimizer (AdamW's is decoupled, hence the larger value)."""
STEPS_PER_EPOCH = 30
"""The automatic batch size leaves at least this many optimizer steps per epoch: small data sets need steps."""
RESIZE_FROM = 0.5
"""resize_from=None: progressive resizing starts from this fraction of the input size ..."""
RESIZE_MIN_SIDE = 24
"""... but from no fewer px than this: a 32 px net starts at 24 px (README: Results)."""
JOIN_AT = 0.8
"""`all`'s join_at: the validation samples join for the last fifth of training (README: Results)."""
JOIN_LR = 0.3
"""Peak LR of the second cycle (on every sample), relative to the first's: it refines, it does not restart."""
ADAPTIVE_EPOCHS = 40
"""augment='adaptive' is medium from this many epochs up, light below (README: Results)."""
ADAPTIVE_DECIDE_AT = 0.2
"""Under a time budget, augment='adaptive' decides at the first epoch end past this fraction of the budget
(by then the pace is steady: the first epoch's alone misjudged it 4x on the rehearsal competition)."""
IMBALANCE = 3.0
"""class_weights='auto' weighs the loss (sqrt) when the largest class is more than this times the smallest."""


def _pretrained(config: TrainConfig) -> bool:
    return config.pretrained or config.weights is not None


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own trainable part, LR scale and augmentation strength."""

    name: str
    start: float
    """Progress at which it starts (0..1)."""
    end: float
    lr_scale: float


def phases(config: TrainConfig, join: float | None = None) -> list[Phase]:
    """Training phases: one, or the head alone then the whole net (transfer learning, then fine-tuning);
    with `join` (the progress at which the validation samples join), those end there and a last phase,
    'joined', is a second learning-rate cycle on every sample, its peak JOIN_LR times the last phase's."""
    end = join or 1.0
    if not config.finetune:
        out = [Phase("train", 0.0, end, 1.0)]
    else:
        head = config.head_fraction * end
        out = [Phase("head", 0.0, head, 1.0), Phase("full", head, end, config.finetune_lr_scale)]
    return out + ([Phase("joined", end, 1.0, out[-1].lr_scale * JOIN_LR)] if join else [])


def resolve(config: TrainConfig, data: TrainingData, device: torch.device) -> TrainConfig:
    """Fill every 'auto' and None of `config` from the data and the hardware (what config.json records)."""
    pretrained = _pretrained(config)
    side = data.tiles.spec.size if data.tiles is not None else max(data.size)  # what the model will see
    model = config.model if config.model != "auto" else models.default_name(side, device.type, pretrained)
    size = side if data.tiles is not None else config.image_size or models.input_size(model, pretrained) or side
    optimizer = config.optimizer if config.optimizer != "auto" else ("adamw" if pretrained else "sgd")
    base_lr = BASE_LR[optimizer]
    batch = config.batch_size or auto_batch_size(int(data.class_counts().sum()))  # samples, or tiles
    finetune = pretrained if config.finetune is None else config.finetune
    norm = config.norm if config.norm != "auto" else ("group" if batch < 16 else "batch")
    epochs = config.epochs if config.epochs or config.time_budget else 30
    return replace(
        config, model=model, pretrained=pretrained, image_size=size, optimizer=optimizer,
        batch_size=batch, lr=config.lr or base_lr * batch / 128, epochs=epochs, finetune=finetune,
        weight_decay=config.weight_decay if config.weight_decay is not None else WEIGHT_DECAY[optimizer],
        norm=norm if model in models.resnet.PRESETS else "batch",
        strength=config.strength if config.strength != "auto" else ("phases" if finetune else "ramp"),
        augment=adaptive_augment(epochs) if config.augment == augment.ADAPTIVE and not config.time_budget
        else config.augment,
        masks=data.mask_mode, resize_from=config.resize_from or auto_resize_from(model, size, config.time_budget),
        precision=runtime.pick_precision(device, config.precision))


def adaptive_augment(epochs: float) -> str:
    """augment='adaptive' for a run of `epochs` epochs: 'medium' from ADAPTIVE_EPOCHS up, else 'light'.

    Short runs underfit and long runs on little data overfit: on this 2-core CPU at 300 s, a 20-class
    competition of 2,000 images (~80 epochs) scored 58.9 test macro-F1 with medium against 55.5 with
    light, while CIFAR-10 (26 epochs in 600 s) ends with its training loss still at its validation loss.
    """
    return "medium" if epochs >= ADAPTIVE_EPOCHS else "light"


def auto_resize_from(model: str, size: int, time_budget: float | None) -> float:
    """resize_from=None: under a time budget RESIZE_FROM, but from at least RESIZE_MIN_SIDE px; 1 (off) for
    ViTs, whose position embeddings fix the input size, and for runs by epochs: there the smaller early
    batches buy no extra epochs, and 8-epoch audit fold models trained so flagged twice the false suspects."""
    if model.startswith("vit_") or time_budget is None:
        return 1.0
    return min(1.0, max(RESIZE_FROM, RESIZE_MIN_SIDE / size))


def auto_batch_size(train_samples: int) -> int:
    """A power of two in [16, 128] that leaves at least ~STEPS_PER_EPOCH optimizer steps per epoch."""
    return int(min(128, max(16, 2 ** math.floor(math.log2(max(train_samples / STEPS_PER_EPOCH, 1))))))


def train_size(config: TrainConfig, progress: float) -> int:
    """The side (px) of the training batches at `progress` (0..1): from resize_from x image_size, growing
    linearly to image_size at resize_until, in steps of 8 px (4 px below 64 px) that the nets run fast.

    Progressive resizing, as the fast ImageNet training records do it: a convnet's early epochs learn
    as much from smaller images, at a fraction of the cost (convolutions scale with the pixel count).
    """
    full = config.image_size
    if config.resize_from >= 1.0:
        return full
    until = config.resize_until * (config.join_at or 1.0)  # the first cycle's share when the samples join
    ramp = min(progress / until, 1.0) if until > 0 else 1.0
    step = 8 if full >= 64 else 4
    side = round(full * (config.resize_from + (1.0 - config.resize_from) * ramp) / step) * step
    return int(min(full, max(step, side)))


def strength(config: TrainConfig, progress: float) -> float:
    """Augmentation strength at `progress`: strength_start for a new head, then full; or a ramp from strength_start."""
    if config.strength == "phases":
        head = config.head_fraction * (config.join_at or 1.0)
        return augment.strength_at(progress, "phases", phases=((0.0, config.strength_start), (head, 1.0)))
    if config.strength == "ramp":
        return augment.strength_at(progress, "ramp", start=config.strength_start, end=1.0,
                                   until=config.strength_ramp)
    return augment.strength_at(progress, config.strength)


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over layer-wise groups: early stages slower when fine-tuning."""
    factor = config.early_lr_factor if config.finetune else 1.0
    groups = models.param_groups(model, config.lr, weight_decay=config.weight_decay, early_lr_factor=factor)
    for group in groups:
        group["base_lr"] = group["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))


def set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, phase: Phase, progress: float,
           plateau: float) -> float:
    """Apply the schedule (within the phase) to every group; return the head's LR."""
    local = (progress - phase.start) / max(phase.end - phase.start, 1e-9)
    scale = lr_factor(config.schedule, local, warmup=config.warmup) * phase.lr_scale * plateau
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale
    return optimizer.param_groups[-1]["lr"]


def enter_phase(model: torch.nn.Module, phase: Phase, small_batch: bool) -> None:
    """Freeze the backbone for the head phase; unfreeze it after (batch-norm statistics stay frozen for small batches)."""
    models.freeze(model, backbone=phase.name == "head", bn_stats=small_batch and phase.name in ("head", "full"))


def class_weight(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """(K,) loss weights with mean 1 over the training samples, or None."""
    if mode == "auto":
        mode = "sqrt" if counts.max() > IMBALANCE * max(counts.min(), 1) else "none"
    if mode == "none":
        return None
    weight = 1.0 / np.maximum(counts, 1) ** (1.0 if mode == "balanced" else 0.5)
    weight /= (weight * counts).sum() / counts.sum()
    return torch.tensor(weight, dtype=torch.float32)
