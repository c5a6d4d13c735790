"""`fit`: one training loop for CUDA, MPS and CPU, with a time budget, checkpoints and resume.

    data = prepare_for(load_competition("data/my-challenge"), config)
    result = fit(data, TrainConfig(time_budget=600), "runs/first")

The loop is `run_epoch` around `train_step`; what it trains with is built once by
kitlib.train.trainer, and everything around it (precision, EMA, schedules, checkpoints, the
logbook) is a small function or module of its own. Validation uses the deterministic eval
transform only: the train transform is never handed to validation.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kitlib import checkpoint, logbook, metrics, rundir, runtime
from kitlib.augment import ADAPTIVE, mask_channel
from kitlib.data.dataset import TrainingData, prepare_for
from kitlib.data.tiles import aggregate
from kitlib.models.infer import probabilities
from kitlib.progress import progress_bar
from kitlib.train import distributed
from kitlib.train.config import TrainConfig
from kitlib.train.loss import probability_losses, sample_losses
from kitlib.train.recipe import ADAPTIVE_DECIDE_AT, enter_phase, set_lr, strength, train_size
from kitlib.train.trainer import (State, Trainer, batch_order, build_trainer, choose_augment, config_record,
                                  eval_batches, load_last, phase_at, restore, save_best, save_last, train_batch,
                                  train_transform_at)


@dataclass(frozen=True)
class FitResult:
    """What a finished run reports."""

    run_dir: Path
    best: dict
    """Validation metrics of the best epoch (the one saved as best.pt)."""
    history: list[dict]
    seconds: float


# --------------------------------------------------------------------------------------------- the loop

def train_step(trainer: Trainer, state: State, rows: torch.Tensor, progress: float) -> float:
    """One batch: augment on the device, forward, backward, and (every grad_accum batches) an optimizer step."""
    t, config = trainer, trainer.config
    images, labels, masks = train_batch(t, rows, state.step)  # (B, 3, h, w) uint8, (B,), (B, 1, h, w) or None
    # per-batch generator from (seed, rank, step): augmentation is reproducible and resumable
    generator = torch.Generator(t.device).manual_seed(config.seed * 7919 + t.ctx.rank * 104729 + state.step)
    transform = train_transform_at(t, train_size(config, progress))  # smaller early on: progressive resizing
    batch = transform(images, labels, masks, strength=strength(config, progress), generator=generator)
    x = batch.images if masks is None else torch.cat([batch.images, mask_channel(batch.masks)], 1)
    x = x.contiguous(memory_format=torch.channels_last) if config.channels_last else x
    with runtime.autocast(t.device, config.precision):
        logits = t.net(x)
    if config.label_evidence and t.join is not None and not state.joined:
        trace_labels(t, state, rows, logits, labels)
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
    """Train one epoch (from where a resume left it); return True when the time budget says stop. The
    epoch also ends early where the first cycle does (config.join_at), so that it is validated there."""
    t, config = trainer, trainer.config
    order = batch_order(t, state.epoch, state.joined)
    size = config.batch_size // t.ctx.world
    batches = math.ceil(len(order) / size)
    bar = progress_bar(total=batches, initial=state.batch, desc=f"epoch {state.epoch + 1}", unit="batch",
                       disable=not (config.progress and t.ctx.is_main), leave=False)
    t.net.train()
    stop, started, seen = False, time.perf_counter(), 0
    for i in range(state.batch, batches):
        progress = t.clock.progress(state.step)
        phase = phase_at(t, progress, state.joined)
        if phase.name != state.phase:
            enter_phase(t.model, phase, small_batch=config.batch_size < 16)
            state.phase = phase.name
        lr = set_lr(t.optimizer, config, phase, progress, state.plateau.scale)
        rows = order[i * size:(i + 1) * size]
        state.losses.append(train_step(t, state, rows, progress))
        state.step, state.batch, seen = state.step + 1, i + 1, seen + len(rows)
        bar.set_postfix(loss=f"{np.mean(state.losses[-20:]):.3f}", lr=f"{lr:.2g}", refresh=False,  # update() draws
                        img_s=f"{seen * t.ctx.world / (time.perf_counter() - started):.0f}")
        bar.update()
        if time.perf_counter() - t.last_save > 60 * config.checkpoint_minutes and i + 1 < batches:
            save_last(t, state)
        stop = t.ctx.any(t.clock.out_of_time())  # every process stops at the same batch
        cycle_ends = t.join is not None and not state.joined and t.ctx.any(t.clock.progress(state.step) >= t.join)
        if stop or cycle_ends:
            break
    bar.close()
    state.images_per_s = seen * t.ctx.world / max(time.perf_counter() - started, 1e-9)
    return stop


# --------------------------------------------------------------------------------------------- validation

def validation_probs(t: Trainer, model: torch.nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """(N, K) float32 probabilities of `model` on `samples` through the eval transform (no TTA): per image,
    its fixed tiles' probabilities aggregated as config.aggregate says when the model sees tiles."""
    probs = probabilities(model, eval_batches(t, samples, 2 * t.config.batch_size), t.eval_tf, device=t.device,
                          precision=t.config.precision, channels_last=t.config.channels_last)
    tiles = t.data.tiles
    if tiles is None:
        return probs
    rows, owner = tiles.owned(samples)
    return aggregate(probs, owner, len(samples), t.config.aggregate, tiles.coverage[rows])


NO_SCORES = {"val_loss": math.nan, "val_accuracy": math.nan, "val_macro_f1": math.nan}
"""An epoch's scores without a validation split, or once its samples have joined the training set."""


def validate(trainer: Trainer, model: torch.nn.Module) -> tuple[dict, torch.Tensor]:
    """Loss, accuracy, macro-F1 and per-class F1 on the validation rows; and the (N_val, K) probabilities."""
    t = trainer
    rows = t.data.val_index
    if len(rows) == 0:
        return dict(NO_SCORES), torch.zeros(0, 0)
    probs = validation_probs(t, model, rows)
    truth = t.data.targets[rows]
    k = len(t.data.classes)
    prf = metrics.per_class_prf(metrics.confusion(truth, probs, k))
    if note := metrics.absent_note(prf["support"], t.data.classes):  # a rare class may miss the split: said once
        warnings.warn(f"validation {note}")
    return {
        "val_loss": float(probability_losses(probs, truth).mean()),
        "val_accuracy": metrics.accuracy(truth, probs),
        "val_macro_f1": metrics.macro_f1(truth, probs, k, present_only=True),
        # no validation sample: no F1 (an empty cell in per_class_f1.csv), not a 0
        "per_class_f1": [round(float(f), 5) if n else math.nan for f, n in zip(prf["f1"], prf["support"])],
    }, probs


# --------------------------------------------------------------------------------------------- fit

def fit(data: TrainingData, config: TrainConfig = TrainConfig(), out: str | Path = "runs/run", *,
        resume: bool = False) -> FitResult:
    """Train a model on `data` into the run folder `out`; `resume=True` continues from out/last.pt."""
    started = time.perf_counter()
    ctx = distributed.setup()
    runtime.set_threads(config.threads)
    run_dir = Path(out)
    saved = load_last(run_dir) if resume else None
    if saved is not None:  # the run's own recipe; only its length (epochs or time budget) may change
        recipe = dict(saved["config"], progress=config.progress, images_dir=config.images_dir)
        if config.epochs is not None or config.time_budget is not None:
            recipe.update(epochs=config.epochs, time_budget=config.time_budget)
        config = TrainConfig(**recipe)
    t = build_trainer(data, config, run_dir, ctx, resuming=saved is not None, started=started)
    if saved is None and ctx.is_main:  # a fresh run: an earlier run's label evidence in this folder is not its own
        (run_dir / rundir.LABEL_EVIDENCE).unlink(missing_ok=True)
    state = State()
    if saved is not None:
        restore(t, state, saved)
        print(f"resumed {run_dir} at epoch {state.epoch + 1}, batch {state.batch} ({t.clock.elapsed:.0f} s trained)")
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, config_record(t))
    board = logbook.TensorBoard(run_dir) if ctx.is_main else None
    # a resumed run whose budget is spent (or that stopped early) has nothing left to train
    finished = saved is not None and (t.clock.out_of_time() or _stale(t.config, state))
    while state.epoch < (t.config.epochs or 10**9) and not finished:
        stopped = run_epoch(t, state)
        end_epoch(t, state, board)
        finished = stopped or t.clock.out_of_time() or _stale(t.config, state)
    if board is not None:
        board.close()
    if ctx.is_main:
        finish(t, state)
    ctx.barrier()
    return FitResult(run_dir, state.best or {}, state.history, time.perf_counter() - started)


def _stale(config: TrainConfig, state: State) -> bool:
    return config.early_stopping is not None and state.stale >= config.early_stopping


def end_epoch(t: Trainer, state: State, board) -> None:
    """Validate, log, and save last.pt (and best.pt when the epoch is the best so far; every epoch once the
    validation samples have joined, which happens here at the end of the first cycle: see `join`)."""
    started = time.perf_counter()
    model = t.ema.module if t.ema else t.model
    scores, probs = (dict(NO_SCORES), None) if state.joined else validate(t, model)
    progress = t.clock.progress(state.step)
    row = {"epoch": state.epoch + 1, "phase": state.phase, "step": state.step, "seconds": round(t.clock.seconds(), 2),
           "lr": t.optimizer.param_groups[-1]["lr"], "strength": round(strength(t.config, progress), 4),
           "train_loss": float(np.mean(state.losses)) if state.losses else math.nan,
           "train_images_per_s": round(state.images_per_s, 1), "train_size": train_size(t.config, progress),
           **scores}
    state.history.append(row)
    state.epoch, state.batch, state.losses = state.epoch + 1, 0, []
    score = row["val_macro_f1"]
    better = state.best is None or math.isnan(score) or score > state.best["val_macro_f1"]
    state.stale = 0 if better else state.stale + 1
    if t.config.schedule == "plateau" and not math.isnan(score):
        state.plateau.update(score)
    if t.config.label_evidence and not state.joined and t.join is not None and progress >= HELD_OUT_FROM * t.join:
        state.held_out = probs if state.held_out is None else state.held_out + probs
        state.held_out_epochs += 1
    if not state.joined and t.join is not None and progress >= t.join:
        join(t, state, model, row, probs)
    if better:
        state.best = {**{k: v for k, v in row.items() if k != "per_class_f1"},
                      **({"estimate": state.estimate} if state.estimate else {})}
    if t.ctx.is_main:
        logbook.write_metrics(t.run_dir, state.history, classes=t.data.classes)
        board.log(row)
        if better:
            save_best(t, state, model)
        print(_summary(row, t.data.classes, better))
        if state.estimate is not None and state.estimate["epoch"] == row["epoch"]:
            print(f"first cycle done: val macro-F1 {row['val_macro_f1']:.4f} is the run's estimate; the "
                  f"{len(t.data.val_index)} validation samples join the {len(t.data.train_index)} training ones")
    if (t.config.augment == ADAPTIVE and state.augment is None and t.clock.budget is not None
            and progress >= ADAPTIVE_DECIDE_AT):
        choose_augment(t, state)
    save_last(t, state)
    t.clock.keep(1.5 * (time.perf_counter() - started) + 2)


HELD_OUT_FROM = 0.5
"""config.label_evidence averages the held-out samples' validation probabilities over the epochs from this
part of the first cycle on (the trained-on samples' training probabilities over all of it)."""


def trace_labels(t: Trainer, state: State, rows: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Add a training batch to its samples' running sums (no extra pass): the probabilities (softmax of the
    logits) to state.trajectory, the margin (the given label's logit minus the largest other) to state.margins.

    `rows`: the batch's (B,) example rows (samples, or tiles whose image counts); `logits`: (B, K) on the
    device, of augmented (maybe mixed) images; `labels`: (B,) the given labels. Averaged over the first cycle,
    the margin is the area under the margin (Pleiss et al., NeurIPS 2020): a net fits a clean label early and a
    wrong one late, if at all (Arpit et al., ICML 2017). Read by kitlib.audit.dynamics."""
    samples = (rows if t.data.tiles is None else t.data.tiles.tile_sample[rows]).to(logits.device)
    if state.trajectory is None:
        n, k = len(t.data.targets), logits.shape[1]
        state.trajectory = torch.zeros(n, k, device=logits.device)
        state.margins, state.visits = torch.zeros(n, device=logits.device), torch.zeros(n, device=logits.device)
    logits = logits.detach().float()
    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf).amax(dim=1)
    state.trajectory.index_add_(0, samples, torch.softmax(logits, dim=1))
    state.margins.index_add_(0, samples, given - others)
    state.visits.index_add_(0, samples, torch.ones_like(given))


def join(t: Trainer, state: State, model: torch.nn.Module, row: dict, probs: torch.Tensor) -> None:
    """The first cycle ended: its last scores become the run's estimate, its validation predictions
    RUN/val.csv (and, for tiles, RUN/tile_votes.png); the validation samples join the training set."""
    state.estimate = {k: row[k] for k in ("epoch", "seconds", "val_loss", "val_accuracy", "val_macro_f1")}
    state.estimate.update(samples=len(t.data.val_index), trained_on=len(t.data.train_index))
    state.joined = True
    if t.ctx.is_main:
        write_validation(t, probs)
        if t.data.tiles is not None:
            plot_votes(t, model)
    if t.config.label_evidence and state.trajectory is not None:
        write_label_evidence(t, state)
        state.trajectory = state.margins = state.visits = state.held_out = None  # on disk: not in last.pt


def write_label_evidence(t: Trainer, state: State) -> None:
    """RUN/label_evidence.npz (main process; every process adds its shard first): per sample trained on in the
    first cycle, its mean training probabilities and margin over that cycle; per sample held out then, its mean
    validation probabilities over the cycle's second half (HELD_OUT_FROM; no margin: NaN)."""
    for total in (state.trajectory, state.margins, state.visits):
        t.ctx.sum(total)
    if not t.ctx.is_main:
        return
    visits = state.visits.cpu()
    trained = t.data.train_index[visits[t.data.train_index] > 0]  # every one, unless the cycle was cut short
    rows = torch.cat([trained, t.data.val_index])
    probs = torch.cat([state.trajectory.cpu()[trained] / visits[trained, None],
                       state.held_out.cpu() / state.held_out_epochs])
    held = len(t.data.val_index)
    margins = torch.cat([state.margins.cpu()[trained] / visits[trained], torch.full((held,), math.nan)])
    held_out = torch.cat([torch.zeros(len(trained), dtype=torch.bool), torch.ones(held, dtype=torch.bool)])
    rundir.write_label_evidence(t.run_dir, rundir.LabelEvidence(
        [t.data.ids[i] for i in rows.tolist()], t.data.targets[rows].numpy(), list(t.data.classes), probs.numpy(),
        held_out.numpy(), margins.numpy()))


def write_validation(t: Trainer, probs: torch.Tensor) -> None:
    """RUN/val.csv and val_probs.npy: the validation samples' ids, labels and predicted probabilities."""
    rows = t.data.val_index.numpy()
    rundir.write_validation(t.run_dir, [t.data.ids[i] for i in rows],
                            [t.data.classes[int(t.data.targets[i])] for i in rows], probs.numpy())


def _summary(row: dict, classes: list[str], better: bool) -> str:
    text = (f"epoch {row['epoch']:>3} [{row['phase']}] {row['seconds']:7.0f} s  lr {row['lr']:.2g}  "
            f"train loss {row['train_loss']:.4f}  {row['train_images_per_s']:.0f} img/s")
    if not math.isnan(row["val_loss"]):
        text += (f"  | val loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.4f}  "
                 f"macro-F1 {row['val_macro_f1']:.4f}" + ("  *best" if better else ""))
    return text


def finish(t: Trainer, state: State) -> None:
    """Write the best model's validation predictions (unless written when the samples joined), the curves,
    and the summary line."""
    best_row, saved = state.best or {}, f"run saved in {t.run_dir} (best.pt, last.pt, metrics.csv, curves.png)"
    if not state.joined and len(t.data.val_index):
        best, _ = checkpoint.load_model(t.run_dir / rundir.BEST, t.device)
        write_validation(t, validate(t, best)[1])
        if t.data.tiles is not None:
            plot_votes(t, best)
    logbook.plot_curves(t.run_dir, title=f"{t.config.model} on {len(t.data.classes)} classes",
                        images_dir=t.config.images_dir)
    if state.joined:
        e = state.estimate
        what = (f"trained on all {e['samples'] + e['trained_on']} samples" if best_row.get("epoch", 0) > e["epoch"]
                else "the first cycle's (the budget ran out as the validation samples joined)")
        print(f"final model: epoch {best_row.get('epoch')}, {what}; estimate: val macro-F1 {e['val_macro_f1']:.4f} "
              f"(epoch {e['epoch']}, the first cycle's last model on the {e['samples']} samples held out until "
              f"then); {saved}")
    elif not len(t.data.val_index):
        print(f"last epoch {best_row.get('epoch')}: no validation split (val_fraction=0), so no estimate of the "
              f"test score; {saved}")
    else:
        print(f"best epoch {best_row.get('epoch')}: val macro-F1 {best_row.get('val_macro_f1', math.nan):.4f}; {saved}")


def plot_votes(t: Trainer, model: torch.nn.Module, count: int = 4) -> None:
    """RUN/tile_votes.png: up to `count` validation slides of different classes, tiles coloured by their vote."""
    val = t.data.val_index
    targets = t.data.targets[val]
    firsts = [int(val[targets == k][0]) for k in range(len(t.data.classes)) if (targets == k).any()]
    samples = torch.tensor(firsts[:count])
    probs = probabilities(model, eval_batches(t, samples, 2 * t.config.batch_size), t.eval_tf, device=t.device,
                          precision=t.config.precision, channels_last=t.config.channels_last)
    logbook.plot_tile_votes(t.data.tiles, samples, probs, t.data.classes, t.data.targets[samples].tolist(),
                            t.run_dir / rundir.TILE_VOTES, images_dir=t.config.images_dir,
                            title=f"{t.config.model}: validation slides, tiles coloured by the class they voted for")


def train(competition, config: TrainConfig = TrainConfig(), out: str | Path = "runs/run", *,
          decisions: str | Path | None = None, resume: bool = False) -> FitResult:
    """Prepare a competition (a Competition or its folder) as `config` says, then `fit` it."""
    return fit(prepare_for(competition, config, decisions=decisions), config, out, resume=resume)
