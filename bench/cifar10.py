"""Time to accuracy on CIFAR-10 with a 10-minute CPU budget each: the kit vs the users' and timm's recipes.

    python -m bench.cifar10 [--budget 600] [--test-images 10000]
    python -m bench.cifar10 --budget 300 --no-peers --kit-variant '{"batch_size": 256}'   # recipe ablations

All three train on CIFAR-10's 50,000 training JPEGs (../shared/data) for `--budget` seconds of wall
clock (data loading and decoding included, the final test pass not) and are scored on the test set:
  kit     `kitlib.train.train` with its default recipe as `all` runs it (the validation samples join the
          training set for the last cycle: join_at), then its predictions with the TTA `all` uses
          (kitlib.augment.matching_tta: hflip+shifts for the default policies);
  users'  the homework recipe (seeds/002): torchvision mobilenet_v2 from scratch at 224 px, SGD lr 0.1
          momentum 0.9 weight decay 1e-4, CyclicLR triangular2 (0.01-0.1, 5 epochs up), their
          per-image augmentations, ImageFolder + DataLoader(num_workers=2);
  timm    timm's resnet18 with its usual CIFAR recipe: SGD Nesterov lr 0.1 momentum 0.9 weight decay
          5e-4, label smoothing 0.1, cosine over the budget, RandomCrop(32, 4) + flip, DataLoader(2 workers).
The peers stop at the first batch past the budget (their schedules follow the budget's fraction).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from bench.common import machine, table, unpacked
from kitlib import runtime
from kitlib.augment import matching_tta
from kitlib.data import load_competition
from kitlib.predict import load_runs, predict_probs
from kitlib.train import TrainConfig
from kitlib.train.recipe import JOIN_AT
from kitlib.train.schedules import lr_factor
from kitlib.train import train

IMAGENET = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def kit(root: Path, budget: float, test_rows: list[int], options: dict | None = None) -> dict:
    """The kit's default recipe as `all` trains it (the validation samples join at JOIN_AT), with `options`
    overriding TrainConfig fields, end to end; the estimate is the run's own (its first cycle's hold-out score)."""
    started = time.perf_counter()
    competition = load_competition(root)
    with tempfile.TemporaryDirectory() as run:
        options = {"join_at": JOIN_AT, **(options or {})}
        result = train(competition, TrainConfig(time_budget=budget - (time.perf_counter() - started),
                                                images_dir=None, **options), run)
        seconds = time.perf_counter() - started
        test = competition.test.iloc[test_rows]
        config = json.loads((Path(run) / "config.json").read_text())
        probs = predict_probs(load_runs(run), test, tta=matching_tta(config["augment"]))
    truth = test["label"].map({c: i for i, c in enumerate(competition.classes)}).to_numpy()
    estimate = result.best.get("estimate") or result.best
    return {"seconds": seconds, "epochs": result.history[-1]["epoch"],
            "accuracy": float((probs.argmax(1) == truth).mean()), "estimate": estimate.get("val_accuracy"),
            "model": f"kit {config['model']} @{config['image_size']}"
                     + (f" (from {round(config['resize_from'] * config['image_size'])})"
                        if config["resize_from"] < 1 else "")}


def peer(model: torch.nn.Module, train_tf, test_tf, root: Path, budget: float, test_rows: list[int], *,
         lr: float, batch: int, schedule, weight_decay: float, nesterov: bool, smoothing: float) -> dict:
    """Train `model` with per-image transforms from a DataLoader until the budget is spent; test accuracy."""
    started = time.perf_counter()
    loader = DataLoader(torchvision.datasets.ImageFolder(root / "train", transform=train_tf),
                        batch_size=batch, shuffle=True, num_workers=2, persistent_workers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay,
                                nesterov=nesterov)
    epochs, done = 0, False
    while not done:
        model.train()
        for images, labels in loader:
            progress = (time.perf_counter() - started) / budget
            if progress >= 1:
                done = True
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * schedule(progress, epochs)
            loss = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
    seconds = time.perf_counter() - started
    test = Subset(torchvision.datasets.ImageFolder(root / "test", transform=test_tf), test_rows)
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(test, batch_size=256, num_workers=2):
            correct += int((model(images).argmax(1) == labels).sum())
    return {"seconds": seconds, "epochs": epochs, "accuracy": correct / len(test_rows)}


def triangular2(progress: float, epoch: int) -> float:
    """The users' CyclicLR(base 0.01, max 0.1, step_size_up=5 epochs, triangular2), stepped per epoch, as a factor of 0.1."""
    cycle = epoch // 10
    x = abs(epoch / 5 - 2 * cycle - 1)
    return (0.01 + (0.1 - 0.01) * max(0.0, 1 - x) / 2 ** cycle) / 0.1


def main() -> None:
    """Run the recipes one after another and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600)
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--kit-variant", action="append", default=[], type=json.loads, metavar="JSON",
                        help="also run the kit with these TrainConfig overrides (repeatable)")
    parser.add_argument("--no-peers", action="store_true", help="run the kit (and its variants) only")
    parser.add_argument("--no-default", action="store_true", help="skip the kit's default recipe (variants only)")
    args = parser.parse_args()
    runtime.set_threads()
    root = unpacked("cifar10-jpg.tar.gz")
    test_rows = list(np.linspace(0, 9999, args.test_images).round().astype(int))  # every class alike
    results = {} if args.no_default else {"kit": kit(root, args.budget, test_rows)}
    for options in args.kit_variant:
        results[f"kit {json.dumps(options)}"] = kit(root, args.budget, test_rows, options)
    if not args.no_peers:
        results.update(peers(root, args.budget, test_rows))
    print(f"\n{machine()}; budget {args.budget:.0f} s each; test accuracy on {args.test_images} CIFAR-10 test images\n")
    print(table(["recipe", "model", "trained for", "epochs", "its own estimate", "test accuracy"], [
        [name, r["model"], f"{r['seconds']:.0f} s", r["epochs"],
         f"{100 * r['estimate']:.1f} %" if r.get("estimate") is not None else "-", f"{100 * r['accuracy']:.1f} %"]
        for name, r in results.items()]))


def peers(root: Path, budget: float, test_rows: list[int]) -> dict:
    """The users' and timm's recipes."""
    import timm

    users_tf = T.Compose([T.Resize(224), T.ColorJitter(brightness=0.5, contrast=0.6), T.RandomRotation(45),
                          T.RandomHorizontalFlip(), T.RandomVerticalFlip(0.05), T.RandomGrayscale(0.2),
                          T.ToTensor(), IMAGENET])
    return {
        "users'": {"model": "mobilenet_v2 @224", **peer(
            torchvision.models.mobilenet_v2(num_classes=10), users_tf,
            T.Compose([T.Resize(224), T.ToTensor(), IMAGENET]), root, budget, test_rows,
            lr=0.1, batch=64, schedule=triangular2, weight_decay=1e-4, nesterov=False, smoothing=0.0)},
        "timm": {"model": "timm resnet18 @32", **peer(
            timm.create_model("resnet18", num_classes=10), T.Compose([T.RandomCrop(32, padding=4),
                                                                      T.RandomHorizontalFlip(), T.ToTensor(), IMAGENET]),
            T.Compose([T.ToTensor(), IMAGENET]), root, budget, test_rows, lr=0.1, batch=128,
            schedule=lambda p, e: lr_factor("cosine", p, warmup=0.05), weight_decay=5e-4, nesterov=True,
            smoothing=0.1)},
    }


if __name__ == "__main__":
    main()
