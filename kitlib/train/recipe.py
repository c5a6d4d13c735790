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


def phases(config: TrainConfig) -> list[Phase]:
    """Training phases: one, or the head alone then the whole net (transfer learning, then fine-tuning)."""
    if not config.finetune:
        return [Phase("train", 0.0, 1.0, 1.0)]
    return [Phase("head", 0.0, config.head_fraction, 1.0),
            Phase("full", config.head_fraction, 1.0, config.finetune_lr_scale)]


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
        masks=data.mask_mode,
        precision=runtime.pick_precision(device, config.precision))


def auto_batch_size(train_samples: int) -> int:
    """A power of two in [16, 128] that leaves at least ~STEPS_PER_EPOCH optimizer steps per epoch."""
    return int(min(128, max(16, 2 ** math.floor(math.log2(max(train_samples / STEPS_PER_EPOCH, 1))))))


def strength(config: TrainConfig, progress: float) -> float:
    """Augmentation strength at `progress`: strength_start for a new head, then full; or a ramp from strength_start."""
    if config.strength == "phases":
        return augment.strength_at(progress, "phases",
                                   phases=((0.0, config.strength_start), (config.head_fraction, 1.0)))
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
    models.freeze(model, backbone=phase.name == "head", bn_stats=small_batch and phase.name != "train")


def class_weight(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """(K,) loss weights with mean 1 over the training samples, or None."""
    if mode == "auto":
        mode = "sqrt" if counts.max() > IMBALANCE * max(counts.min(), 1) else "none"
    if mode == "none":
        return None
    weight = 1.0 / np.maximum(counts, 1) ** (1.0 if mode == "balanced" else 0.5)
    weight /= (weight * counts).sum() / counts.sum()
    return torch.tensor(weight, dtype=torch.float32)
