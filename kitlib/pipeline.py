"""`all`: audit -> train on the cleaned data -> predict a validated submission, inside one time budget.

    result = run_all("data/my-challenge", AllConfig(time_budget=1800), "runs/auto")
    result.submission.path      # runs/auto/submission.csv (+ submission.json)

`python -m kitlib all DATA --out RUN --time-budget S` is this function. The budget is wall-clock
seconds for everything: decoding, the audit, training and prediction; the time that prediction
will need is kept aside first, then the audit takes its share, then training gets the rest.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from kitlib import rundir
from kitlib.audit import DEFAULT_FOLDS, AuditConfig, AuditResult, audit
from kitlib.augment import matching_tta
from kitlib.data.dataset import TrainingData, prepare_for
from kitlib.data.layouts import Competition, load_competition
from kitlib.errors import KitError
from kitlib.predict.ensemble import predict_submission
from kitlib.predict.submission import WrittenSubmission
from kitlib.train.config import TrainConfig
from kitlib.train.loop import FitResult, fit

AUDIT_MODES = ("auto", "full", "quick", "report", "none")


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
    """full: K fold models score every sample, the suspects are dropped; quick: blank, duplicate and alien
    images found without models are dropped; report: the quick audit lists its suspects, nothing is dropped;
    none: no audit; auto: full from `full_audit_from` seconds of budget (or without a budget), else report."""
    audit_folds: int = DEFAULT_FOLDS
    """K of a full audit."""
    audit_share: float = 0.25
    """Share of the training time the full audit's fold models get (the final model trains in the rest)."""
    min_fold_seconds: float = 8.0
    """Seconds a fold model needs at least; below it the full audit falls back to the quick one (such
    models flag noise)."""
    full_audit_from: float = 1200.0
    """audit='auto' runs the full audit from this budget (seconds) up: on shorter CPU budgets dropping its
    suspects measured no gain (README: Results)."""
    predict_share: float = 0.1
    """Share of the budget kept for predicting the test set (plus its decoding, estimated from the
    training set's)."""
    min_predict_seconds: float = 5.0
    """Seconds kept for predicting at least."""

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
        for name in ("audit_share", "predict_share"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise KitError(f"{name}={getattr(self, name)!r}: give a share between 0 and 1.")


@dataclass(frozen=True)
class AllResult:
    """What `all` did, and where it wrote it."""

    run_dir: Path
    """RUN: the final run (best.pt, metrics.csv, ...), the audit's files, submission.csv."""
    submission: WrittenSubmission
    audit: AuditResult | None
    """The audit whose suspects training left out (None: no audit, or one that only listed them)."""
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


def _audit(data: TrainingData, config: AllConfig, run: Path, budget: _Budget) -> AuditResult | None:
    """`all`'s audit (RUN/suspects.csv): full in a share of the training time, or quick; None when nothing is dropped."""
    mode = config.audit
    if mode == "auto":  # on short budgets dropping suspects measured no gain (README: Results): report them
        mode = "full" if not config.time_budget or config.time_budget >= config.full_audit_from else "report"
    if mode == "none":
        return None
    seconds = None
    if mode == "full" and config.time_budget:
        seconds = config.audit_share * budget.left()
        if seconds < config.min_fold_seconds * config.audit_folds:
            print(f"quick audit only: {config.audit_share:.0%} of the training time ({seconds:.0f} s) is too little for "
                  f"{config.audit_folds} fold models")
            mode = "quick"
    folds = config.audit_folds if mode == "full" else 0
    result = audit(data, audit_config(folds, seconds, config.train), run)
    if mode == "report":
        print(f"training on every sample: below --time-budget {config.full_audit_from:.0f} the suspects are only "
              f"listed ({result.run_dir / rundir.SUSPECTS}); --audit quick drops them")
        return None
    return result


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
        # predicting gets its share of the budget plus the test set's decoding, estimated from the
        # training set's (zero when both were cached)
        per_image = (time.perf_counter() - decoding) / len(competition.samples)
        budget.reserve = (max(config.min_predict_seconds, config.predict_share * config.time_budget)
                          + per_image * len(competition.test))
        if budget.left() < 10:
            raise KitError(f"--time-budget {config.time_budget:g} s leaves no time to train: give more seconds.")
    audited = _audit(prepared, config, run, budget)
    if audited is not None:
        prepared = prepare_for(competition, train, decisions=audited.run_dir / rundir.SUSPECTS)
    if config.time_budget:
        train = dataclasses.replace(train, time_budget=max(budget.left(), 5.0))
    fitted = fit(prepared, train, run)
    # a full audit's fold models join the final one (half the weight): their training time is not lost
    folds = audited is not None and audited.oof_probs is not None
    models = [run] + ([run / rundir.FOLDS] if folds else [])
    written = predict_submission(models, competition, run / rundir.SUBMISSION, tta=matching_tta(train.augment))
    seconds = time.perf_counter() - started
    print(f"wrote {written.path} in {seconds:.0f} s"
          + (f", trained without the audit's {len(audited.suspects)} suspects" if audited is not None else "")
          + (", predicted with its fold models too" if folds else ""))
    return AllResult(run, written, audited, fitted, seconds)
