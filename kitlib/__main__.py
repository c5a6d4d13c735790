"""The command line: `python -m kitlib COMMAND ...` (the commands of DESIGN.md)."""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # --time-budget counts from here: the command's whole wall clock

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from kitlib.errors import KitError  # noqa: E402

AUDIT_SHARE = 0.25  # of `all`'s training time, for the audit's fold runs; the rest trains on the cleaned data
MIN_FOLD_SECONDS = 8  # below this per fold model, `all` audits without models: such models would flag noise
FULL_AUDIT_SECONDS = 1200  # `all --audit auto`: the full audit from this budget up (or with no budget)


def resolve_data(data: str) -> Path:
    """A competition folder; the word 'demo' (with no such folder here) means the embedded demo."""
    if data == "demo" and not Path(data).exists():
        from kitlib.demo import demo_root

        return demo_root()
    return Path(data)


def cmd_demo(args) -> None:
    from kitlib.demo import write_demo

    folder = write_demo(args.out_dir)
    print(f"wrote the demo competition to {folder}")
    print(f"wrote its test answers to {folder.parent / 'answers.csv'} and the injected defects to "
          f"{folder.parent / 'defects.csv'} (outside the competition folder)")


def cmd_eda(args) -> None:
    from kitlib.data import load_competition
    from kitlib.eda import run_eda

    paths = run_eda(load_competition(resolve_data(args.data)), args.out, size=args.size)
    print("wrote " + ", ".join(str(p) for p in paths))


def train_config(args):
    """The TrainConfig of a `train` or `all` command: --config JSON first, explicit flags over it."""
    import json

    from kitlib.recipe import TrainConfig

    fields = json.loads(Path(args.config).read_text()) if getattr(args, "config", None) else {}
    flags = {"model": "model", "epochs": "epochs", "time_budget": "time_budget", "batch_size": "batch_size",
             "lr": "lr", "augment": "augment", "image_size": "size", "decode_size": "decode_size",
             "folds": "folds", "fold": "fold", "val_fraction": "val_fraction", "seed": "seed",
             "device": "device", "precision": "precision", "weights": "weights", "schedule": "schedule",
             "optimizer": "optimizer"}
    fields.update({key: getattr(args, flag) for key, flag in flags.items()
                   if getattr(args, flag, None) is not None})
    if getattr(args, "pretrained", False):
        fields["pretrained"] = True
    try:
        return TrainConfig(**fields)
    except TypeError as error:  # an unknown key in the --config file
        raise KitError(f"{args.config}: {error}") from error


def audit_config(folds: int, time_budget: float | None, train_config):
    """The AuditConfig of an `audit` or `all` command: its fold runs train as `train_config` says."""
    from kitlib.audit import AuditConfig

    if train_config.epochs is None and train_config.time_budget is None:
        train_config = dataclasses.replace(train_config, epochs=AuditConfig().train.epochs)
    return AuditConfig(folds=folds, time_budget=time_budget,
                       train=dataclasses.replace(train_config, images_dir=None, time_budget=None))


def cmd_audit(args) -> None:
    from kitlib.audit import audit
    from kitlib.data import load_competition
    from kitlib.train import prepare_for

    config = audit_config(args.audit_folds, args.time_budget, train_config(args))
    competition = load_competition(resolve_data(args.data))
    data = prepare_for(competition, dataclasses.replace(config.train, val_fraction=0))
    result = audit(data, config, args.out, started=args.started)
    print(f"review {result.run_dir / 'suspects.png'}, then train without the suspects: python -m kitlib train "
          f"{args.data} --out RUN --decisions {result.run_dir / 'suspects.csv'}")


def cmd_train(args) -> None:
    from kitlib.train import train

    result = train(resolve_data(args.data), train_config(args), args.out, decisions=args.decisions,
                   resume=args.resume)
    print(f"wrote {result.run_dir} (best.pt, last.pt, config.json, metrics.csv, curves.png)")


def cmd_predict(args) -> None:
    from kitlib.data import load_competition
    from kitlib.predict import predict_submission

    written = predict_submission(args.runs, load_competition(resolve_data(args.data)), args.out,
                                 tta=args.tta, scales=args.scales)
    print(f"wrote {written.path} and {written.meta_path}")


def _seconds_left(args, reserve: float) -> float:
    """Seconds of `all`'s budget left for training, keeping `reserve` for predicting."""
    return args.time_budget - (time.perf_counter() - args.started) - reserve


def _audit_for_all(args, data, config, run: Path, reserve: float):
    """`all`'s audit (RUN/suspects.csv): full in a quarter of the training time, or quick; None for none."""
    from kitlib.audit import audit

    mode = args.audit
    if mode == "auto":  # on short budgets dropping suspects measured no gain (README: Results): report them
        mode = "full" if not args.time_budget or args.time_budget >= FULL_AUDIT_SECONDS else "report"
    if mode == "none":
        return None
    budget = None
    if mode == "full" and args.time_budget:
        budget = AUDIT_SHARE * _seconds_left(args, reserve)
        if budget < MIN_FOLD_SECONDS * args.audit_folds:
            print(f"quick audit only: a quarter of the training time ({budget:.0f} s) is too little for "
                  f"{args.audit_folds} fold models")
            mode = "quick"
    folds = args.audit_folds if mode == "full" else 0
    result = audit(data, audit_config(folds, budget, config), run)
    if mode == "report":
        print(f"training on every sample: below --time-budget {FULL_AUDIT_SECONDS} the suspects are only "
              f"listed ({result.run_dir / 'suspects.csv'}); --audit quick drops them")
        return None
    return result


def cmd_all(args) -> None:
    """Audit, train (without the suspects when the audit mode drops them), predict: inside the budget."""
    from kitlib.augment import matching_tta
    from kitlib.data import load_competition
    from kitlib.predict import predict_submission
    from kitlib.train import fit, prepare_for

    competition = load_competition(resolve_data(args.data))
    config = train_config(args)
    decoding = time.perf_counter()
    data = prepare_for(competition, config)  # decoded inside the budget: large PNGs take minutes
    run = Path(args.out)
    reserve = 0.0
    if args.time_budget:
        # predicting gets 10 % of the budget (at least 5 s) plus the test set's decoding, estimated
        # from the training set's (zero when both were cached)
        per_image = (time.perf_counter() - decoding) / len(competition.samples)
        reserve = max(5.0, 0.1 * args.time_budget) + per_image * len(competition.test)
        if _seconds_left(args, reserve) < 10:
            raise KitError(f"--time-budget {args.time_budget:g} s leaves no time to train: give more seconds.")
    audited = _audit_for_all(args, data, config, run, reserve)
    if audited is not None:
        data = prepare_for(competition, config, decisions=audited.run_dir / "suspects.csv")
    if args.time_budget:
        config = dataclasses.replace(config, time_budget=max(_seconds_left(args, reserve), 5.0))
    fit(data, config, run)
    # a full audit's fold models join the final one (half the weight): their training time is not lost
    folds = audited is not None and audited.oof_probs is not None
    models = [run] + ([run / "folds"] if folds else [])
    written = predict_submission(models, competition, run / "submission.csv", tta=matching_tta(config.augment))
    print(f"wrote {written.path} in {time.perf_counter() - args.started:.0f} s"
          + (f", trained without the audit's {len(audited.suspects)} suspects" if audited is not None else "")
          + (", predicted with its fold models too" if folds else ""))


def _training_options(parser: argparse.ArgumentParser) -> None:
    """The options `train` and `all` share."""
    parser.add_argument("data", metavar="DATA", help="competition folder (any layout), or 'demo'")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder for checkpoints, logs, figures")
    parser.add_argument("--model", help="model name (default: the kit's ResNet for small images); "
                        "see kitlib.models.names()")
    parser.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    parser.add_argument("--weights", help="local pretrained weights file (offline, e.g. a Kaggle dataset)")
    parser.add_argument("--size", type=int, help="model input size in px")
    parser.add_argument("--decode-size", type=int, help="size the images are decoded to and held in memory")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--optimizer", choices=["sgd", "adamw"])
    parser.add_argument("--schedule", help="onecycle, cosine, triangular2, plateau, constant")
    parser.add_argument("--augment", help="augmentation preset: none, light, medium, strong, auto")
    parser.add_argument("--val-fraction", type=float)
    parser.add_argument("--folds", type=int, help="validate on one fold of K stratified folds")
    parser.add_argument("--fold", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    parser.add_argument("--precision", help="bf16, fp16, fp32 (default: from the hardware)")
    parser.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    parser.add_argument("--epochs", type=int, help="epochs to train (or give --time-budget)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="wall-clock seconds: schedules adapt and the run ends inside them")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="python -m kitlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="write the demo competition (CSV layout) to OUT_DIR",
                               description="Write a small competition in the CSV layout, built from "
                               "scikit-learn's handwritten digits, to OUT_DIR/competition; its test "
                               "answers and injected defects go beside it.")
    demo.add_argument("out_dir", metavar="OUT_DIR")
    demo.set_defaults(run=cmd_demo)

    eda = commands.add_parser("eda", help="EDA figures (PNG) for the report",
                              description="Class counts, samples per class with masks, image sizes, "
                              "per-channel statistics, train vs test brightness.")
    eda.add_argument("data", metavar="DATA", help="competition folder, or 'demo'")
    eda.add_argument("--out", default="images", help="folder for the figures (default: images/)")
    eda.add_argument("--size", type=int, default=None, help="decode size in px (default: native, <= 128)")
    eda.set_defaults(run=cmd_eda)

    audit = commands.add_parser("audit", help="flag blank, duplicate, alien and mislabeled training samples",
                                description="Train K fold models (RUN/folds/fold0 ...), score every training "
                                "sample out of fold, and write RUN/suspects.csv (flagged, worst first), RUN/scores.csv "
                                "(every sample) and RUN/suspects.png. Train on the rest with --decisions "
                                "RUN/suspects.csv.")
    audit.add_argument("data", metavar="DATA", help="competition folder (any layout), or 'demo'")
    audit.add_argument("--out", required=True, metavar="RUN", help="audit folder")
    audit.add_argument("--folds", dest="audit_folds", type=int, default=4, metavar="K",
                       help="fold models (default 4): each sample is scored by the one that never trained on it; "
                       "0: the quick audit without models (blank, duplicate, alien from thumbnails)")
    audit.add_argument("--time-budget", type=float, metavar="SECONDS", help="wall-clock seconds for the whole audit")
    audit.add_argument("--epochs", type=int, help="epochs per fold model (default 10; or give --time-budget)")
    for flag, kind, text in (("--model", str, "model name (default: as train)"), ("--size", int, "model input in px"),
                             ("--decode-size", int, "decode size in px"), ("--device", str, "cuda, mps, cpu"),
                             ("--seed", int, "seeds the folds' training")):
        audit.add_argument(flag, type=kind, help=text)
    audit.set_defaults(run=cmd_audit)

    train = commands.add_parser("train", help="train a model into a run folder",
                                description="Train on DATA into RUN (config.json, metrics.csv, last.pt, "
                                "best.pt, curves.png). Give --epochs or --time-budget.")
    _training_options(train)
    train.add_argument("--decisions", metavar="CSV",
                       help="decisions.csv (drop/keep/relabel) or suspects.csv (drop all)")
    train.add_argument("--resume", action="store_true", help="continue RUN from its last.pt")
    train.set_defaults(run=cmd_train)

    predict = commands.add_parser("predict", help="predict the test set with one or more runs: a submission",
                                  description="Average the probabilities of the runs' best models (folds "
                                  "too), optionally with test-time augmentation, and write a submission "
                                  "validated against the sample submission, with a .json record beside it.")
    predict.add_argument("runs", nargs="+", metavar="RUN", help="run folders (their best.pt) or .pt files")
    predict.add_argument("--data", required=True, help="competition folder, or 'demo'")
    predict.add_argument("--out", required=True, metavar="SUBMISSION.csv")
    predict.add_argument("--tta", nargs="?", const="hflip", default="none",
                         help="test-time augmentation: hflip (the default when given bare), flips, none")
    predict.add_argument("--scales", type=float, nargs="+", default=[1.0],
                         help="TTA input-size factors, e.g. 0.875 1 1.125")
    predict.set_defaults(run=cmd_predict)

    everything = commands.add_parser("all", help="audit, train, predict: RUN/submission.csv",
                                     description="Audit DATA (RUN/suspects.csv), train (without the suspects, "
                                     "as --audit says), and predict the test set with the best model (and a full "
                                     "audit's fold models) into RUN/submission.csv, all inside --time-budget "
                                     "seconds if given.")
    _training_options(everything)
    everything.add_argument("--audit", choices=["auto", "full", "quick", "report", "none"], default="auto",
                            help="full: K fold models score every sample (a quarter of the training time), the "
                            "suspects are dropped; quick: blank, duplicate and alien images found without models "
                            "(seconds) are dropped; report: the quick audit's suspects.csv, nothing dropped; "
                            f"none: no audit; auto (default): full from --time-budget {FULL_AUDIT_SECONDS} or "
                            "without a budget, else report")
    everything.add_argument("--audit-folds", type=int, default=4, metavar="K", help="fold models of a full audit")
    everything.set_defaults(run=cmd_all)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake exits 2 with a one-line reason."""
    args = build_parser().parse_args(argv)
    # the process's start under `python -m kitlib`; the call's start when called from Python
    args.started = STARTED if argv is None else time.perf_counter()
    try:
        args.run(args)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
