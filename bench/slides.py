"""Slides with masks: `all` with each way of using the masks, beside a plain tile script, on a rehearsal slide challenge.

    python -m bench.slides [--budget 300] [--rounds 1] [--train 600] [--test 300]

The rehearsal competition is written in the course's layout (train_data/img_XXXX.png with
mask_XXXX.png beside each, train_labels.csv, test_data/, sample_submission.csv) from Tiny
ImageNet-100c (../shared/data): slides of 320-512 px of a tissue-like background (pink stroma,
low-frequency blotches, purple nuclei); in each, 1-3 objects of the slide's class pasted at native
resolution (64 px) inside the masked regions, and 1-3 objects of other classes outside them. Five
imbalanced classes (30/25/20/15/10 %) named like the course's. Training slides use Tiny ImageNet's
training images, test slides its validation images; the answer key stays outside the folder.

Then, interleaved, each with a fresh cache (decoding and tiling count inside the budget):
  ignore  `python -m kitlib all COMP --time-budget B --masks ignore`: whole slides at the CPU default size;
  crop    ... --masks crop: each mask region, fitted to the model's input;
  tiles   ... --masks tiles: 64 px windows at native resolution inside the masks (what auto picks here);
  plain   bench/plain_tiles.py, the ~60-line script a team would write, given the same budget.
Reported: test macro-F1 of each (median over rounds) and its random baseline.
"""

from __future__ import annotations

import argparse
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
from kitlib.data.demo import free_spot, tissue
from kitlib.files import write_csv
from kitlib.metrics import random_baseline_f1

CLASSES = ["HER2(+)", "Triple negative", "Luminal A", "Luminal B, HER2(-)", "Luminal B, HER2(+)"]
SHARES = [0.30, 0.25, 0.20, 0.15, 0.10]
OBJECT = 64  # Tiny ImageNet's native size, pasted as is


def slide(label: int, pools: list[list[Path]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One slide of class `label`: its objects inside the mask, distractors of other classes outside."""
    h, w = (int(v) for v in rng.integers(320, 513, 2))
    pixels, mask, taken = tissue(h, w, rng), np.zeros((h, w), np.uint8), []
    for kind in [label] * int(rng.integers(1, 4)) + [None] * int(rng.integers(1, 4)):
        spot = free_spot(h, w, OBJECT, taken, rng, margin=14)
        if spot is None:
            continue
        taken.append(spot)
        cls = kind if kind is not None else int(rng.choice([c for c in range(len(CLASSES)) if c != label]))
        obj = np.asarray(Image.open(pools[cls][int(rng.integers(len(pools[cls])))]).convert("RGB"))
        obj = obj[:, ::-1] if rng.random() < 0.5 else obj
        y, x = spot
        pixels[y:y + OBJECT, x:x + OBJECT] = obj
        if kind is not None:  # the diseased region: the object and a margin around it
            m = int(rng.integers(4, 12))
            mask[max(0, y - m):y + OBJECT + m, max(0, x - m):x + OBJECT + m] = 255
    return pixels, mask


def build(out: Path, train: int, test: int, seed: int = 0) -> Path:
    """Write the rehearsal slide competition to out/competition (answers.csv beside it); return that folder."""
    tin = unpacked("tiny-imagenet-100c.tar.gz") / "tiny-imagenet-100c"
    rng = np.random.default_rng(seed)
    wnids = sorted(rng.choice(sorted((tin / "wnids.txt").read_text().split()), len(CLASSES), replace=False))
    val = pd.read_csv(tin / "val" / "val_annotations.txt", sep="\t", header=None, usecols=[0, 1], names=["f", "w"])
    pools = {"train": [sorted((tin / "train" / w / "images").iterdir()) for w in wnids],
             "test": [[tin / "val" / "images" / f for f in val[val["w"] == w]["f"]] for w in wnids]}
    comp = out / "competition"
    for split, count in (("train", train), ("test", test)):
        folder = comp / f"{split}_data"
        folder.mkdir(parents=True)
        labels = np.repeat(np.arange(len(CLASSES)), np.round(np.array(SHARES) * count).astype(int))
        rows = []
        for i, label in enumerate(rng.permutation(labels)):
            pixels, mask = slide(int(label), pools[split], rng)
            Image.fromarray(pixels).save(folder / f"img_{i:04d}.png")
            Image.fromarray(mask).save(folder / f"mask_{i:04d}.png")
            rows.append([f"img_{i:04d}.png", CLASSES[label]])
        if split == "train":
            write_csv(comp / "train_labels.csv", ["sample_index", "label"], rows)
        else:
            write_csv(comp / "sample_submission.csv", ["sample_index", "label"], [[r[0], CLASSES[0]] for r in rows])
            write_csv(out / "answers.csv", ["sample_index", "label"], rows)
    return comp


def score(submission: Path, answers: Path) -> float:
    """Test macro-F1 of a submission against the answer key."""
    truth = pd.read_csv(answers, dtype=str).set_index("sample_index")["label"]
    guess = pd.read_csv(submission, dtype=str).set_index("sample_index")["label"]
    return f1_score(truth.loc[guess.index], guess, average="macro", labels=CLASSES)


def run(mode: str, comp: Path, work: Path, budget: float, round_: int) -> tuple[float, float]:
    """(test macro-F1, seconds) of one candidate, with a cache of its own (nothing decoded beforehand)."""
    out = work / f"{mode}{round_}"
    env = dict(os.environ, KIT_CACHE_DIR=str(work / f"cache-{mode}{round_}"))
    if mode == "plain":
        command = [sys.executable, "-m", "bench.plain_tiles", str(comp), str(out) + ".csv", str(budget)]
    else:
        command = [sys.executable, "-m", "kitlib", "all", str(comp), "--out", str(out), "--time-budget", str(budget),
                   "--masks", mode]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    last = [line for line in done.stdout.splitlines() if line.startswith(("masks:", "tiles:", "wrote", "plain"))]
    print("\n".join(f"  {mode}: {line[:200]}" for line in last), flush=True)
    submission = Path(str(out) + ".csv") if mode == "plain" else out / "submission.csv"
    return score(submission, comp.parent / "answers.csv"), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--train", type=int, default=600, help="training slides")
    parser.add_argument("--test", type=int, default=300, help="test slides")
    parser.add_argument("--modes", nargs="+", default=["ignore", "crop", "tiles", "plain"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kit-bench-slides-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        comp = build(work, args.train, args.test)
        print(f"built {comp} ({args.train} train, {args.test} test slides) in {time.perf_counter() - started:.0f} s")
        results = {mode: [] for mode in args.modes}
        for r in range(args.rounds):
            for mode in args.modes:
                f1, seconds = run(mode, comp, work, args.budget, r)
                results[mode].append((f1, seconds))
                print(f"round {r + 1}/{args.rounds}  {mode}: test macro-F1 {f1:.3f} in {seconds:.0f} s", flush=True)
        counts = pd.read_csv(comp.parent / "answers.csv")["label"].value_counts().reindex(CLASSES).to_numpy()
        base = random_baseline_f1(counts)["best"]
        rows = [[mode, f"{median([f for f, _ in v]):.3f}", ", ".join(f"{f:.3f}" for f, _ in v),
                 f"{median([s for _, s in v]):.0f}"] for mode, v in results.items()]
        print(f"\n{machine()}; budget {args.budget:g} s; random baseline macro-F1 {base:.3f}\n")
        print(table(["candidate", "test macro-F1 (median)", "rounds", "seconds"], rows))


if __name__ == "__main__":
    main()
