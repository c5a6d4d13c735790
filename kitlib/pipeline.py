"""`all`: audit -> train on the cleaned data -> predict a validated submission, inside one time budget.

    result = run_all("data/my-challenge", AllConfig(time_budget=1800), "runs/auto")
    result.submission.path      # runs/auto/submission.csv (+ submission.json)

`python -m kitlib all DATA --out RUN --time-budget S` is this function. The budget is wall-clock
seconds for everything: decoding, the audit, training and prediction; the time that prediction
will need (measured on this machine) is kept aside first, then the audit takes its share, then
training gets the rest. The final model trains on every sample it keeps: the validation samples join
for a second, shorter learning-rate cycle (TrainConfig.join_at), and the first cycle's score on them
is the run's estimate, recorded in submission.json. Without fold models (the quick audit), that first
cycle also keeps each sample's probabilities, averaged over the cycle (TrainConfig.label_evidence, free),
and the labels they contradict are listed as mislabeled suspects (kitlib.audit.dynamics).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from kitlib import models, rundir, runtime
from kitlib.audit import DEFAULT_FOLDS, AuditConfig, AuditResult, audit
from kitlib.audit.dynamics import add_suspects, first_cycle_suspects
from kitlib.augment import eval_transform, matching_tta
from kitlib.data.dataset import TrainingData, prepare_for, with_decisions
from kitlib.data.layouts import Competition, load_competition
from kitlib.errors import KitError
from kitlib.files import read_csv_strings, write_table
from kitlib.models.infer import probabilities, tta_views
from kitlib.predict.ensemble import predict_submission
from kitlib.predict.submission import WrittenSubmission
from kitlib.train.config import TrainConfig
from kitlib.train.loop import FitResult, fit
from kitlib.train.recipe import JOIN_AT, resolve

AUDIT_MODES = ("auto", "full", "quick", "report", "none")
DROPPED_ISSUES = ("blank", "shared_mask", "alien", "conflict", "duplicate")
"""Issues `all` drops at every budget: the audit finds them without a model, precisely (README: Results).
Mislabeled suspects are dropped only after a full audit, whose fold models have the evidence."""
PREDICT_OVERHEAD = 2.0
"""Seconds of prediction that do not grow with the test set: loading the checkpoints, writing the files."""


@dataclass(frozen=True)
class AllConfig:
    """Everything `all` depends on: the training recipe, the budget, and how much of it the audit gets."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """The final model's recipe (and the fold models' for a full audit); its time_budget must stay None:
    `time_budget` below covers the whole command."""
    time_budget: float | None = None
    """Wall-clock seconds for the whole command (decoding, audit, training, prediction); None: no limit,
    training runs train.epochs."""
    audit: str = "auto"
    """full: K fold models score every sample; quick: no models (blank, shared-mask, alien, duplicate and
    conflicting images, in seconds); report: the quick audit, nothing dropped; none: no audit; auto: full
    without a budget (or from `full_audit_from` seconds), else quick. Both drop what is certain
    (DROPPED_ISSUES); mislabeled suspects only after a full audit (RUN/dropped.csv lists what was dropped)."""
    audit_folds: int = DEFAULT_FOLDS
    """K of a full audit."""
    audit_share: float = 0.25
    """Share of the training time the full audit's fold models get (the final model trains in the rest)."""
    min_fold_seconds: float = 8.0
    """Seconds a fold model needs at least; below it the full audit falls back to the quick one (such
    models flag noise)."""
    trust_accuracy: float = 0.9
    """Mislabeled suspects are dropped only when the fold models agree with at least this share of the
    given labels out of fold: weaker models call hard samples mislabeled (on the demo, 2-epoch fold models
    agree with 83 % of the labels and list over a hundred suspects; the demo has 30 flipped labels)."""
    full_audit_from: float | None = None
    """audit='auto' runs the full audit from this budget (seconds) up, the quick one below; None: the full
    audit only without a budget. On a 2-core CPU at 1,200 s the full audit's fold models agreed with 29 %
    of the labels, found a third of the flipped ones, and cost the final model 3 points of test macro-F1
    (README: Results); the quick audit gained 1.3 points at 300 s."""
    min_predict_seconds: float = 3.0
    """Seconds kept for predicting at least (the time kept is measured: see _predict_seconds)."""

    def __post_init__(self):
        if self.audit not in AUDIT_MODES:
            raise KitError(f"audit {self.audit!r}: choose one of {', '.join(AUDIT_MODES)}.")
        if self.train.time_budget is not None:
            raise KitError("give the budget of `all` as AllConfig.time_budget (it covers the whole command), "
                           "not as train.time_budget.")
        if self.time_budget is not None and self.train.epochs is not None:
            raise KitError("give epochs or time_budget, not both: they are alternatives.")
        if self.time_budget is not None and self.time_budget <= 0:
            raise KitError(f"time_budget={self.time_budget!r}: give a positive number of seconds.")
        if self.audit_folds < 2:
            raise KitError(f"audit_folds={self.audit_folds}: a full audit needs K >= 2 fold models.")
        for name in ("audit_share", "trust_accuracy"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise KitError(f"{name}={getattr(self, name)!r}: give a share between 0 and 1.")


@dataclass(frozen=True)
class AllResult:
    """What `all` did, and where it wrote it."""

    run_dir: Path
    """RUN: the final run (best.pt, metrics.csv, ...), the audit's files, submission.csv."""
    submission: WrittenSubmission
    audit: AuditResult | None
    """The audit (None: no audit); RUN/dropped.csv lists the suspects training left out."""
    fit: FitResult
    seconds: float
    """Wall-clock seconds of the whole command."""


def audit_config(folds: int, time_budget: float | None, train: TrainConfig) -> AuditConfig:
    """The AuditConfig whose fold runs train as `train` says, in `time_budget` seconds (None: by epochs)."""
    if train.epochs is None and train.time_budget is None:
        train = dataclasses.replace(train, epochs=AuditConfig().train.epochs)
    return AuditConfig(folds=folds, time_budget=time_budget,
                       train=dataclasses.replace(train, images_dir=None, time_budget=None))


class _Budget:
    """The seconds of `all`'s budget left for training, with the prediction's share kept aside."""

    def __init__(self, total: float | None, started: float):
        self.total, self.started, self.reserve = total, started, 0.0

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.started) - self.reserve


def _audit(data: TrainingData, config: AllConfig, run: Path, budget: _Budget,
           competition: Competition | None = None) -> tuple[AuditResult | None, Path | None]:
    """`all`'s audit (RUN/suspects.csv) and the decisions file of what training leaves out (None: nothing).

    Full in a share of the training time, or quick; both drop DROPPED_ISSUES, the full one also its
    mislabeled suspects; report drops nothing.
    """
    mode = config.audit
    if mode == "auto":  # fold models need time: on a CPU budget they are too weak for it (README: Results)
        full = not config.time_budget or (config.full_audit_from is not None
                                          and config.time_budget >= config.full_audit_from)
        mode = "full" if full else "quick"
    if mode == "none":
        return None, None
    seconds = None
    if mode == "full" and config.time_budget:
        seconds = config.audit_share * budget.left()
        if seconds < config.min_fold_seconds * config.audit_folds:
            print(f"quick audit only: {config.audit_share:.0%} of the training time ({seconds:.0f} s) is too little for "
                  f"{config.audit_folds} fold models")
            mode = "quick"
    folds = config.audit_folds if mode == "full" else 0
    result = audit(data, audit_config(folds, seconds, config.train), run, competition=competition)
    if mode == "report":
        print(f"training on every sample: --audit report only lists the suspects ({result.run_dir / rundir.SUSPECTS})")
        return result, None
    agree = float((result.scores["predicted_label"] == result.scores["given_label"]).mean()) if folds else 0.0
    trusted = agree >= config.trust_accuracy
    dropped = result.suspects[result.suspects["issue"].isin(DROPPED_ISSUES + (("mislabeled",) if trusted else ()))]
    path = write_table(run / rundir.DROPPED, pd.DataFrame({"sample_index": dropped["sample_index"], "action": "drop",
                                                    "new_label": ""}))
    kept = len(result.suspects) - len(dropped)
    why = (f"the fold models agree with {agree:.0%} of the given labels, below {config.trust_accuracy:.0%}" if folds
           else "a quick audit has no fold models to back them")
    print(f"dropping {len(dropped)} suspects ({path})" + (f"; {kept} mislabeled suspects only listed: {why}"
                                                         if kept else ""))
    return result, path


def _first_cycle_labels(audited: AuditResult, run: Path) -> AuditResult:
    """Add the mislabeled suspects of the final model's first cycle (kitlib.audit.dynamics) to RUN/suspects.csv."""
    if not (run / rundir.LABEL_EVIDENCE).is_file():
        print("labels: not checked; the final model's first cycle did not end (no validation split, or the "
              "budget ran out first)")
        return audited
    found = first_cycle_suspects(run, AuditConfig().max_mislabeled)
    suspects = add_suspects(run, found)
    added = int((suspects["issue"] == "mislabeled").sum())
    print(f"labels: {added} mislabeled suspects from the final model's first cycle listed in {run / rundir.SUSPECTS} "
          "(listed, not dropped: `train --decisions` with that file leaves every suspect out)")
    return dataclasses.replace(audited, suspects=suspects)


def _tta(train: TrainConfig, data: TrainingData) -> str:
    """The TTA `all` predicts with, and times before training: the views training taught the model
    (kitlib.augment.matching_tta), without shifts for a tile model, which averages a grid of positions already."""
    return matching_tta(train.augment, shifts=data.tiles is None)


def _predict_seconds(data: TrainingData, train: TrainConfig, test_images: int, decode_per_image: float,
                     least: float, runs: int = 1) -> float:
    """Seconds to keep for predicting `test_images` images with `runs` models: decoding them at
    `decode_per_image`, the forward passes (with the TTA views) of the recipe's model, timed here on random
    pixels, plus PREDICT_OVERHEAD; x1.5 and at least `least`. The timing itself takes about a second."""
    device = runtime.pick_device(train.device)
    config = resolve(train, data, device)
    model = models.create(config.model, len(data.classes), norm=config.norm, **config.model_options).to(
        device, memory_format=torch.channels_last)
    views = tta_views(_tta(train, data))
    size = (config.image_size, config.image_size)
    transform = eval_transform(size=size, mean=(0.5,) * 3, std=(0.25,) * 3)
    n = max(2, min(64, 2**20 // (size[0] * size[1])))  # 64 small images, a few large tiles
    batch = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8)
    probabilities(model, [batch], transform, views=views, device=device, precision=config.precision)  # warm-up
    started = time.perf_counter()
    probabilities(model, [batch, batch], transform, views=views, device=device, precision=config.precision)
    per_input = (time.perf_counter() - started) / (2 * n)
    inputs = test_images * (float(data.tiles.counts().float().mean()) if data.tiles is not None else 1.0)
    return max(least, 1.5 * (test_images * decode_per_image + runs * inputs * per_input) + PREDICT_OVERHEAD)


def estimate(fitted: FitResult) -> dict:
    """What submission.json says about the expected test score, and where it comes from."""
    best = fitted.best
    if best.get("estimate"):
        e = best["estimate"]
        return {"macro_f1": e["val_macro_f1"], "accuracy": e["val_accuracy"], "source": "hold-out, then joined",
                "how": f"the final model's first learning-rate cycle trained on {e['trained_on']} samples and was "
                       f"scored on the {e['samples']} held out (epoch {e['epoch']}); those then joined for a second, "
                       "shorter cycle on every sample, so the submitted model should score about this or a little more "
                       "(an estimate from a few held-out samples, not a bound)"}
    if not math.isnan(best.get("val_macro_f1", math.nan)):
        return {"macro_f1": best["val_macro_f1"], "accuracy": best["val_accuracy"], "source": "hold-out",
                "how": f"the best epoch ({best['epoch']}) on the validation split, which the model never trained on "
                       "(chosen on it: slightly optimistic)"}
    return {"macro_f1": None, "accuracy": None, "source": "none",
            "how": "no validation split (val_fraction=0): every sample was trained on, nothing is left to estimate with"}


def run_all(data: Competition | str | Path, config: AllConfig = AllConfig(), out: str | Path = "runs/all", *,
            started: float | None = None) -> AllResult:
    """Audit, train (without the suspects when the audit mode drops them), predict: RUN/submission.csv.

    `started`: time.perf_counter() at which the budget began (default: now; the CLI passes its
    process's start, so imports and argument parsing count too).
    """
    started = time.perf_counter() if started is None else started
    competition = data if isinstance(data, Competition) else load_competition(data)
    budget = _Budget(config.time_budget, started)
    train = config.train
    decoding = time.perf_counter()
    prepared = prepare_for(competition, train)  # decoded inside the budget: large PNGs take minutes
    run = Path(out)
    if config.time_budget:
        # predicting gets what it will take, measured: the test set's decoding at the training set's
        # rate (zero when both were cached), and the model's forward passes timed on this machine
        per_image = (time.perf_counter() - decoding) / len(competition.samples)
        budget.reserve = _predict_seconds(prepared, train, len(competition.test), per_image, config.min_predict_seconds,
                                          runs=1 + (config.audit_folds if config.audit == "full" else 0))
        if budget.left() < 10:
            raise KitError(f"--time-budget {config.time_budget:g} s leaves no time to train: give more seconds.")
    audited, decisions = _audit(prepared, config, run, budget, competition)
    if decisions is not None:  # the pixels stay decoded: large PNGs are not read again
        prepared = with_decisions(prepared, competition, decisions)
    if config.time_budget:
        train = dataclasses.replace(train, time_budget=max(budget.left(), 5.0))
    if train.join_at is None:  # the final model sees every sample; its first cycle's hold-out score is the estimate
        train = dataclasses.replace(train, join_at=JOIN_AT)
    first_cycle = audited is not None and audited.oof_probs is None  # no fold models: the labels' evidence is here
    if first_cycle:
        train = dataclasses.replace(train, label_evidence=True)
    fitted = fit(prepared, train, run)
    if first_cycle:
        audited = _first_cycle_labels(audited, run)
    # a full audit's fold models join the final one (half the weight): their training time is not lost
    folds = decisions is not None and audited.oof_probs is not None
    models = [run] + ([run / rundir.FOLDS] if folds else [])
    expected = estimate(fitted)
    written = predict_submission(models, competition, run / rundir.SUBMISSION, tta=_tta(train, prepared),
                                 meta={"estimate": expected})
    seconds = time.perf_counter() - started
    print(f"wrote {written.path} in {seconds:.0f} s"
          + (f", trained without {len(read_csv_strings(decisions))} of the audit's suspects" if decisions else "")
          + (", predicted with its fold models too" if folds else "")
          + (f"; estimated test macro-F1 {expected['macro_f1']:.4f} ({expected['source']}: see submission.json)"
             if expected["macro_f1"] is not None else "; no estimate of its score (no validation split)"))
    return AllResult(run, written, audited, fitted, seconds)
