"""Building and reloading the decoded-image cache vs one DataLoader pass over the same JPEGs.

    python -m bench.cache [--rounds 3]

The kit decodes CIFAR-10's 60,000 JPEGs once into a uint8 tensor (worker processes, every core);
the peer is what a user runs every epoch: torchvision ImageFolder + DataLoader(num_workers=2)
with ToTensor. Rounds alternate kit and peer; each kit round builds into an empty cache folder.
"""

from __future__ import annotations

import argparse
import tempfile

import pandas as pd
import torch
import torchvision
from torch.utils.data import ConcatDataset, DataLoader

from bench.common import interleave, machine, median, ratios, table, timed, unpacked
from kitlib.data.cache import decode_table
from kitlib.data import load_competition


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = unpacked("cifar10-jpg.tar.gz")
    competition = load_competition(root)
    files = pd.concat([competition.samples, competition.test], ignore_index=True)
    n = len(files)
    for path in files["image"]:  # warm the page cache once, so no side pays for the first disk read
        path.read_bytes()

    def kit_build() -> float:
        with tempfile.TemporaryDirectory() as folder:
            return n / timed(lambda: decode_table(files, size=32, cache=folder, progress=False))

    def peer_pass() -> float:
        transform = torchvision.transforms.ToTensor()
        dataset = ConcatDataset([torchvision.datasets.ImageFolder(root / split, transform=transform)
                                 for split in ("train", "test")])
        loader = DataLoader(dataset, batch_size=256, num_workers=2)
        return n / timed(lambda: [None for _ in loader])

    results = interleave({"kit build": kit_build, "DataLoader pass": peer_pass}, rounds=args.rounds)
    with tempfile.TemporaryDirectory() as folder:
        decode_table(files, size=32, cache=folder, progress=False)
        reload_s = [timed(lambda: decode_table(files, size=32, cache=folder, progress=False))
                    for _ in range(args.rounds)]
    build, peer = median(results["kit build"]), median(results["DataLoader pass"])
    reload = median(reload_s)
    print(f"\n{machine()}; {n} CIFAR-10 JPEGs (32x32); median of {args.rounds} interleaved rounds\n")
    print(table(["what", "images/s", "seconds", "vs DataLoader pass"], [
        ["DataLoader(num_workers=2) + ToTensor, one pass", f"{peer:,.0f}", f"{n / peer:.1f}", "1.0x"],
        ["kit: build the cache", f"{build:,.0f}", f"{n / build:.1f}",
         f"{ratios(results['kit build'], results['DataLoader pass']):.1f}x"],
        ["kit: reload the built cache", f"{n / reload:,.0f}", f"{reload:.2f}", f"{(n / peer) / reload:.0f}x"],
    ]))


if __name__ == "__main__":
    main()
