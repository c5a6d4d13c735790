"""The training recipe: the run's config, and how it turns into model, optimizer, schedule and phases.

`TrainConfig` holds every choice of a run, each documented; `resolve` fills its 'auto' values
from the data and the hardware (the result is what config.json records). The rest are the
small decisions the loop asks for at each step: which phase, which learning rate, how strong
the augmentation, which parameters train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from kitlib import augment, models, runtime
from kitlib.dataset import TrainingData
from kitlib.errors import KitError
from kitlib.schedules import lr_factor


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as RUN/config.json and inside every checkpoint."""

    model: str = "auto"
    """A name from kitlib.models.names(), or 'auto': the kit's ResNet for images up to 96 px."""
    pretrained: bool = False
    """Start from torchvision's ImageNet weights (downloaded once, or found offline)."""
    weights: str | None = None
    """A local weights file (Kaggle without internet); implies pretrained."""
    norm: str = "auto"
    """Normalization of the kit's nets: batch, group, layer, instance; 'auto' = group below batch 16."""
    model_options: dict = field(default_factory=dict)
    """Extra arguments for models.create (e.g. {'dropout': 0.2}, {'widths': [64, 128, 256]})."""
    image_size: int | None = None
    """Model input in px (square); None: the pretrained weights' size, else the decoded size."""
    epochs: int | None = None
    """Epochs to train; the alternative to `time_budget` (default 30 when neither is given)."""
    time_budget: float | None = None
    """Seconds of training: schedules follow the fraction used; the run ends inside it, best model saved."""
    batch_size: int | None = None
    """Images per optimizer step (split over processes under DDP, times `grad_accum`); None: a power
    of two from 16 to 128 that gives an epoch at least ~30 steps (small data sets need steps)."""
    grad_accum: int = 1
    """Batches whose gradients add up before each optimizer step."""
    optimizer: str = "auto"
    """'sgd' (Nesterov, momentum 0.9), 'adamw', or 'auto': SGD from scratch, AdamW when pretrained."""
    lr: float | None = None
    """Peak learning rate; None: 0.2 (SGD) or 1e-3 (AdamW), times batch_size / 128."""
    weight_decay: float | None = None
    """None: 5e-4 (SGD) or 0.05 (AdamW); never applied to biases and norm weights."""
    schedule: str = "onecycle"
    """LR schedule: onecycle, cosine (with warm-up), triangular2, plateau, constant."""
    warmup: float = 0.05
    """Fraction of training for the LR warm-up (cosine, plateau, constant)."""
    clip_grad: float | None = None
    """Clip the gradient norm to this value (None: no clipping)."""
    label_smoothing: float = 0.1
    """Share of each target spread over all classes."""
    class_weights: str = "auto"
    """Loss weights per class: none, balanced (1/count), sqrt (1/sqrt(count)), auto (sqrt if the largest class is > 3x the smallest)."""
    augment: str = "light"
    """Augmentation preset (kitlib.augment.PRESETS): none, light (flip + shift: safe on short runs),
    medium, strong, auto (TrivialAugmentWide); stronger presets pay off on longer runs."""
    strength: str = "auto"
    """Augmentation strength schedule: constant, ramp, phases, or auto (phases when fine-tuning, else ramp)."""
    ema: float | None = 0.999
    """Decay of the weights' moving average used for validation and prediction (None: off)."""
    finetune: bool | None = None
    """Transfer learning then fine-tuning: the head alone first, then the whole net (None: when pretrained)."""
    head_fraction: float = 0.2
    """Share of training spent on the head alone when fine-tuning."""
    early_lr_factor: float = 0.1
    """When fine-tuning, the first stage's LR relative to the head's (rising geometrically to 1)."""
    early_stopping: int | None = None
    """Stop after this many epochs without a better validation macro-F1 (None: never)."""
    val_fraction: float = 0.2
    """Validation share of each class when the layout has no validation split (0: train on all)."""
    folds: int | None = None
    """Use fold `fold` of stratified K folds as validation instead of a hold-out."""
    fold: int = 0
    """Which fold validates when `folds` is set."""
    decode_size: int | None = None
    """Size in px the images are decoded to and held in memory; None: their most common size, shrunk
    (aspect kept) to `image_size`, to the pretrained weights' size, or else to AUTO_DECODE_CAP."""
    fit: str = "squash"
    """How other shapes reach that size: squash, pad or crop."""
    precision: str = "auto"
    """bf16, fp16, fp32, or auto (from the hardware: see runtime.pick_precision)."""
    channels_last: bool = True
    """Memory format for convnets (faster on GPUs and on the CPU's oneDNN)."""
    compile: bool = False
    """torch.compile the model (minutes of start-up; pays off on long GPU runs)."""
    checkpoint_minutes: float = 5.0
    """Also save last.pt every this many minutes inside an epoch (Colab may die at any time)."""
    seed: int = 0
    """Seeds the split, the initialization, the data order and the augmentation."""
    device: str = "auto"
    """cuda, mps, cpu, or auto."""
    threads: int | None = None
    """CPU threads for torch (None: every core; the kit uses no loader workers)."""
    progress: bool = True
    """Show progress bars."""
    images_dir: str | None = "images"
    """Folder that also receives the run's curves for the report (None: the run folder only)."""

    def __post_init__(self):
        if self.epochs is not None and self.time_budget is not None:
            raise KitError("give epochs or time_budget, not both: they are alternatives.")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise KitError(f"{name}={getattr(self, name)}: must be at least 1.")
        if self.optimizer not in ("auto", "sgd", "adamw"):
            raise KitError(f"optimizer {self.optimizer!r}: choose one of auto, sgd, adamw.")
        if self.class_weights not in ("auto", "none", "balanced", "sqrt"):
            raise KitError(f"class_weights {self.class_weights!r}: choose one of auto, none, balanced, sqrt.")


def _pretrained(config: TrainConfig) -> bool:
    return config.pretrained or config.weights is not None


AUTO_DECODE_CAP = {"cpu": 64, "mps": 128, "cuda": 128}
"""Longest side (px) of the default decode size per device type. On a 2-core CPU the kit's ResNet
trains at ~280 img/s at 64 px, but a 256 px mobilenet_v3_small at ~60 img/s: a short budget on
large images would otherwise see a few epochs of a net that learns slowly from scratch."""


def decode_size(config: TrainConfig, common: tuple[int, int], device_type: str) -> tuple[int, int]:
    """(H, W) to decode images to: `decode_size`, else their most `common` (H, W) shrunk to fit the training size."""
    if config.decode_size:
        return config.decode_size, config.decode_size
    if config.image_size:
        cap = config.image_size
    elif _pretrained(config):
        model = config.model if config.model != "auto" else models.default_name(max(common), device_type, True)
        cap = models.input_size(model, True)
    else:
        cap = AUTO_DECODE_CAP.get(device_type, 64)
    scale = min(1.0, cap / max(common))
    return max(1, round(common[0] * scale)), max(1, round(common[1] * scale))


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
    return [Phase("head", 0.0, config.head_fraction, 1.0), Phase("full", config.head_fraction, 1.0, 0.3)]


def resolve(config: TrainConfig, data: TrainingData, device: torch.device) -> TrainConfig:
    """Fill every 'auto' and None of `config` from the data and the hardware (what config.json records)."""
    pretrained = _pretrained(config)
    model = config.model if config.model != "auto" else models.default_name(max(data.size), device.type, pretrained)
    size = config.image_size or models.input_size(model, pretrained) or max(data.size)
    optimizer = config.optimizer if config.optimizer != "auto" else ("adamw" if pretrained else "sgd")
    base_lr = 0.2 if optimizer == "sgd" else 1e-3
    batch = config.batch_size or auto_batch_size(len(data.train_index))
    finetune = pretrained if config.finetune is None else config.finetune
    norm = config.norm if config.norm != "auto" else ("group" if batch < 16 else "batch")
    epochs = config.epochs if config.epochs or config.time_budget else 30
    return replace(
        config, model=model, pretrained=pretrained, image_size=size, optimizer=optimizer,
        batch_size=batch, lr=config.lr or base_lr * batch / 128, epochs=epochs, finetune=finetune,
        weight_decay=config.weight_decay if config.weight_decay is not None else (5e-4 if optimizer == "sgd" else 0.05),
        norm=norm if model in models.resnet.PRESETS else "batch",
        strength=config.strength if config.strength != "auto" else ("phases" if finetune else "ramp"),
        precision=runtime.pick_precision(device, config.precision))


def auto_batch_size(train_samples: int) -> int:
    """A power of two in [16, 128] that leaves at least ~30 optimizer steps per epoch."""
    return int(min(128, max(16, 2 ** math.floor(math.log2(max(train_samples / 30, 1))))))


def strength(config: TrainConfig, progress: float) -> float:
    """Augmentation strength at `progress`: light (0.3) for a new head, then full; or a ramp from 0.3."""
    if config.strength == "phases":
        return augment.strength_at(progress, "phases", phases=((0.0, 0.3), (config.head_fraction, 1.0)))
    if config.strength == "ramp":
        return augment.strength_at(progress, "ramp", start=0.3, end=1.0, until=0.5)
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
        mode = "sqrt" if counts.max() > 3 * max(counts.min(), 1) else "none"
    if mode == "none":
        return None
    weight = 1.0 / np.maximum(counts, 1) ** (1.0 if mode == "balanced" else 0.5)
    weight /= (weight * counts).sum() / counts.sum()
    return torch.tensor(weight, dtype=torch.float32)
