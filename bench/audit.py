"""Does the audit pay for its time? `all` with and without it, on a competition with known defects.

    python -m bench.audit [--budget 300] [--rounds 2] [--per-class 600]

A course-layout competition (train_data/img_XXXX.png, train_labels.csv, test_data/,
sample_submission.csv) is written from CIFAR-10 (../shared/data): `--per-class` training images a
class and 200 test images a class, with defects injected into the training set as the course's
data had them: 10 % of labels flipped to another class, 1 % blank images, 1 % foreign images
(handwritten digits, rendered as the demo's) and 1 % duplicated images. Then, interleaved in one process group,
`python -m kitlib all COMP --time-budget B --audit MODE` for each MODE:
  none   train on every sample;
  quick  drop the blank, duplicate and alien images found without models (the default below 1,200 s);
  full   4 fold models in a quarter of the training time score every sample; train without the
         suspects; predict with the final model and the fold models (the default from 1,200 s).
Reported: test macro-F1 of each, and each audit's precision and recall per injected defect (first round).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from bench.common import interleave, machine, median, table, unpacked
from kitlib.data.demo import render_digit
from kitlib.files import write_csv

DEFECT_SHARE = {"mislabeled": 0.10, "blank": 0.01, "alien": 0.01, "duplicate": 0.01}


def build(out: Path, per_class: int, seed: int = 0) -> Path:
    """Write the noisy competition to out/competition; answers.csv and defects.csv beside it."""
    cifar = unpacked("cifar10-jpg.tar.gz")
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (cifar / "train").iterdir())
    comp = out / "competition"
    (comp / "train_data").mkdir(parents=True)
    (comp / "test_data").mkdir()
    train = [(f, c) for c in classes for f in sorted((cifar / "train" / c).iterdir())[:per_class]]
    order = rng.permutation(len(train))
    train = [train[i] for i in order]
    images = [np.asarray(Image.open(f).convert("RGB")) for f, _ in train]
    labels = [c for _, c in train]
    n = len(train)
    picks = iter(rng.permutation(n))
    defects = []
    for _ in range(round(DEFECT_SHARE["mislabeled"] * n)):
        i = next(picks)
        true = labels[i]
        labels[i] = classes[(classes.index(true) + rng.integers(1, len(classes))) % len(classes)]
        defects.append([i, "mislabeled", true, None])
    for _ in range(round(DEFECT_SHARE["blank"] * n)):
        i = next(picks)
        images[i] = np.full((32, 32, 3), rng.integers(0, 256, 3), np.uint8)
        defects.append([i, "blank", labels[i], None])
    digits = load_digits().images  # foreign to the task: scanned handwritten digits, rendered as the demo's
    for j in range(round(DEFECT_SHARE["alien"] * n)):
        i = next(picks)
        images[i] = render_digit(digits[j], rng)[0]
        defects.append([i, "alien", "", None])
    for _ in range(round(DEFECT_SHARE["duplicate"] * n)):
        i, source = next(picks), next(picks)
        images[i], labels[i] = images[source], labels[source]
        defects.append([i, "duplicate", labels[source], source])
    names = [f"img_{i:05d}.png" for i in range(n)]
    for name, image in zip(names, images):
        Image.fromarray(image).save(comp / "train_data" / name)
    write_csv(comp / "train_labels.csv", ["sample_index", "label"], [[a, b] for a, b in zip(names, labels)])
    test = [(f, c) for c in classes for f in sorted((cifar / "test" / c).iterdir())[:200]]
    test_names = [f"img_{i:05d}.png" for i in range(len(test))]
    for name, (f, _) in zip(test_names, test):
        Image.open(f).convert("RGB").save(comp / "test_data" / name)
    write_csv(comp / "sample_submission.csv", ["sample_index", "label"], [[name, classes[0]] for name in test_names])
    write_csv(out / "answers.csv", ["sample_index", "label"], [[name, c] for name, (_, c) in zip(test_names, test)])
    write_csv(out / "defects.csv", ["sample_index", "defect", "true_label", "copy_of"],
              [[names[i], k, t, "" if c is None else names[c]] for i, k, t, c in defects])
    return comp


def run_all(comp: Path, run: Path, budget: float, audit: str) -> float:
    """Test macro-F1 (%) of `python -m kitlib all --audit AUDIT` on the competition."""
    command = [sys.executable, "-m", "kitlib", "all", str(comp), "--out", str(run), "--time-budget", str(budget),
               "--audit", audit]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answers = pd.read_csv(comp.parent / "answers.csv", dtype=str)
    submission = pd.read_csv(run / "submission.csv", dtype=str)
    return 100 * f1_score(answers["label"], submission["label"], average="macro")


def detection(comp: Path, audit_dir: Path) -> list[list[str]]:
    """Rows (defect, injected, flagged as it, precision, recall) of one audit against the injected defects."""
    defects = pd.read_csv(comp.parent / "defects.csv", dtype=str, keep_default_na=False)
    suspects = pd.read_csv(audit_dir / "suspects.csv", dtype=str, keep_default_na=False)
    scores = pd.read_csv(audit_dir / "scores.csv", dtype=str, keep_default_na=False)
    rows = []
    for kind in DEFECT_SHARE:
        injected = defects[defects["defect"] == kind]
        flagged = suspects[suspects["issue"] == kind]
        if kind == "duplicate":  # a pair, either copy flagged as the duplicate of the other
            pairs = {frozenset(p) for p in zip(injected["sample_index"], injected["copy_of"])}
            of = scores.set_index("sample_index")["duplicate_of"]
            found = {frozenset((s, of[s])) for s in flagged["sample_index"]}
            hit = len(found & pairs)
        else:
            hit = len(set(flagged["sample_index"]) & set(injected["sample_index"]))
        rows.append([kind, str(len(injected)), str(len(flagged)), f"{hit / max(len(flagged), 1):.2f}",
                     f"{hit / len(injected):.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300, help="seconds for each `all` command")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=600)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        comp = build(Path(tmp), args.per_class)
        counter = iter(range(1000))
        modes = ("none", "quick", "full")
        results = interleave({mode: (lambda mode=mode: run_all(comp, Path(tmp) / f"{mode}{next(counter)}",
                                                               args.budget, mode)) for mode in modes},
                             rounds=args.rounds)
        print(table(["`all --audit`", "test macro-F1 (%), median", "rounds"],
                    [[name, f"{median(v):.1f}", ", ".join(f"{x:.1f}" for x in v)] for name, v in results.items()]))
        for mode, first in (("quick", 1), ("full", 2)):
            print(f"{mode} audit, first round:")
            print(table(["injected defect", "count", "flagged as it", "precision", "recall"],
                        detection(comp, Path(tmp) / f"{mode}{first}")))


if __name__ == "__main__":
    main()
