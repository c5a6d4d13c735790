"""`fit`: one training loop for CUDA, MPS and CPU, with a time budget, checkpoints and resume.

    data = dataset.prepare(load_competition("data/my-challenge"))
    result = fit(data, TrainConfig(time_budget=600), "runs/first")

The loop is `run_epoch`; everything around it (precision, EMA, schedules, checkpoints, logbook)
is a small function or module of its own. Validation uses the deterministic eval transform only:
the train transform is never handed to validation.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import kitlib
from kitlib import augment, checkpoint, distributed, logbook, metrics, models, recipe, runtime
from kitlib.dataset import TrainingData
from kitlib.ema import EMA
from kitlib.recipe import (Phase, TrainConfig, build_optimizer, class_weight, enter_phase, phases, resolve,
                           set_lr, strength)
from kitlib.schedules import Clock, Plateau


@dataclass(frozen=True)
class FitResult:
    """What a finished run reports."""

    run_dir: Path
    best: dict
    """Validation metrics of the best epoch (the one saved as best.pt)."""
    history: list[dict]
    seconds: float


# --------------------------------------------------------------------------------------------- the loss

def sample_losses(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0,
                  class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) cross-entropy of (B, K) logits against (B, K) soft or (B,) hard targets: the one place it is computed."""
    if targets.dim() == 1:
        targets = F.one_hot(targets, logits.shape[1]).float()
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / logits.shape[1]
    if class_weight is not None:
        targets = targets * class_weight
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


# --------------------------------------------------------------------------------------------- the loop

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


@dataclass
class Trainer:
    """The objects one run trains with (built once by `fit`)."""

    config: TrainConfig
    data: TrainingData
    model: torch.nn.Module
    """The model as built (saved in checkpoints)."""
    net: torch.nn.Module
    """What the loop calls: `model`, compiled and/or wrapped in DDP."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    train_tf: augment.TrainTransform
    eval_tf: augment.EvalTransform
    loss_weight: torch.Tensor | None
    images: torch.Tensor
    """The uint8 images where batches are gathered: on the GPU when they fit, else in host memory."""
    device: torch.device
    ctx: distributed.Context
    clock: Clock
    phases: list[Phase]
    run_dir: Path
    spec: dict
    """models.create arguments, so the model can be rebuilt from a checkpoint."""
    normalization: dict
    reserve: float = 5.0
    """Seconds kept at the end of a time budget for validation and saving (measured as we go)."""
    last_save: float = field(default_factory=time.perf_counter)


def phase_at(trainer: Trainer, progress: float) -> Phase:
    """The phase that `progress` falls in."""
    return next(p for p in trainer.phases if progress < p.end or p is trainer.phases[-1])


def batch_order(trainer: Trainer, epoch: int) -> torch.Tensor:
    """This process's training rows for `epoch`: a permutation seeded by (seed, epoch), sharded over processes."""
    generator = torch.Generator().manual_seed(trainer.config.seed * 1000003 + epoch)
    order = trainer.data.train_index[torch.randperm(len(trainer.data.train_index), generator=generator)]
    return order[trainer.ctx.rank::trainer.ctx.world]


def train_step(trainer: Trainer, state: State, rows: torch.Tensor, progress: float) -> float:
    """One batch: augment on the device, forward, backward, and (every grad_accum batches) an optimizer step."""
    t, config = trainer, trainer.config
    # index_select, not images[rows]: ~20x faster on a uint8 tensor
    images = t.images.index_select(0, rows.to(t.images.device)).to(t.device, non_blocking=True)  # (B, 3, h, w)
    labels = t.data.targets[rows].to(t.device, non_blocking=True)
    # per-batch generator from (seed, rank, step): augmentation is reproducible and resumable
    generator = torch.Generator(t.device).manual_seed(config.seed * 7919 + t.ctx.rank * 104729 + state.step)
    batch = t.train_tf(images, labels, strength=strength(config, progress), generator=generator)
    x = batch.images.contiguous(memory_format=torch.channels_last) if config.channels_last else batch.images
    with runtime.autocast(t.device, config.precision):
        logits = t.net(x)
    loss = sample_losses(logits, batch.targets, label_smoothing=config.label_smoothing,
                         class_weight=t.loss_weight).mean()
    t.scaler.scale(loss / config.grad_accum).backward()
    if (state.step + 1) % config.grad_accum == 0:
        if config.clip_grad:
            t.scaler.unscale_(t.optimizer)
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), config.clip_grad)
        t.scaler.step(t.optimizer)
        t.scaler.update()
        t.optimizer.zero_grad(set_to_none=True)
        if t.ema is not None:
            t.ema.update(t.model)
    return loss.item()


def run_epoch(trainer: Trainer, state: State) -> bool:
    """Train one epoch (from where a resume left it); return True when the time budget says stop."""
    t, config = trainer, trainer.config
    order = batch_order(t, state.epoch)
    size = config.batch_size // t.ctx.world
    batches = math.ceil(len(order) / size)
    bar = tqdm(total=batches, initial=state.batch, desc=f"epoch {state.epoch + 1}", unit="batch",
               disable=not (config.progress and t.ctx.is_main), leave=False)
    t.net.train()
    stop, started, seen = False, time.perf_counter(), 0
    for i in range(state.batch, batches):
        progress = t.clock.progress(state.step)
        phase = phase_at(t, progress)
        if phase.name != state.phase:
            enter_phase(t.model, phase, small_batch=config.batch_size < 16)
            state.phase = phase.name
        lr = set_lr(t.optimizer, config, phase, progress, state.plateau.scale)
        rows = order[i * size:(i + 1) * size]
        state.losses.append(train_step(t, state, rows, progress))
        state.step, state.batch, seen = state.step + 1, i + 1, seen + len(rows)
        bar.update()
        bar.set_postfix(loss=f"{np.mean(state.losses[-20:]):.3f}", lr=f"{lr:.2g}",
                        img_s=f"{seen * t.ctx.world / (time.perf_counter() - started):.0f}")
        if time.perf_counter() - t.last_save > 60 * config.checkpoint_minutes and i + 1 < batches:
            save_last(t, state)
        stop = t.ctx.any(t.clock.remaining() < t.reserve)  # every process stops at the same batch
        if stop:
            break
    bar.close()
    state.images_per_s = seen * t.ctx.world / max(time.perf_counter() - started, 1e-9)
    return stop


# --------------------------------------------------------------------------------------------- validation

@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, rows: torch.Tensor,
                  transform: augment.EvalTransform, *, device: torch.device, precision: str = "fp32",
                  batch_size: int = 256, channels_last: bool = True) -> torch.Tensor:
    """(N, K) float32 softmax probabilities of `images[rows]` through the eval transform, on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = images.index_select(0, rows[start:start + batch_size].to(images.device)).to(device, non_blocking=True)
        x = transform(batch)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(device, precision):
            out.append(model(x).float().softmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def validate(trainer: Trainer, model: torch.nn.Module) -> tuple[dict, torch.Tensor]:
    """Loss, accuracy, macro-F1 and per-class F1 on the validation rows; and the (N_val, K) probabilities."""
    t = trainer
    rows = t.data.val_index
    if len(rows) == 0:
        return {"val_loss": math.nan, "val_accuracy": math.nan, "val_macro_f1": math.nan}, torch.zeros(0, 0)
    probs = predict_probs(model, t.images, rows, t.eval_tf, device=t.device, precision=t.config.precision,
                          batch_size=2 * t.config.batch_size, channels_last=t.config.channels_last)
    truth = t.data.targets[rows]
    k = len(t.data.classes)
    conf = metrics.confusion(truth, probs, k)
    return {
        "val_loss": float(sample_losses(probs.clamp_min(1e-12).log(), truth).mean()),
        "val_accuracy": metrics.accuracy(truth, probs),
        "val_macro_f1": metrics.macro_f1(truth, probs, k),
        "per_class_f1": [round(float(f), 5) for f in metrics.per_class_prf(conf)["f1"]],
    }, probs


# --------------------------------------------------------------------------------------------- checkpoints

def _payload(t: Trainer, state: State, model: torch.nn.Module, row: dict | None) -> dict:
    return {"config": asdict(t.config), "model": t.spec, "classes": t.data.classes,
            "normalization": t.normalization, "epoch": state.epoch, "step": state.step,
            "metrics": row or {}, "state_dict": model.state_dict()}


def save_last(t: Trainer, state: State) -> None:
    """Write RUN/last.pt: everything a resume needs (main process only)."""
    if t.ctx.is_main:
        started = time.perf_counter()
        payload = _payload(t, state, t.ema.module if t.ema else t.model, state.history[-1] if state.history else None)
        payload["train_state"] = {
            "model": t.model.state_dict(), "ema": t.ema.state_dict() if t.ema else None,
            "optimizer": t.optimizer.state_dict(), "scaler": t.scaler.state_dict(),
            "state": {k: v for k, v in vars(state).items()}, "elapsed": t.clock.seconds(),
            "rng": checkpoint.rng_state()}
        checkpoint.save(payload, t.run_dir / "last.pt")
        t.reserve = max(t.reserve, 2 * (time.perf_counter() - started) + 2)
    t.last_save = time.perf_counter()


def restore(t: Trainer, state: State, saved: dict) -> None:
    """Load last.pt's training state into the trainer and `state`."""
    train_state = saved["train_state"]
    t.model.load_state_dict(train_state["model"])
    if t.ema is not None and train_state["ema"] is not None:
        t.ema.load_state_dict(train_state["ema"])
    t.optimizer.load_state_dict(train_state["optimizer"])
    t.scaler.load_state_dict(train_state["scaler"])
    vars(state).update(train_state["state"])
    state.phase = ""  # re-apply the phase's freezing to the rebuilt model
    t.clock.elapsed = train_state["elapsed"]
    checkpoint.set_rng_state(train_state["rng"])


# --------------------------------------------------------------------------------------------- fit

def _setup(data: TrainingData, config: TrainConfig, run_dir: Path, ctx: distributed.Context,
           resuming: bool, started: float | None = None) -> Trainer:
    """Build model, transforms, optimizer and clock for a run."""
    device = ctx.device or runtime.pick_device(config.device)
    config = resolve(config, data, device)
    runtime.seed_everything(config.seed)
    k = len(data.classes)
    spec = {"name": config.model, "num_classes": k, "norm": config.norm, "options": dict(config.model_options)}
    # a resumed run overwrites every weight from last.pt: no need to fetch the pretrained file again
    model = models.create(config.model, k, pretrained=config.pretrained and not resuming,
                          weights=None if resuming else config.weights, norm=config.norm, **config.model_options)
    stats = models.normalization(config.model, config.pretrained) or augment.image_stats(data.images)
    size = (config.image_size, config.image_size)
    normalization = {"mean": list(stats[0]), "std": list(stats[1]), "size": list(size),
                     "cache_size": list(data.size), "fit": data.fit}
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    net = torch.compile(model) if config.compile else model
    net = ctx.wrap(net)
    # batches per epoch of one process: its shard of the rows, in batches of its share of batch_size
    per_epoch = math.ceil(math.ceil(len(data.train_index) / ctx.world) / (config.batch_size // ctx.world))
    return Trainer(
        config=config, data=data, model=model, net=net, optimizer=build_optimizer(config, model),
        scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
        ema=EMA(model, config.ema) if config.ema else None,
        train_tf=augment.train_transform(config.augment, size=size, mean=stats[0], std=stats[1], num_classes=k),
        eval_tf=augment.eval_transform(size=size, mean=stats[0], std=stats[1]),
        loss_weight=_on(class_weight(data.class_counts(), config.class_weights), device),
        images=_store(data.images, device), device=device, ctx=ctx,
        clock=Clock(total_steps=(config.epochs or 1) * per_epoch, budget=config.time_budget,
                    started=started or time.perf_counter()),
        phases=phases(config), run_dir=run_dir, spec=spec, normalization=normalization)


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


def fit(data: TrainingData, config: TrainConfig = TrainConfig(), out: str | Path = "runs/run", *,
        resume: bool = False) -> FitResult:
    """Train a model on `data` into the run folder `out`; `resume=True` continues from out/last.pt."""
    started = time.perf_counter()
    ctx = distributed.setup()
    runtime.set_threads(config.threads)
    run_dir = Path(out)
    saved = checkpoint.load(run_dir / "last.pt") if resume and (run_dir / "last.pt").exists() else None
    if saved is not None:  # the run's own recipe; only its length (epochs or time budget) may change
        recipe = dict(saved["config"], progress=config.progress, images_dir=config.images_dir)
        if config.epochs is not None or config.time_budget is not None:
            recipe.update(epochs=config.epochs, time_budget=config.time_budget)
        config = TrainConfig(**recipe)
    t = _setup(data, config, run_dir, ctx, resuming=saved is not None, started=started)
    state = State()
    if saved is not None:
        restore(t, state, saved)
        print(f"resumed {run_dir} at epoch {state.epoch + 1}, batch {state.batch} ({t.clock.elapsed:.0f} s trained)")
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {**asdict(t.config), "model_spec": t.spec, "normalization": t.normalization,
             "classes": len(data.classes), "train_samples": len(data.train_index),
             "val_samples": len(data.val_index), "kit_version": kitlib.__version__,
             "git_commit": checkpoint.git_commit()}, indent=1))
    board = logbook.TensorBoard(run_dir) if ctx.is_main else None
    # a resumed run whose budget is spent (or that stopped early) has nothing left to train
    finished = saved is not None and (t.clock.remaining() < t.reserve or _stale(t.config, state))
    while state.epoch < (t.config.epochs or 10**9) and not finished:
        stopped = run_epoch(t, state)
        end_epoch(t, state, board)
        finished = stopped or t.clock.remaining() < t.reserve or _stale(t.config, state)
    if board is not None:
        board.close()
    if ctx.is_main:
        finish(t, state)
    ctx.barrier()
    return FitResult(run_dir, state.best or {}, state.history, time.perf_counter() - started)


def _stale(config: TrainConfig, state: State) -> bool:
    return config.early_stopping is not None and state.stale >= config.early_stopping


def end_epoch(t: Trainer, state: State, board) -> None:
    """Validate, log, and save last.pt (and best.pt when the epoch is the best so far)."""
    started = time.perf_counter()
    model = t.ema.module if t.ema else t.model
    scores, _ = validate(t, model)
    progress = t.clock.progress(state.step)
    row = {"epoch": state.epoch + 1, "phase": state.phase, "step": state.step, "seconds": round(t.clock.seconds(), 2),
           "lr": t.optimizer.param_groups[-1]["lr"], "strength": round(strength(t.config, progress), 4),
           "train_loss": float(np.mean(state.losses)) if state.losses else math.nan,
           "train_images_per_s": round(state.images_per_s, 1), **scores}
    state.history.append(row)
    state.epoch, state.batch, state.losses = state.epoch + 1, 0, []
    score = row["val_macro_f1"]
    better = state.best is None or math.isnan(score) or score > state.best["val_macro_f1"]
    state.stale = 0 if better else state.stale + 1
    if t.config.schedule == "plateau" and not math.isnan(score):
        state.plateau.update(score)
    if better:
        state.best = {k: v for k, v in row.items() if k != "per_class_f1"}
    if t.ctx.is_main:
        logbook.write_metrics(t.run_dir, state.history, classes=t.data.classes)
        board.log(row)
        if better:
            checkpoint.save(_payload(t, state, model, state.best), t.run_dir / "best.pt")
        print(_summary(row, t.data.classes, better))
    save_last(t, state)
    t.reserve = max(t.reserve, 1.5 * (time.perf_counter() - started) + 2)


def _summary(row: dict, classes: list[str], better: bool) -> str:
    text = (f"epoch {row['epoch']:>3} [{row['phase']}] {row['seconds']:7.0f} s  lr {row['lr']:.2g}  "
            f"train loss {row['train_loss']:.4f}  {row['train_images_per_s']:.0f} img/s")
    if not math.isnan(row["val_loss"]):
        text += (f"  | val loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.4f}  "
                 f"macro-F1 {row['val_macro_f1']:.4f}" + ("  *best" if better else ""))
    return text


def finish(t: Trainer, state: State) -> None:
    """Write the best model's validation predictions and the curves."""
    best, _ = checkpoint.load_model(t.run_dir / "best.pt", t.device)
    _, probs = validate(t, best)
    if len(probs):
        np.save(t.run_dir / "val_probs.npy", probs.numpy().astype(np.float32))
        rows = t.data.val_index.numpy()
        pd.DataFrame({"sample_index": [t.data.ids[i] for i in rows],
                      "label": [t.data.classes[int(t.data.targets[i])] for i in rows]}).to_csv(
            t.run_dir / "val.csv", index=False)
    title = f"{t.config.model} on {len(t.data.classes)} classes"
    logbook.plot_curves(t.run_dir, title=title, images_dir=t.config.images_dir)
    best_row = state.best or {}
    print(f"best epoch {best_row.get('epoch')}: val macro-F1 {best_row.get('val_macro_f1', math.nan):.4f}; "
          f"run saved in {t.run_dir} (best.pt, last.pt, metrics.csv, curves.png)")


def prepare_for(competition, config: TrainConfig, *, decisions: str | Path | None = None) -> TrainingData:
    """The TrainingData `config` asks for: decoded at its size, decisions applied, split as it says."""
    from kitlib.cache import common_size
    from kitlib.data import load_competition
    from kitlib.dataset import prepare

    if not hasattr(competition, "samples"):
        competition = load_competition(competition)
    size = config.decode_size
    if not size:
        common = common_size(competition.samples["image"])
        size = recipe.decode_size(config, common, runtime.pick_device(config.device).type)
        if size != common:
            print(f"decoding at {size[1]}x{size[0]} px (most images are {common[1]}x{common[0]}); "
                  "set decode_size (--decode-size) to choose")
    return prepare(competition, size=size, fit=config.fit, val_fraction=config.val_fraction,
                   folds=config.folds, fold=config.fold, seed=config.seed, decisions=decisions,
                   progress=config.progress)


def train(competition, config: TrainConfig = TrainConfig(), out: str | Path = "runs/run", *,
          decisions: str | Path | None = None, resume: bool = False) -> FitResult:
    """Prepare a competition (a Competition or its folder) as `config` says, then `fit` it."""
    return fit(prepare_for(competition, config, decisions=decisions), config, out, resume=resume)
