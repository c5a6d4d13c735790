"""What one run trains with: the Trainer (built once from data and config), its State, and saving both.

    t = build_trainer(data, config, run_dir, ctx, resuming=False)
    save_last(t, state)          # RUN/last.pt: everything a resume needs
    restore(t, state, saved)     # ... and back

The Trainer holds the objects (model, optimizer, transforms, clock); the State holds the numbers
that change (epoch, step, history, best); last.pt holds both, so a resume continues exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

import kitlib
from kitlib import augment, checkpoint, models, rundir, runtime
from kitlib.data.dataset import TrainingData
from kitlib.rundir import Normalization
from kitlib.train import distributed
from kitlib.train.config import TrainConfig
from kitlib.train.ema import EMA
from kitlib.train.recipe import (ADAPTIVE_EPOCHS, Phase, adaptive_augment, build_optimizer, class_weight, phases,
                                 resolve)
from kitlib.train.schedules import Clock, Plateau


@dataclass
class State:
    """The mutable part of a run; all of it goes into last.pt, so a resume continues exactly."""

    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Batches trained so far (all epochs)."""
    batch: int = 0
    """Batches done within the current epoch (for a resume from a mid-epoch checkpoint)."""
    phase: str = ""
    """Name of the phase the model is set up for."""
    history: list = field(default_factory=list)
    """One metrics row per finished epoch."""
    best: dict | None = None
    """The metrics row of the best epoch."""
    stale: int = 0
    """Epochs since the best one (early stopping)."""
    plateau: Plateau = field(default_factory=Plateau)
    losses: list = field(default_factory=list)
    """Training losses of the current epoch so far."""
    images_per_s: float = 0.0
    """Training throughput of the last epoch (all processes)."""
    joined: bool = False
    """Whether the validation samples have joined the training set (config.join_at)."""
    estimate: dict | None = None
    """The validation scores of the last epoch before they joined: the run's honest estimate."""
    augment: str | None = None
    """The preset augment='adaptive' chose during a time-budget run (None: not yet, or not adaptive)."""
    trajectory: torch.Tensor | None = None
    """(N, K) float32, N = every sample: the sum of each sample's training probabilities (softmax of the
    batch's logits) over the first cycle, for config.label_evidence (kitlib.train.loop.trace_labels)."""
    margins: torch.Tensor | None = None
    """(N,) float32: the sum of each sample's training margins over the first cycle (same steps)."""
    visits: torch.Tensor | None = None
    """(N,) float32: how many training steps each row of `trajectory` and `margins` sums."""
    held_out: torch.Tensor | None = None
    """(N_val, K) float32: the sum of the validation probabilities of the first cycle's later epochs."""
    held_out_epochs: int = 0
    """How many epochs `held_out` sums."""


@dataclass
class Trainer:
    """The objects one run trains with (built once by `build_trainer`)."""

    config: TrainConfig
    """The resolved config (no 'auto' left)."""
    data: TrainingData
    model: torch.nn.Module
    """The model as built (saved in checkpoints)."""
    net: torch.nn.Module
    """What the loop calls: `model`, compiled and/or wrapped in DDP."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    train_tf: augment.TrainTransform
    eval_tf: augment.EvalTransform | augment.MaskEvalTransform
    """uint8 batches (B, 3, h, w), or (B, 4, h, w) with the mask as channel 3 -> the model's float input."""
    loss_weight: torch.Tensor | None
    images: torch.Tensor
    """The uint8 images where batches are gathered: on the GPU when they fit, else in host memory
    (tiles are cut on the CPU from data.tiles instead)."""
    masks: torch.Tensor | None
    """The uint8 masks beside `images` when the model sees them as a channel, else None."""
    device: torch.device
    ctx: distributed.Context
    clock: Clock
    phases: list[Phase]
    run_dir: Path
    spec: dict
    """models.create arguments, so the model can be rebuilt from a checkpoint."""
    normalization: Normalization
    join: float | None = None
    """Progress (0..1) at which the validation samples join the training set; None: never."""
    last_save: float = field(default_factory=time.perf_counter)


def build_trainer(data: TrainingData, config: TrainConfig, run_dir: Path, ctx: distributed.Context, *,
                  resuming: bool, started: float | None = None) -> Trainer:
    """Resolve the config on this data and device, then build model, transforms, optimizer and clock."""
    device = ctx.device or runtime.pick_device(config.device)
    config = resolve(config, data, device)
    runtime.seed_everything(config.seed)
    k = len(data.classes)
    channels = 4 if data.mask_mode == "channel" else 3
    spec = {"name": config.model, "num_classes": k, "norm": config.norm, "options": dict(config.model_options),
            "in_channels": channels}
    # a resumed run overwrites every weight from last.pt: no need to fetch the pretrained file again
    model = models.create(config.model, k, pretrained=config.pretrained and not resuming,
                          weights=None if resuming else config.weights, norm=config.norm, in_channels=channels,
                          **config.model_options)
    pixels = data.tiles.sample_tensor() if data.tiles is not None else data.images  # what the model sees
    stats = models.normalization(config.model, config.pretrained) or augment.image_stats(pixels)
    size = (config.image_size, config.image_size)
    normalization = Normalization(stats[0], stats[1], size, data.size, data.fit,
                                  tiles=data.tiles.spec.to_dict() if data.tiles is not None else None,
                                  aggregate=config.aggregate, mask_channel=channels == 4)
    eval_tf = augment.eval_transform(size=size, mean=stats[0], std=stats[1])
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    net = torch.compile(model) if config.compile else model
    net = ctx.wrap(net)
    total, join = planned_steps(data, config, ctx.world)
    return Trainer(
        config=config, data=data, model=model, net=net, optimizer=build_optimizer(config, model),
        scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
        ema=EMA(model, config.ema) if config.ema else None,
        train_tf=augment.train_transform(config.augment, size=size, mean=stats[0], std=stats[1], num_classes=k),
        eval_tf=augment.MaskEvalTransform(eval_tf) if channels == 4 else eval_tf,
        loss_weight=_on(class_weight(data.class_counts(), config.class_weights), device),
        images=data.images if data.tiles is not None else _store(data.images, device),
        masks=_store(data.masks, device) if channels == 4 else None, device=device, ctx=ctx,
        clock=Clock(total_steps=total, budget=config.time_budget, started=started or time.perf_counter()),
        phases=phases(config, join), run_dir=run_dir, spec=spec, normalization=normalization, join=join)


def planned_steps(data: TrainingData, config: TrainConfig, world: int) -> tuple[int, float | None]:
    """(optimizer steps planned in epochs mode, progress at which the validation samples join or None).

    A process trains its shard of the examples in batches of its share of batch_size. By epochs, the
    validation samples join after round(join_at x epochs) epochs (at least one before, one after);
    under a time budget, at join_at of the budget.
    """
    def per_epoch(samples: torch.Tensor) -> int:
        examples = len(data.tiles.tiles_of(samples)) if data.tiles is not None else len(samples)
        return math.ceil(math.ceil(examples / world) / (config.batch_size // world))

    epochs = config.epochs or 1
    if not config.join_at or config.join_at >= 1.0 or len(data.val_index) == 0:
        return epochs * per_epoch(data.train_index), None
    if config.time_budget is not None:
        return epochs * per_epoch(data.train_index), config.join_at
    if epochs < 2:
        return epochs * per_epoch(data.train_index), None
    before = min(max(round(config.join_at * epochs), 1), epochs - 1)
    first = before * per_epoch(data.train_index)
    total = first + (epochs - before) * per_epoch(torch.cat([data.train_index, data.val_index]))
    return total, first / total


def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def _store(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images where batches are gathered: on the GPU when they take under a third of its free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() < free / 3:
            return images.to(device)
        return images.pin_memory() if images.is_contiguous() else images
    return images


def choose_augment(t: Trainer, state: State) -> None:
    """augment='adaptive' under a time budget: the epochs the budget holds decide (recipe.adaptive_augment),
    once recipe.ADAPTIVE_DECIDE_AT of it has passed (light's ops until then, as a gentle start).

    The estimate: the epochs done, plus the seconds left at the pace of the epochs since the first (the
    first pays one-off costs: on the rehearsal competition it ran at a third of the later pace), that pace
    scaled from those epochs' mean input side to the full one (progressive resizing: linear in the side,
    about right on CIFAR-10 and Tiny ImageNet at 32 and 64 px; conservative, as the remaining epochs are not
    all at the full side). The ops switch from light's to the choice's."""
    rows = state.history[1:] or state.history
    span = rows[-1]["seconds"] - (state.history[0]["seconds"] if len(state.history) > 1 else 0.0)
    side = sum(r["train_size"] for r in rows) / len(rows)
    full_epoch = max(span, 1e-9) / len(rows) * t.config.image_size / side  # seconds of an epoch at full size
    expected = len(state.history) + max(t.clock.remaining(), 0.0) / full_epoch
    state.augment = adaptive_augment(expected)
    use_augment(t, state.augment)
    if t.ctx.is_main:
        print(f"augment: adaptive chose {state.augment}: ~{expected:.0f} epochs fit the budget at the pace of "
              f"epochs {rows[0]['epoch']}-{rows[-1]['epoch']} (medium from {ADAPTIVE_EPOCHS} up, light below)")


def use_augment(t: Trainer, preset: str) -> None:
    """Train with `preset`'s ops from now on."""
    t.train_tf = replace(t.train_tf, ops=augment.resolve_ops(preset))


def train_transform_at(t: Trainer, side: int) -> augment.TrainTransform:
    """The train transform with output side `side` px (progressive resizing); `t.train_tf` at the full size."""
    return t.train_tf if side == t.train_tf.size[0] else replace(t.train_tf, size=(side, side))


def phase_at(trainer: Trainer, progress: float, joined: bool = False) -> Phase:
    """The phase that `progress` falls in; 'joined' only once the validation samples have joined (until
    then the first cycle's last phase holds, at its final learning rate)."""
    if trainer.join is not None:
        return trainer.phases[-1] if joined else next(p for p in trainer.phases[:-1]
                                                      if progress < p.end or p is trainer.phases[-2])
    return next(p for p in trainer.phases if progress < p.end or p is trainer.phases[-1])


# --------------------------------------------------------------------------------------------- examples

def training_samples(t: Trainer, joined: bool) -> torch.Tensor:
    """The samples trained on: data.train_index, followed by data.val_index once they have joined."""
    return torch.cat([t.data.train_index, t.data.val_index]) if joined else t.data.train_index


def batch_order(trainer: Trainer, epoch: int, joined: bool = False) -> torch.Tensor:
    """This process's training examples for `epoch`, permuted by (seed, epoch) and sharded over processes:
    rows of the training samples (the validation ones too once `joined`), or the fixed-tile rows of those
    samples (each a random window then)."""
    data = trainer.data
    samples = training_samples(trainer, joined)
    rows = samples if data.tiles is None else data.tiles.tiles_of(samples)
    generator = torch.Generator().manual_seed(trainer.config.seed * 1000003 + epoch)
    order = rows[torch.randperm(len(rows), generator=generator)]
    return order[trainer.ctx.rank::trainer.ctx.world]


def train_batch(t: Trainer, rows: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(uint8 (B, 3, h, w) images, (B,) int64 labels, uint8 (B, 1, h, w) masks or None) on the device.

    Tiles are windows drawn at random inside their image's mask (seeded by (seed, rank, step), so a
    resume draws the same ones); index_select, not images[rows]: ~20x faster on a uint8 tensor.
    """
    data = t.data
    if data.tiles is not None:
        generator = torch.Generator().manual_seed(t.config.seed * 7919 + t.ctx.rank * 104729 + step + 1)
        images = data.tiles.draw(rows, generator).to(t.device, non_blocking=True)
        return images, data.targets[data.tiles.tile_sample[rows]].to(t.device, non_blocking=True), None
    images = t.images.index_select(0, rows.to(t.images.device)).to(t.device, non_blocking=True)
    masks = None if t.masks is None else t.masks.index_select(0, rows.to(t.masks.device)).to(t.device)
    return images, data.targets[rows].to(t.device, non_blocking=True), masks


def eval_batches(t: Trainer, samples: torch.Tensor, batch_size: int):
    """uint8 batches for the eval transform, in order: the samples' images (with the mask as channel 3 when
    the model sees it), or their fixed tiles, image by image (Tiles.owned says whose)."""
    data = t.data
    if data.tiles is not None:
        rows = data.tiles.tiles_of(samples)
        for start in range(0, len(rows), batch_size):
            yield data.tiles.cut(rows[start:start + batch_size])
        return
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size].to(t.images.device)
        images = t.images.index_select(0, chunk)
        yield images if t.masks is None else torch.cat([images, t.masks.index_select(0, chunk)], 1)


# --------------------------------------------------------------------------------------------- saving

def config_record(t: Trainer) -> dict:
    """What RUN/config.json holds: the resolved config, the model spec, the normalization, counts, versions."""
    return {**asdict(t.config), "model_spec": t.spec, "normalization": t.normalization.to_dict(),
            "classes": len(t.data.classes), "train_samples": len(t.data.train_index),
            "val_samples": len(t.data.val_index), "masks_reason": t.data.mask_reason,
            "tiles": None if t.data.tiles is None else {**t.data.tiles.spec.to_dict(), "count": len(t.data.tiles),
                                                        "fallbacks": len(t.data.tiles.fallbacks())},
            "kit_version": kitlib.__version__,
            "git_commit": checkpoint.git_commit()}


def payload(t: Trainer, state: State, model: torch.nn.Module, metrics: dict | None) -> dict:
    """A checkpoint of `model` (format in kitlib.checkpoint) at the state's epoch and step."""
    return {"config": asdict(t.config), "model": t.spec, "classes": t.data.classes,
            "normalization": t.normalization.to_dict(), "epoch": state.epoch, "step": state.step,
            "metrics": metrics or {}, "state_dict": model.state_dict()}


def save_best(t: Trainer, state: State, model: torch.nn.Module) -> None:
    """Write RUN/best.pt: the inference weights of the best epoch (main process only)."""
    if t.ctx.is_main:
        checkpoint.save(payload(t, state, model, state.best), t.run_dir / rundir.BEST)


def save_last(t: Trainer, state: State) -> None:
    """Write RUN/last.pt: everything a resume needs (main process only)."""
    if t.ctx.is_main:
        started = time.perf_counter()
        saved = payload(t, state, t.ema.module if t.ema else t.model, state.history[-1] if state.history else None)
        saved["train_state"] = {
            "model": t.model.state_dict(), "ema": t.ema.state_dict() if t.ema else None,
            "optimizer": t.optimizer.state_dict(), "scaler": t.scaler.state_dict(),
            "state": {k: v for k, v in vars(state).items()}, "elapsed": t.clock.seconds(),
            "reserve": t.clock.reserve, "rng": checkpoint.rng_state()}
        checkpoint.save(saved, t.run_dir / rundir.LAST)
        t.clock.keep(2 * (time.perf_counter() - started) + 2)
    t.last_save = time.perf_counter()


def load_last(run_dir: Path) -> dict | None:
    """RUN/last.pt to resume from, or None when the run has none yet."""
    path = Path(run_dir) / rundir.LAST
    return checkpoint.load(path) if path.exists() else None


def restore(t: Trainer, state: State, saved: dict) -> None:
    """Load last.pt's training state into the trainer and `state`."""
    train_state = saved["train_state"]
    t.model.load_state_dict(train_state["model"])
    if t.ema is not None and train_state["ema"] is not None:
        t.ema.load_state_dict(train_state["ema"])
    t.optimizer.load_state_dict(train_state["optimizer"])
    t.scaler.load_state_dict(train_state["scaler"])
    vars(state).update(train_state["state"])
    if state.augment is not None:  # an adaptive choice made before the interruption
        use_augment(t, state.augment)
    state.phase = ""  # re-apply the phase's freezing to the rebuilt model
    t.clock.elapsed = train_state["elapsed"]
    # the measured reserve too: a run that stopped because fewer seconds than it remained stays stopped
    t.clock.keep(train_state.get("reserve", 0.0))  # .get: checkpoints written before it was saved
    checkpoint.set_rng_state(train_state["rng"])
    for name in ("trajectory", "margins", "visits", "held_out"):  # the label evidence: on the device it is added on
        if getattr(state, name) is not None:
            setattr(state, name, getattr(state, name).to(t.device))
