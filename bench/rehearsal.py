"""A competition the kit has never seen, tried as a new user would: `all --time-budget B`, today's kit vs a baseline.

    python -m bench.rehearsal [--budget 300] [--rounds 2] [--baseline /path/to/an/older/checkout]
    python -m bench.rehearsal --budget 120 --variant 'val0={"val_fraction": 0}'     # TrainConfig overrides

The rehearsal competition is written in the course's CSV layout (train_data/img_XXXXX.png,
train_labels.csv, test_data/, sample_submission.csv; the answer key beside the folder, not in it)
from Tiny ImageNet-100c (../shared/data), Tiny ImageNet-style: 20 of its 100 classes (every 5th WordNet
id, named as words.txt spells them, commas included), its 100 training images a class (all this subset
has: 2,000 in all) and its 50 validation images a class as the test set (1,000), all 64 x 64 PNGs. A few defects, as real data has them:
1 % of the training labels flipped to another class, 0.5 % blank images, 0.5 % duplicated images.

Each candidate runs `python -m kitlib all COMP --out RUN --time-budget B` in a fresh process from its
own checkout (this one, and `--baseline`'s), with a fresh decoded-image cache (decoding counts inside
the budget, as for a new user), interleaved A B A B ...; reported per candidate: the wall clock of
the command, the epochs trained, the estimate the run reports of its own score, the test macro-F1
(median over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import f1_score

from bench.common import machine, median, table, unpacked
from kitlib.files import write_csv

ROOT = Path(__file__).resolve().parents[1]
CLASSES, EVERY, TRAIN_EACH, TEST_EACH = 20, 5, 100, 50
DEFECTS = {"mislabeled": 0.01, "blank": 0.005, "duplicate": 0.005}


def build(out: Path, seed: int = 0) -> Path:
    """Write the competition to out/competition and its answer key to out/answers.csv; return the folder."""
    tiny = unpacked("tiny-imagenet-100c.tar.gz") / "tiny-imagenet-100c"
    rng = np.random.default_rng(seed)
    wnids = sorted((tiny / "wnids.txt").read_text().split())
    words = dict(line.split("\t", 1) for line in (tiny / "words.txt").read_text().splitlines() if "\t" in line)
    chosen = wnids[::EVERY][:CLASSES]
    names = [words[w].strip() for w in chosen]
    val = pd.read_csv(tiny / "val" / "val_annotations.txt", sep="\t", header=None, usecols=[0, 1],
                      names=["file", "wnid"])
    train, test = [], []
    for name, wnid in zip(names, chosen):
        files = sorted((tiny / "train" / wnid / "images").iterdir())
        train += [(f, name) for f in np.array(files)[rng.permutation(len(files))[:TRAIN_EACH]]]
        held = sorted(val.loc[val["wnid"] == wnid, "file"])[:TEST_EACH]
        test += [(tiny / "val" / "images" / f, name) for f in held]
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    images = [np.asarray(Image.open(f).convert("RGB")) for f, _ in train]
    labels = [c for _, c in train]
    picks = iter(rng.permutation(len(train)))
    for _ in range(round(DEFECTS["mislabeled"] * len(train))):
        i = next(picks)
        labels[i] = names[(names.index(labels[i]) + rng.integers(1, CLASSES)) % CLASSES]
    for _ in range(round(DEFECTS["blank"] * len(train))):
        images[next(picks)] = np.full((64, 64, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(round(DEFECTS["duplicate"] * len(train))):
        i, source = next(picks), next(picks)
        images[i], labels[i] = images[source], labels[source]
    comp = out / "competition"
    (comp / "train_data").mkdir(parents=True)
    (comp / "test_data").mkdir()
    train_names = [f"img_{i:05d}.png" for i in range(len(train))]
    for name, image in zip(train_names, images):
        Image.fromarray(image).save(comp / "train_data" / name)
    write_csv(comp / "train_labels.csv", ["sample_index", "label"], list(map(list, zip(train_names, labels))))
    test_names = [f"img_{i:05d}.png" for i in range(len(test))]
    for name, (f, _) in zip(test_names, test):
        Image.open(f).convert("RGB").save(comp / "test_data" / name)
    write_csv(comp / "sample_submission.csv", ["sample_index", "label"], [[n, names[0]] for n in test_names])
    write_csv(out / "answers.csv", ["sample_index", "label"], [[n, c] for n, (_, c) in zip(test_names, test)])
    return comp


def run_all(checkout: Path, comp: Path, run: Path, budget: float, config: dict | None) -> dict:
    """`python -m kitlib all` from `checkout` in a fresh process and cache: seconds, epochs, estimate, test F1."""
    command = [sys.executable, "-m", "kitlib", "all", str(comp), "--out", str(run), "--time-budget", str(budget)]
    with tempfile.TemporaryDirectory() as cache:
        if config:
            (Path(cache) / "config.json").write_text(json.dumps(config))
            command += ["--config", str(Path(cache) / "config.json")]
        env = {**os.environ, "PYTHONPATH": str(checkout), "KIT_CACHE_DIR": cache}
        started = time.perf_counter()
        done = subprocess.run(command, cwd=run.parent, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    (run.parent / f"{run.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    answers = pd.read_csv(comp.parent / "answers.csv", dtype=str, keep_default_na=False)
    submission = pd.read_csv(run / "submission.csv", dtype=str, keep_default_na=False)
    metrics = pd.read_csv(run / "metrics.csv")
    record = json.loads((run / "submission.json").read_text())
    estimate = record.get("estimate", {}).get("macro_f1")  # what the run says it will score
    if estimate is None:  # older kits: the best validation macro-F1 of the final run
        estimate = record["runs"][0]["metrics"].get("val_macro_f1")
    return {"seconds": seconds, "epochs": int(metrics["epoch"].max()),
            "images_per_s": float(metrics["train_images_per_s"].median()), "estimate": estimate,
            "f1": 100 * f1_score(answers["label"], submission["label"], average="macro")}


def main() -> None:
    """Build the competition, run the candidates interleaved, print the README table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300, help="seconds for each `all` command")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout of the kit to run beside this one")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="also run this checkout with these TrainConfig fields (--config), repeatable")
    parser.add_argument("--keep", type=Path, help="write the competition and the runs here (default: a temp folder)")
    args = parser.parse_args()
    print(machine(), "; load average", " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    candidates = {"kit": (ROOT, None)}
    if args.baseline:
        candidates["baseline"] = (args.baseline.resolve(), None)
    for spec in args.variant:
        name, _, fields = spec.partition("=")
        candidates[name] = (ROOT, json.loads(fields))
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        comp = out / "competition" if (out / "competition").exists() else build(out)
        results: dict[str, list[dict]] = {name: [] for name in candidates}
        for r in range(args.rounds):
            for name, (checkout, config) in candidates.items():
                result = run_all(checkout, comp, out / f"{name}-{r + 1}", args.budget, config)
                results[name].append(result)
                print(f"round {r + 1}/{args.rounds}  {name}: " + json.dumps(result), flush=True)
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; budget {args.budget:.0f} s; "
          f"test macro-F1 on the 1,000 test images, median of {args.rounds} round(s)\n")
    print(table(["candidate", "command took", "epochs", "img/s in training", "its own estimate", "test macro-F1 (%)",
                 "rounds"], [
        [name, f"{median([x['seconds'] for x in rs]):.0f} s", f"{median([x['epochs'] for x in rs]):.0f}",
         f"{median([x['images_per_s'] for x in rs]):.0f}",
         f"{100 * median([x['estimate'] for x in rs]):.1f}" if all(x["estimate"] is not None for x in rs) else "-",
         f"**{median([x['f1'] for x in rs]):.1f}**", ", ".join(f"{x['f1']:.1f}" for x in rs)]
        for name, rs in results.items()]))


if __name__ == "__main__":
    main()
