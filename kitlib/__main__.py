"""The command line: `python -m kitlib COMMAND ...` (the commands of DESIGN.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kitlib.errors import KitError


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake exits 2 with a one-line reason."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
