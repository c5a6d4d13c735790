"""The command line: `python -m kitlib COMMAND ...` (the commands of DESIGN.md).

This module only parses arguments into configs and calls the library: `all` is
kitlib.pipeline.run_all, `train` kitlib.train.train, `audit` kitlib.audit.audit, and so on.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # --time-budget counts from here: the command's whole wall clock

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from kitlib.errors import KitError  # noqa: E402


def resolve_data(data: str) -> Path:
    """A competition folder, or the demo a word names ('demo', 'demo-slides', 'demo-images'; kitlib.data.demo)."""
    from kitlib.data.demo import resolve

    return resolve(data)


def load_data(args):
    """The competition DATA names, its labels CSV's columns as --id-column/--label-column say."""
    from kitlib.data import load_competition

    return load_competition(resolve_data(args.data), id_column=args.id_column, label_column=args.label_column)


def cmd_demo(args) -> None:
    """`demo OUT_DIR`: write the demo competition."""
    from kitlib.data.demo import write_kind

    folder = write_kind(args.out_dir, args.kind)
    print(f"wrote the {args.kind} demo competition to {folder}")
    print(f"wrote its test answers to {folder.parent / 'answers.csv'} and the injected defects to "
          f"{folder.parent / 'defects.csv'} (outside the competition folder)")


def cmd_eda(args) -> None:
    """`eda DATA`: the EDA figures."""
    from kitlib.data.eda import run_eda

    paths = run_eda(load_data(args), args.out, size=args.size)
    print("wrote " + ", ".join(str(p) for p in paths))


def train_config(args, *, budget: bool = True):
    """The TrainConfig of a `train`, `audit` or `all` command: --config JSON first, explicit flags over it.

    `budget=False` leaves --time-budget out (`all`'s budget covers the whole command, not training).
    """
    from kitlib.files import read_json
    from kitlib.train import TrainConfig

    fields = read_json(args.config, "--config file of TrainConfig fields") if getattr(args, "config", None) else {}
    flags = {"model": "model", "epochs": "epochs", "time_budget": "time_budget", "batch_size": "batch_size",
             "lr": "lr", "augment": "augment", "image_size": "size", "decode_size": "decode_size",
             "folds": "folds", "fold": "fold", "val_fraction": "val_fraction", "seed": "seed",
             "device": "device", "precision": "precision", "weights": "weights", "schedule": "schedule",
             "optimizer": "optimizer", "masks": "masks", "tile_scale": "tile_scale",
             "tiles_per_image": "tiles_per_image", "aggregate": "aggregate"}
    if not budget:
        flags.pop("time_budget")
    fields.update({key: getattr(args, flag) for key, flag in flags.items()
                   if getattr(args, flag, None) is not None})
    if getattr(args, "pretrained", False):
        fields["pretrained"] = True
    try:
        return TrainConfig(**fields)
    except TypeError as error:  # an unknown key in the --config file
        raise KitError(f"{args.config}: {error}") from error


def cmd_audit(args) -> None:
    """`audit DATA --out RUN`: suspects.csv and scores.csv."""
    from kitlib.audit import audit
    from kitlib.pipeline import audit_config

    config = audit_config(args.audit_folds, args.time_budget, train_config(args, budget=False))
    result = audit(load_data(args), config, args.out, started=args.started)
    print(f"review {result.run_dir / 'suspects.png'}, then train without the suspects: python -m kitlib train "
          f"{args.data} --out RUN --decisions {result.run_dir / 'suspects.csv'}")


def cmd_train(args) -> None:
    """`train DATA --out RUN`: one training run."""
    from kitlib.train import train

    config = train_config(args)
    result = train(load_data(args), config, args.out, decisions=args.decisions, resume=args.resume)
    print(f"wrote {result.run_dir} (best.pt, last.pt, config.json, metrics.csv, curves.png)")


def cmd_predict(args) -> None:
    """`predict RUN ... --data DATA --out CSV`: the ensemble's submission."""
    from kitlib.predict import predict_submission

    predict_submission(args.runs, load_data(args), args.out, tta=args.tta, scales=args.scales,
                       aggregate=args.aggregate)  # says what it wrote


def cmd_all(args) -> None:
    """Audit, train (without the suspects when the audit mode drops them), predict: inside the budget."""
    from kitlib.pipeline import AllConfig, run_all

    config = AllConfig(train=train_config(args, budget=False), time_budget=args.time_budget, audit=args.audit,
                       audit_folds=args.audit_folds)
    run_all(load_data(args), config, args.out, started=args.started)


def _column_options(parser: argparse.ArgumentParser) -> None:
    """--id-column and --label-column: every command that reads the labels CSV has them."""
    parser.add_argument("--id-column", metavar="NAME", help="the labels CSV's id column (default: a known name such "
                        "as id or image_name, else the column whose values name the image files)")
    parser.add_argument("--label-column", metavar="NAME", help="the labels CSV's label column (default: a known name "
                        "such as label, class or target, else the only other column)")


def _training_options(parser: argparse.ArgumentParser) -> None:
    """The options `train` and `all` share."""
    parser.add_argument("data", metavar="DATA", help="competition folder (any layout), or 'demo' ('demo-images': the digits)")
    _column_options(parser)
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder for checkpoints, logs, figures")
    parser.add_argument("--model", help="model name (default: the kit's ResNet for small images); "
                        "see kitlib.models.names()")
    parser.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    parser.add_argument("--weights", help="local pretrained weights file (offline, e.g. a Kaggle dataset)")
    parser.add_argument("--size", type=int,
                        help="model input size in px (default: the decode size, or the pretrained weights' size)")
    parser.add_argument("--decode-size", type=int, help="size the images are decoded to and held in memory "
                        "(default: their most common size, its longer side at most the model's input: 64 px on a "
                        "CPU, 128 on a GPU, or the pretrained weights' size)")
    parser.add_argument("--batch-size", type=int,
                        help="images per optimizer step (default: 16-128, from the data set's size)")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--optimizer", choices=["sgd", "adamw"],
                        help="default: SGD from scratch, AdamW when pretrained")
    parser.add_argument("--schedule", help="onecycle, cosine, triangular2, plateau, constant")
    parser.add_argument("--augment", help="augmentation preset: adaptive (default: light, or medium for runs of 40+ epochs), "
                        "none, light, medium, strong, auto")
    parser.add_argument("--val-fraction", type=float, help="validation share of each class (default 0.2; 0: none)")
    parser.add_argument("--folds", type=int, help="validate on one fold of K stratified folds")
    parser.add_argument("--fold", type=int, help="which of the --folds validates (default 0)")
    parser.add_argument("--seed", type=int, help="random seed of the split, the augmentation and the weights")
    parser.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    parser.add_argument("--precision", help="bf16, fp16, fp32 (default: from the hardware)")
    parser.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    parser.add_argument("--epochs", type=int, help="epochs to train (or give --time-budget)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="wall-clock seconds: schedules adapt and the run ends inside them")
    _mask_options(parser)


def _mask_options(parser: argparse.ArgumentParser) -> None:
    """How masks are used: the options `train`, `audit` and `all` share."""
    parser.add_argument("--masks", choices=["auto", "ignore", "crop", "tiles", "channel"],
                        help="how the masks beside the images are used: tiles (windows of the model's input size at "
                        "native resolution inside the mask, predictions averaged per image), crop (each mask "
                        "region), channel (the mask as a 4th input channel), ignore; auto (default): tiles when "
                        "most images have a mask and are much larger than the model's input, else ignore")
    parser.add_argument("--tile-scale", type=float, metavar="F",
                        help="cut tiles at F times the native resolution (default 1; 0.5 for very large slides)")
    parser.add_argument("--tiles-per-image", type=int, metavar="N",
                        help="at most N tiles of one image per epoch and per prediction (default 32)")
    parser.add_argument("--aggregate", choices=["mean", "coverage", "logit"],
                        help="how tile predictions make an image's: mean probability (default), weighted by mask "
                        "coverage, or mean log-probability")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from kitlib.audit import DEFAULT_FOLDS

    parser = argparse.ArgumentParser(
        prog="python -m kitlib",
        description="The image-classification competition kit. The one command to start with: "
                    "python -m kitlib all DATA --out RUN --time-budget SECONDS (audit, train, predict a submission); "
                    "try it on the demo: python -m kitlib all demo --out runs/demo --time-budget 180. "
                    "'python -m kitlib COMMAND --help' describes each command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="write a demo competition (CSV layout) to OUT_DIR",
                               description="Write a small competition in the CSV layout, built from "
                               "scikit-learn's handwritten digits, to OUT_DIR/competition; its test "
                               "answers and planted defects go beside it. DATA 'demo' (or 'demo-slides', "
                               "'demo-images') in the other commands uses one written into the kit's cache.")
    demo.add_argument("out_dir", metavar="OUT_DIR")
    demo.add_argument("--kind", choices=["slides", "images"], default="slides",
                      help="slides (default): large slides with masks, the course challenge in miniature, with "
                      "its planted junk (cartoons sharing one mask, a stained duplicate, a blank slide); images: "
                      "1,797 digits as 32 px images with blank, mislabeled, foreign and duplicated ones")
    demo.set_defaults(run=cmd_demo)

    eda = commands.add_parser("eda", help="EDA figures (PNG) for the report",
                              description="Class counts, samples per class with masks, image sizes, "
                              "per-channel statistics, train vs test brightness.")
    eda.add_argument("data", metavar="DATA", help="competition folder, or 'demo' ('demo-images': the digits)")
    eda.add_argument("--out", default="images", help="folder for the figures (default: images/)")
    eda.add_argument("--size", type=int, default=None, help="decode size in px (default: native, <= 128)")
    _column_options(eda)
    eda.set_defaults(run=cmd_eda)

    audit = commands.add_parser("audit", help="flag blank, duplicate, alien and mislabeled training samples",
                                description="Train K fold models (RUN/folds/fold0 ...), score every training "
                                "sample out of fold, and write RUN/suspects.csv (flagged, worst first), RUN/scores.csv "
                                "(every sample) and RUN/suspects.png. Train on the rest with --decisions "
                                "RUN/suspects.csv.")
    audit.add_argument("data", metavar="DATA", help="competition folder (any layout), or 'demo' ('demo-images': the digits)")
    audit.add_argument("--out", required=True, metavar="RUN", help="audit folder")
    _column_options(audit)
    audit.add_argument("--folds", dest="audit_folds", type=int, default=DEFAULT_FOLDS, metavar="K",
                       help=f"fold models (default {DEFAULT_FOLDS}): each sample is scored by the one that never trained on it; "
                       "0: the quick audit without models (blank, duplicate, alien from thumbnails)")
    audit.add_argument("--time-budget", type=float, metavar="SECONDS", help="wall-clock seconds for the whole audit")
    audit.add_argument("--epochs", type=int, help="epochs per fold model (default 10; or give --time-budget)")
    _mask_options(audit)
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
    predict.add_argument("--data", required=True, help="competition folder, or 'demo' ('demo-images': the digits)")
    _column_options(predict)
    predict.add_argument("--out", required=True, metavar="SUBMISSION.csv")
    predict.add_argument("--tta", nargs="?", const="hflip", default="none",
                         help="test-time augmentation: hflip (the default when given bare), flips, none, shifts, "
                              "hflip+shifts, flips+shifts (each view also moved by a pixel or two)")
    predict.add_argument("--scales", type=float, nargs="+", default=[1.0],
                         help="TTA input-size factors, e.g. 0.875 1 1.125")
    predict.add_argument("--aggregate", choices=["mean", "coverage", "logit"],
                         help="how a tile model's tile predictions make an image's (default: as it was trained)")
    predict.set_defaults(run=cmd_predict)

    everything = commands.add_parser("all", help="audit, train, predict: RUN/submission.csv",
                                     description="Audit DATA (RUN/suspects.csv), train (without the suspects, "
                                     "as --audit says; the validation samples join for a second, shorter cycle), and "
                                     "predict the test set with the final model (and a full audit's fold models) "
                                     "into RUN/submission.csv, all inside --time-budget seconds if given.")
    _training_options(everything)
    everything.add_argument("--audit", choices=["auto", "full", "quick", "report", "none"], default="auto",
                            help="full: K fold models score every sample (a quarter of the training time); quick: "
                            "no models (seconds); both drop blank, shared-mask, alien, duplicate and conflicting "
                            "images, the full audit also its mislabeled suspects (RUN/dropped.csv); report: the quick "
                            "audit, nothing dropped; none: no audit; auto (default): quick with --time-budget, full "
                            "without one (fold models trained inside a budget were too weak to be worth their "
                            "time, measured on a CPU). After a quick audit the final model's first cycle still "
                            "lists mislabeled suspects in RUN/suspects.csv, without dropping them")
    everything.add_argument("--audit-folds", type=int, default=DEFAULT_FOLDS, metavar="K",
                            help="fold models of a full audit")
    everything.set_defaults(run=cmd_all)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake exits 2 with a one-line reason."""
    args = build_parser().parse_args(argv)
    # the process's start under `python -m kitlib`; the call's start when called from Python
    args.started = STARTED if argv is None else time.perf_counter()
    try:
        with warnings.catch_warnings():  # a warning is one line, like an error
            warnings.showwarning = _one_line
            args.run(args)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the command line: 'warning: MESSAGE' on stderr, no source line."""
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
