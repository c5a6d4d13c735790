"""`TrainConfig`: every choice of a training run, documented and checked when it is built.

    config = TrainConfig(time_budget=600, augment="medium")   # a bad value fails here, with the valid ones

Its 'auto' values are filled from the data and the hardware by kitlib.train.recipe.resolve; the
resolved config is what RUN/config.json and every checkpoint record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kitlib import models
from kitlib.augment import ADAPTIVE, PRESETS
from kitlib.augment import SCHEDULES as STRENGTHS
from kitlib.data.cache import FITS
from kitlib.data.masks import MASK_MODES
from kitlib.data.tiles import AGGREGATES
from kitlib.errors import KitError
from kitlib.models.resnet import NORMS
from kitlib.runtime import PRECISIONS
from kitlib.train.schedules import SCHEDULES


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
    resize_from: float | None = None
    """Progressive resizing: training batches start at this fraction of `image_size` and grow to the full
    size by `resize_until` of training (validation and prediction always see the full size); 1: off;
    None: auto (kitlib.train.recipe.auto_resize_from: RESIZE_FROM under a time budget, off by epochs)."""
    resize_until: float = 0.75
    """Fraction of training (0..1) after which batches are at the full size."""
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
    augment: str = ADAPTIVE
    """Augmentation preset (kitlib.augment.PRESETS): none, light (flip + shift: safe on short runs),
    medium, strong, auto (TrivialAugmentWide); stronger presets pay off on longer runs. adaptive: light, or
    medium when the run will see its data at least kitlib.train.recipe.ADAPTIVE_EPOCHS times (by `epochs`,
    or under a time budget at the pace measured once recipe.ADAPTIVE_DECIDE_AT of it has passed)."""
    strength: str = "auto"
    """Augmentation strength schedule: constant, ramp, phases, or auto (phases when fine-tuning, else ramp)."""
    strength_start: float = 0.3
    """Strength (0..1) where the ramp starts, and while a new head trains alone ('phases'): weak augmentation
    while the net is far from fitting, full strength once it can fit the clean images."""
    strength_ramp: float = 0.5
    """Fraction of training (0..1) over which the ramp rises from strength_start to full strength."""
    ema: float | None = 0.99
    """Decay of the weights' moving average used for validation and prediction (None: off); batch-norm
    statistics are averaged too (kitlib.train.ema). This EMA against the former one (0.999, statistics copied):
    +1.2 points test macro-F1 on the Tiny ImageNet-style rehearsal, 3 rounds (README: Results)."""
    finetune: bool | None = None
    """Transfer learning then fine-tuning: the head alone first, then the whole net (None: when pretrained)."""
    head_fraction: float = 0.2
    """Share of training spent on the head alone when fine-tuning."""
    early_lr_factor: float = 0.1
    """When fine-tuning, the first stage's LR relative to the head's (rising geometrically to 1)."""
    finetune_lr_scale: float = 0.3
    """When fine-tuning, the whole net's peak LR relative to the head phase's: the pretrained features need
    smaller steps than the new head did."""
    early_stopping: int | None = None
    """Stop after this many epochs without a better validation macro-F1 (None: never)."""
    val_fraction: float = 0.2
    """Validation share of each class when the layout has no validation split (0: train on all)."""
    join_at: float | None = None
    """Fraction of training (0..1) at which the validation samples join the training set: the first learning-
    rate cycle ends there, its final validation scores are the run's honest estimate (RUN/val.csv holds its
    predictions), then a second, shorter cycle trains on every sample and its last model is the one saved;
    None or 1: they stay held out (`all` sets it: kitlib.train.recipe.JOIN_AT)."""
    label_evidence: bool = False
    """Write RUN/label_evidence.npz when the first learning-rate cycle ends (join_at): each sample's training
    probabilities averaged over that cycle, and the held-out samples' validation probabilities averaged over
    its second half: evidence on the labels, also from before the cycle's low learning rate memorizes wrong
    ones (kitlib.audit.dynamics; `all` sets it when it has no fold models). Free: no extra pass."""
    folds: int | None = None
    """Use fold `fold` of stratified K folds as validation instead of a hold-out."""
    fold: int = 0
    """Which fold validates when `folds` is set."""
    decode_size: int | None = None
    """Size in px the images are decoded to and held in memory; None: their most common size, shrunk
    (aspect kept) to `image_size`, to the pretrained weights' size, or else to AUTO_DECODE_CAP."""
    fit: str = "squash"
    """How other shapes reach that size: squash, pad or crop."""
    masks: str = "auto"
    """How the masks beside the images are used (kitlib.data.masks): ignore; tiles (windows of the training
    size at native resolution inside the mask, predictions averaged per image); crop (each mask region's
    box plus a margin, fitted to the training size); channel (the mask as a 4th input channel of a
    whole-image model); auto: tiles when most images have a mask and are much larger than the training
    size, else ignore."""
    tile_scale: float = 1.0
    """Resolution tiles are cut at, relative to native (0.5 for very large slides)."""
    tile_coverage: float = 0.5
    """Share of a tile the mask must cover (lowered per image to its best window's, so small regions count)."""
    tile_min_area: float = 0.05
    """Mask regions smaller than this share of a tile's area are dropped as specks."""
    tiles_per_image: int = 32
    """At most this many tiles of one image are validated and predicted, and trained on per epoch."""
    aggregate: str = "mean"
    """How tile predictions make an image's: mean (probability), coverage (weighted by mask coverage), logit."""
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
            raise KitError("give epochs or time_budget, not both: they are alternatives (--epochs, --time-budget).")
        for name, low in (("batch_size", 1), ("grad_accum", 1), ("epochs", 1), ("image_size", 8),
                          ("decode_size", 8), ("early_stopping", 1), ("threads", 1), ("tiles_per_image", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise KitError(f"{_named(name)}={value!r}: give a whole number of at least {low}.")
        for name, low, high in (("val_fraction", 0.0, 0.99), ("head_fraction", 0.01, 0.99), ("warmup", 0.0, 0.99),
                                ("label_smoothing", 0.0, 0.99), ("strength_start", 0.0, 1.0),
                                ("strength_ramp", 0.01, 1.0), ("early_lr_factor", 1e-4, 1.0),
                                ("finetune_lr_scale", 1e-4, 1.0), ("tile_scale", 0.01, 4.0),
                                ("tile_coverage", 0.01, 1.0), ("tile_min_area", 0.0, 0.99),
                                ("resize_until", 0.0, 1.0)):
            if not low <= getattr(self, name) <= high:
                raise KitError(f"{_named(name)}={getattr(self, name)!r}: give a value from {low:g} to {high:g}.")
        if self.time_budget is not None and self.time_budget <= 0:
            raise KitError(f"{_named('time_budget')}={self.time_budget!r}: give a positive number of seconds.")
        if self.join_at is not None and not 0.1 <= self.join_at <= 1.0:
            raise KitError(f"{_named('join_at')}={self.join_at!r}: give a fraction of training from 0.1 to 1 (1 or None: the "
                           "validation samples never join).")
        if self.resize_from is not None and not 0.25 <= self.resize_from <= 1.0:
            raise KitError(f"{_named('resize_from')}={self.resize_from!r}: give a fraction of the input size from 0.25 to 1 "
                           "(1: no progressive resizing), or None for the automatic choice.")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise KitError(f"ema={self.ema!r}: give a decay between 0 and 1 (e.g. 0.99), or None for no EMA.")
        for name, choices in choices_of().items():
            if getattr(self, name) not in choices:
                raise KitError(f"{_named(name)} {getattr(self, name)!r}: choose one of {', '.join(choices)}.")
        if not DEVICE.fullmatch(self.device):
            raise KitError(f"device {self.device!r}: choose one of auto, cpu, cuda, cuda:N, mps.")


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
FLAGS = {"image_size": "--size", "decode_size": "--decode-size", "batch_size": "--batch-size", "epochs": "--epochs",
         "time_budget": "--time-budget", "val_fraction": "--val-fraction", "tile_scale": "--tile-scale",
         "tiles_per_image": "--tiles-per-image", "schedule": "--schedule", "precision": "--precision",
         "augment": "--augment", "masks": "--masks", "aggregate": "--aggregate", "model": "--model",
         "optimizer": "--optimizer", "device": "--device"}
"""The command line's flag of each TrainConfig field that has one: errors name both, for notebooks and shells."""


def _named(field: str) -> str:
    """How an error names a field: 'image_size (--size)', or the field alone when no flag sets it."""
    return f"{field} ({FLAGS[field]})" if field in FLAGS else field


def choices_of() -> dict[str, tuple[str, ...]]:
    """The valid values of every string option of TrainConfig but `device` (the CLI's and notebooks' lists)."""
    return {
        "model": ("auto", *models.names()),
        "norm": ("auto", *NORMS),
        "optimizer": ("auto", "sgd", "adamw"),
        "schedule": SCHEDULES,
        "class_weights": ("auto", "none", "balanced", "sqrt"),
        "augment": (ADAPTIVE, *PRESETS),
        "strength": ("auto", *STRENGTHS),
        "fit": FITS,
        "precision": ("auto", *PRECISIONS),
        "masks": MASK_MODES,
        "aggregate": AGGREGATES,
    }
