"""Training speed of the default custom net at 32 px: `fit` vs the same model in plain loops.

    python -m bench.train_speed [--rounds 3] [--images 10000]

CIFAR-10 (../shared/data), one epoch over the first N training images per measurement, rounds
interleaved (kit, plain, users' ...). Three ways to train the same model with the same batch size:
  kit      kitlib.train.fit: cached uint8 pixels, batched augmentation on the device, the precision and
           memory format it picks for this machine, EMA, validation excluded from the timing;
  plain    the model in a plain fp32 eager loop over in-memory float tensors (no augmentation):
           the compute-only reference;
  users'   what the users ran: ImageFolder + DataLoader(num_workers=2) with per-image RandomCrop,
           flip, ToTensor, Normalize, feeding the fp32 eager loop.
The kit trains at the full 32 px here (resize_from=1: no progressive resizing), so that all three
do the same work per image. Also printed: the GFLOP/s of a plain 2048 x 2048 matmul in fp32 and in
bf16 on this CPU, which say whether bf16 autocast pays here (runtime.pick_precision decides).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from bench.common import interleave, machine, median, ratios, table, timed, unpacked
from kitlib import models, runtime
from kitlib.data import load_competition
from kitlib.data import prepare
from kitlib.train import TrainConfig
from kitlib.train.recipe import resolve
from kitlib.train import fit


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=10000)
    args = parser.parse_args()
    runtime.set_threads()
    root = unpacked("cifar10-jpg.tar.gz")
    competition = load_competition(root)
    subset = competition.samples.iloc[:: len(competition.samples) // args.images].head(args.images)
    data = prepare(dataclasses.replace(competition, samples=subset.reset_index(drop=True)), val_fraction=0.02,
                   progress=False)
    config = TrainConfig(epochs=1, progress=False, images_dir=None, resize_from=1.0)
    resolved = resolve(config, data, torch.device("cpu"))
    n = len(data.train_index)

    def kit() -> float:
        with tempfile.TemporaryDirectory() as run:
            return fit(data, config, run).history[-1]["train_images_per_s"]

    x = (data.images[data.train_index].float() / 255 - 0.5) / 0.25  # (n, 3, 32, 32): pre-normalized floats
    y = data.targets[data.train_index]

    def eager_epoch(batches) -> float:
        model = models.create(resolved.model, 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        model.train()
        started, seen = time.perf_counter(), 0
        for images, labels in batches:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(images)
        return seen / (time.perf_counter() - started)

    def plain() -> float:
        order = torch.randperm(n)
        size = resolved.batch_size
        return eager_epoch((x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, n, size))

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((0.5,) * 3, (0.25,) * 3)])
    folder = torchvision.datasets.ImageFolder(root / "train", transform=transform)
    wanted = set(map(str, subset["image"]))
    users_set = Subset(folder, [i for i, (p, _) in enumerate(folder.samples) if p in wanted])

    def users() -> float:
        return eager_epoch(DataLoader(users_set, batch_size=resolved.batch_size, shuffle=True, num_workers=2))

    results = interleave({"kit": kit, "plain": plain, "users": users}, rounds=args.rounds)
    print(f"\n{machine()}; {resolved.model} at 32 px, batch {resolved.batch_size}, kit precision "
          f"{resolved.precision}, channels_last {resolved.channels_last}; {n} CIFAR-10 images per epoch; "
          f"median of {args.rounds} interleaved rounds; matmul GFLOP/s fp32 {matmul_gflops(torch.float32):.0f}, "
          f"bf16 {matmul_gflops(torch.bfloat16):.0f}\n")
    print(table(["loop", "images/s", "kit is"], [
        ["kit `fit` (augmentation, EMA included)", f"{median(results['kit']):,.0f}", "1.0x"],
        ["plain fp32 eager loop, in-memory tensors, no augmentation", f"{median(results['plain']):,.0f}",
         f"{ratios(results['kit'], results['plain']):.2f}x"],
        ["users' loop: ImageFolder + DataLoader(num_workers=2) + fp32 eager", f"{median(results['users']):,.0f}",
         f"{ratios(results['kit'], results['users']):.2f}x"],
    ]))


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an n x n matmul in `dtype` on this CPU (median of `repeats`)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    times = [timed(lambda: a @ b) for _ in range(repeats)]
    return 2 * n**3 / median(times) / 1e9


if __name__ == "__main__":
    main()
