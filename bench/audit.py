"""Does the audit find what real challenges plant, and does it pay for its time inside `all`?

    python -m bench.audit labels                       # the confident-learning benchmark: seconds, no training
    python -m bench.audit rehearsal [--budgets 300 1200] [--per-class 300] [--modes none auto full] [--rounds 3]

`labels`: the confident-learning paper's CIFAR-10 benchmark (../shared/data/cl-cifar10-noisy: out-of-fold
ResNet-50 probabilities, 4 sparsities x 3 noise rates); precision, recall and F1 of cleanlab's default
filter (`find_label_issues`, prune_by_noise_rate), its confident_learning filter, cleanlab's noise model
read as a posterior, the kit's choice (`kitlib.audit.label_issues`: that filter or that posterior), the
kit's former margin rule, and the same number of highest losses.

`rehearsal`: a slide-like course-layout competition written from CIFAR-10 (../shared/data): each
image a 64 px tissue-like canvas with a CIFAR-10 object pasted at its native 32 px and a mask around
it; `--per-class` training and 100 test images a class. Planted in the training set as the course's
data had them: flipped labels, blank images, foreign images (photos of another domain from Tiny
ImageNet, drawings, screenshots, handwritten digits), cartoons that all carry one and the same mask
file, and stained duplicates (a green stain or an ink mark, maybe a small crop or a flip) filed
under another label (and a few under the same); in the test set, a few copies of training images.
Then, interleaved in one process group, `python -m kitlib all COMP --time-budget B --audit MODE` for
each budget and mode (default: none and auto; auto is the quick audit under a time budget). Reported: test macro-F1 of each, and
per planted kind the audit's precision, recall and F1, beside cleanlab's Datalab given the same
out-of-fold probabilities and features (the full audit's RUN/oof.npz) or, for the quick audit
(no models), its 8x8 thumbnails and, for the labels, the final model's first-cycle probabilities
(RUN/label_evidence.npz, kitlib.audit.dynamics).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from bench import defects
from bench.common import machine, table, unpacked
from kitlib import rundir
from kitlib.data.demo import render_digit
from kitlib.files import write_csv

SETTINGS = [(s, n) for s in ("0.0", "0.2", "0.4", "0.6") for n in ("0.2", "0.4", "0.6")]


def noisy_cifar(root: Path, sparsity: str, noise: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs (50000, 10) float64, given labels, true labels) of one setting of the confident-learning benchmark."""
    labels = json.loads((root / f"noisy_labels__sparsity_{sparsity}__noise_{noise}.json").read_text())
    probs = np.load(root / f"pred_probs__sparsity_{sparsity}__noise_{noise}.npy").astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    classes = sorted({path.split("/")[-2] for path in labels})
    truth = np.array([classes.index(path.split("/")[-2]) for path in labels])
    return probs, np.array(list(labels.values())), truth


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F1) of boolean flags against boolean truth."""
    hit = float((flagged & truth).sum())
    p, r = hit / max(int(flagged.sum()), 1), hit / max(int(truth.sum()), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def labels_benchmark() -> None:
    """Print the confident-learning benchmark table (README: Results)."""
    from kitlib.audit.labels import cleanlab_issues, label_issues, label_posterior, margin_issues

    root = unpacked("cl-cifar10-noisy.tar.gz") / "cl-cifar10-noisy"
    methods = ["cleanlab default (prune_by_noise_rate)", "cleanlab confident_learning", "noise-model posterior alone",
               "kit: confident_learning or posterior", "kit former (margin 0.5)", "top-k losses (k = kit's count)"]
    results = {m: [] for m in methods}
    rows = []
    for s, n in SETTINGS:
        probs, given, truth = noisy_cifar(root, s, n)
        wrong = given != truth
        kit, _, _ = label_issues(probs, given)
        loss = -np.log(probs[np.arange(len(given)), given] + 1e-12)
        top = np.zeros(len(given), bool)
        top[np.argsort(-loss, kind="stable")[:int(kit.sum())]] = True
        posterior = label_posterior(probs, given)[np.arange(len(given)), given] < 0.5
        flags = [cleanlab_issues(probs, given), cleanlab_issues(probs, given, "confident_learning"), posterior, kit,
                 margin_issues(probs, given)[0], top]
        row = [s, n, f"{wrong.mean():.3f}"]
        for m, f in zip(methods, flags):
            results[m].append(prf(f, wrong))
            row.append("{:.3f} / {:.3f} / {:.3f}".format(*results[m][-1]))
        rows.append(row)
        print(" ".join(row), flush=True)
    rows.append(["mean", "", ""] + ["{:.3f} / {:.3f} / **{:.3f}**".format(*np.mean(results[m], axis=0)) for m in methods])
    print(table(["sparsity", "noise", "actual noise"] + [f"{m}: P / R / F1" for m in methods], rows))


# --------------------------------------------------------------------------------------------- rehearsal

SIZE = 64
SHARE = {"mislabeled": 0.06, "blank": 0.01}
FOREIGN = {"photo": 15, "drawing": 10, "screenshot": 10, "digits": 10}
CARTOONS, STAINED, STAINED_SAME, LEAKS = 50, 40, 10, 5


def _slide(obj: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tissue canvas with `obj` (32 x 32 x 3) pasted at native resolution, and its mask (an irregular blob over it)."""
    canvas = defects.tissue(rng, SIZE)
    top, left = rng.integers(0, SIZE - 32, 2)
    canvas[top:top + 32, left:left + 32] = obj
    mask = Image.new("L", (SIZE, SIZE), 0)
    points = [(float(left + 16 + r * np.cos(a)), float(top + 16 + r * np.sin(a)))
              for a, r in zip(np.linspace(0, 2 * np.pi, 9)[:-1], rng.uniform(12, 20, 8))]
    ImageDraw.Draw(mask).polygon(points, fill=255)
    return canvas, np.asarray(mask)


def build(out: Path, per_class: int, seed: int = 0) -> Path:
    """Write the rehearsal competition to out/competition; answers.csv and defects.csv beside it."""
    cifar = unpacked("cifar10-jpg.tar.gz")
    tiny = unpacked("tiny-imagenet-100c.tar.gz") / "tiny-imagenet-100c"
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (cifar / "train").iterdir())
    comp = out / "competition"
    (comp / "train_data").mkdir(parents=True)
    (comp / "test_data").mkdir()
    train = [(f, c) for c in classes for f in sorted((cifar / "train" / c).iterdir())[:per_class]]
    train = [train[i] for i in rng.permutation(len(train))]
    slides = [_slide(np.asarray(Image.open(f).convert("RGB")), rng) for f, _ in train]
    images, masks = [s[0] for s in slides], [s[1] for s in slides]
    labels = [c for _, c in train]
    n = len(train)
    picks = iter(rng.permutation(n))
    planted = []  # [row, kind, true label, twin row]

    def other(label: str) -> str:
        return classes[(classes.index(label) + int(rng.integers(1, len(classes)))) % len(classes)]

    for _ in range(round(SHARE["mislabeled"] * n)):
        i = next(picks)
        planted.append([i, "mislabeled", labels[i], None])
        labels[i] = other(labels[i])
    for _ in range(round(SHARE["blank"] * n)):
        i = next(picks)
        images[i] = np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3), np.uint8)
        planted.append([i, "blank", labels[i], None])
    photos = sorted((tiny / "val" / "images").iterdir())
    digits = load_digits().images
    makers = {"photo": lambda j: np.asarray(Image.open(photos[j]).convert("RGB")),
              "drawing": lambda j: defects.drawing(rng, SIZE), "screenshot": lambda j: defects.screenshot(rng, SIZE),
              "digits": lambda j: np.asarray(Image.fromarray(render_digit(digits[j], rng)[0]).resize((SIZE, SIZE)))}
    for kind, count in FOREIGN.items():
        for j in range(count):
            i = next(picks)
            images[i] = makers[kind](j)
            planted.append([i, "foreign", kind, None])
    shared_mask = masks[next(picks)].copy()  # one mask file carried by every cartoon
    for _ in range(CARTOONS):
        i = next(picks)
        images[i], masks[i] = defects.cartoon(rng, SIZE), shared_mask
        planted.append([i, "cartoon", "", None])
    for j in range(STAINED):
        i, source = next(picks), next(picks)
        images[i], masks[i] = defects.stained_copy(images[source], rng), masks[source]
        labels[i] = labels[source] if j < STAINED_SAME else other(labels[source])
        planted.append([i, "stained", labels[source], source])
    names = [f"img_{i:05d}.png" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(images[i]).save(comp / "train_data" / name)
        Image.fromarray(masks[i]).save(comp / "train_data" / name.replace("img_", "mask_"))
    write_csv(comp / "train_labels.csv", ["sample_index", "label"], [[a, b] for a, b in zip(names, labels)])
    test = [(f, c) for c in classes for f in sorted((cifar / "test" / c).iterdir())[:100]]
    test_names = [f"img_{i:05d}.png" for i in range(len(test))]
    leaks = {int(t): int(s) for t, s in zip(rng.permutation(len(test))[:LEAKS], [next(picks) for _ in range(LEAKS)])}
    test_rows = []
    for t, (name, (f, c)) in enumerate(zip(test_names, test)):
        if t in leaks:  # a copy of a training slide, under its label
            image, mask, c = defects.stained_copy(images[leaks[t]], rng), masks[leaks[t]], labels[leaks[t]]
        else:
            image, mask = _slide(np.asarray(Image.open(f).convert("RGB")), rng)
        Image.fromarray(image).save(comp / "test_data" / name)
        Image.fromarray(mask).save(comp / "test_data" / name.replace("img_", "mask_"))
        test_rows.append([name, c])
    write_csv(comp / "sample_submission.csv", ["sample_index", "label"], [[name, classes[0]] for name in test_names])
    write_csv(out / "answers.csv", ["sample_index", "label"], test_rows)
    write_csv(out / "defects.csv", ["sample_index", "defect", "true_label", "twin"],
              [[names[i], k, t, "" if c is None else names[c]] for i, k, t, c in planted]
              + [[test_names[t], "leak", "", names[s]] for t, s in leaks.items()])
    return comp


def run_all(comp: Path, run: Path, budget: float, audit: str, seed: int = 0) -> float:
    """Test macro-F1 (%) of `python -m kitlib all --audit AUDIT --seed SEED` on the competition."""
    command = [sys.executable, "-m", "kitlib", "all", str(comp), "--out", str(run), "--time-budget", str(budget),
               "--audit", audit, "--seed", str(seed)]
    with open(run.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    answers = pd.read_csv(comp.parent / "answers.csv", dtype=str)
    submission = pd.read_csv(run / "submission.csv", dtype=str)
    return 100 * f1_score(answers["label"], submission["label"], average="macro")


def _pair_hits(flagged: pd.DataFrame, planted: pd.DataFrame) -> int:
    """How many flagged rows name a planted pair (the copy or its source, with the other as twin)."""
    pairs = {frozenset(p) for p in zip(planted["sample_index"], planted["twin"])}
    return sum(frozenset((a, b)) in pairs for a, b in zip(flagged["sample_index"], flagged["twin"]))


def kind_rows(found: dict[str, pd.DataFrame], planted: pd.DataFrame) -> dict[str, tuple[int, int, int]]:
    """{kind: (flagged, right, planted)} from {kind: flagged rows (sample_index, twin)}."""
    out = {}
    for kind, flagged in found.items():
        truth = planted[planted["defect"].isin(kind.split("+"))]
        if kind in ("stained", "leak"):
            right = _pair_hits(flagged, truth)
        else:
            right = int(flagged["sample_index"].isin(truth["sample_index"]).sum())
        out[kind] = (len(flagged), right, len(truth))
    return out


def audit_found(run: Path) -> dict[str, pd.DataFrame]:
    """What the kit's audit in RUN flagged, by planted kind."""
    s = pd.read_csv(run / "suspects.csv", dtype=str, keep_default_na=False)
    checks = pd.read_csv(run / "checks.csv", dtype=str, keep_default_na=False)
    return {"blank": s[s["issue"] == "blank"], "foreign+cartoon": s[s["issue"].isin(["alien", "shared_mask"])],
            "foreign": s[s["issue"] == "alien"], "cartoon": s[s["issue"] == "shared_mask"], "stained": s[s["issue"].isin(["duplicate", "conflict"])],
            "mislabeled": s[s["issue"] == "mislabeled"],
            "leak": checks[checks["check"] == "leak"]}


def datalab_found(run: Path, comp: Path) -> dict[str, pd.DataFrame]:
    """What cleanlab's Datalab flags given the same out-of-fold probabilities and features (or thumbnails)."""
    from cleanlab import Datalab

    from kitlib.audit.pixels import thumbnails
    from kitlib.data import load_competition, prepare

    competition = load_competition(comp)
    ids = list(competition.samples["sample_index"])
    labels = competition.targets.to_numpy()
    oof = run / "oof.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
        if oof.exists():
            saved = np.load(oof)
            assert list(saved["ids"]) == ids
            lab.find_issues(features=saved["features"], pred_probs=saved["probs"],
                            issue_types={"label": {}, "outlier": {}, "near_duplicate": {}})
        else:
            data = prepare(competition, val_fraction=0, progress=False)
            lab.find_issues(features=thumbnails(data.images).numpy(), issue_types={"outlier": {}, "near_duplicate": {}})
        issues = lab.get_issues()
        sets = lab.get_info("near_duplicate").get("near_duplicate_sets") if "is_near_duplicate_issue" in issues else None
    table_ = pd.DataFrame({"sample_index": ids})
    found = {}
    if "is_outlier_issue" in issues:
        found["foreign+cartoon"] = found["foreign"] = table_[issues["is_outlier_issue"].to_numpy()].assign(twin="")
    if sets is not None:
        flagged = np.flatnonzero(issues["is_near_duplicate_issue"].to_numpy())
        found["stained"] = pd.DataFrame([[ids[i], ids[int(j)]] for i in flagged for j in sets[i]],
                                        columns=["sample_index", "twin"])
    if "is_label_issue" in issues:
        found["mislabeled"] = table_[issues["is_label_issue"].to_numpy()].assign(twin="")
    evidence = rundir.read_label_evidence(run)
    if evidence is not None and "mislabeled" not in found:  # the quick audit: the first cycle's label evidence
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lab = Datalab(data={"label": evidence.targets}, label_name="label", verbosity=0)
            lab.find_issues(pred_probs=evidence.probs, issue_types={"label": {}})
        flagged = lab.get_issues()["is_label_issue"].to_numpy()
        found["mislabeled"] = pd.DataFrame({"sample_index": np.array(evidence.ids)[flagged], "twin": ""})
    return found


def _row(name: str, counts: tuple[int, int, int] | None) -> list[str]:
    if counts is None:
        return [name, "-", "-", "-", "-"]
    flagged, right, planted = counts
    p, r = right / max(flagged, 1), right / max(planted, 1)
    return [name, f"{flagged} ({right} right)", f"{p:.2f}", f"{r:.2f}", f"{2 * p * r / max(p + r, 1e-12):.2f}"]


def rehearsal(budgets: list[float], per_class: int, keep: Path | None, modes: list[str], rounds: int = 1,
              first_seed: int = 0) -> None:
    """Build the rehearsal, run `all` with and without the audit at each budget, print the tables.

    With `rounds` > 1 the runs repeat with the seeds first_seed, first_seed + 1, ... (split, augmentation,
    weights), interleaved (for each round: each budget, each mode), and each mode's difference to the first
    is summarised by its median over the rounds; the per-kind tables are those of the first round."""
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        comp = build(root, per_class)
        planted = pd.read_csv(root / "defects.csv", dtype=str, keep_default_na=False)
        print(f"rehearsal: {len(pd.read_csv(comp / 'train_labels.csv'))} training images, planted: "
              + ", ".join(f"{k} {v}" for k, v in planted["defect"].value_counts().items()), flush=True)
        f1s = {}  # (budget, mode) -> test macro-F1 of each round
        for seed in range(first_seed, first_seed + rounds):
            for budget in budgets:
                for audit in modes:
                    run = root / (f"{audit}{budget:.0f}" + (f"-seed{seed}" if seed != first_seed else ""))
                    f1 = run_all(comp, run, budget, audit, seed)
                    f1s.setdefault((budget, audit), []).append(f1)
                    print(f"all --time-budget {budget:.0f} --audit {audit} --seed {seed}: test macro-F1 {f1:.1f}",
                          flush=True)
        print(table(["--time-budget", "--audit", "test macro-F1 (%) by seed", "median",
                     f"median difference to --audit {modes[0]}"],
                    [[f"{b:.0f}", m, " / ".join(f"{f:.1f}" for f in f1s[b, m]), f"{np.median(f1s[b, m]):.1f}",
                      f"{np.median(np.subtract(f1s[b, m], f1s[b, modes[0]])):+.1f}"] for b in budgets for m in modes]))
        kinds = ["blank", "foreign+cartoon", "foreign", "cartoon", "stained", "leak", "mislabeled"]
        for budget, mode in ((b, m) for b in budgets for m in modes if m != "none"):
            run = root / f"{mode}{budget:.0f}"
            kit, lab = kind_rows(audit_found(run), planted), kind_rows(datalab_found(run, comp), planted)
            print(f"\n`all --time-budget {budget:.0f} --audit {mode}`: the kit's audit | cleanlab Datalab on the same inputs")
            rows = []
            for kind in kinds:
                rows.append(_row(kind, kit.get(kind)) + _row("", lab.get(kind))[1:])
            print(table(["planted kind", "kit: flagged", "P", "R", "F1", "Datalab: flagged", "P", "R", "F1"], rows))
            s = pd.read_csv(run / "suspects.csv", dtype=str, keep_default_na=False)
            cartoons = set(planted.loc[planted["defect"] == "cartoon", "sample_index"])
            groups = s[s["sample_index"].isin(cartoons) & (s["issue"] == "shared_mask")]["group"].unique()
            print(f"cartoons flagged as shared_mask: {len(groups)} group(s), "
                  f"{int(s['sample_index'].isin(cartoons).sum())} of {len(cartoons)} cartoons flagged as anything")
            conflicts = s[s["issue"] == "conflict"]
            copies = set(planted.loc[planted["defect"] == "stained", "sample_index"])
            print(f"conflicts: {len(conflicts)}, the planted copy named the wrong side in "
                  f"{int(conflicts['sample_index'].isin(copies).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("labels", help="the confident-learning benchmark (seconds)")
    rehearse = commands.add_parser("rehearsal", help="`all` with and without the audit on a planted competition")
    rehearse.add_argument("--budgets", type=float, nargs="+", default=[300, 1200], help="seconds of each `all`")
    rehearse.add_argument("--per-class", type=int, default=300)
    rehearse.add_argument("--keep", type=Path, help="build and run in this folder (kept) instead of a temporary one")
    rehearse.add_argument("--modes", nargs="+", default=["none", "auto"], choices=["none", "auto", "quick", "full"],
                          help="--audit modes of `all` to compare")
    rehearse.add_argument("--rounds", type=int, default=1, help="repeat every run with the next seeds, interleaved")
    rehearse.add_argument("--first-seed", type=int, default=0, help="`all --seed` of the first round")
    args = parser.parse_args()
    print(machine())
    if args.command == "labels":
        labels_benchmark()
    else:
        rehearsal(args.budgets, args.per_class, args.keep, args.modes, args.rounds, args.first_seed)


if __name__ == "__main__":
    main()
