"""Augmented, normalized training batches per second: the kit vs per-image PIL transforms.

    python -m bench.pipeline [--rounds 3] [--sizes 64 224] [--policy trivial|rand]

Data: Tiny ImageNet-100c's train split (10,000 JPEGs, 64x64). Both sides apply the same families:
an automated policy (TrivialAugmentWide or RandAugment), ColorJitter(0.4, 0.4, 0.4, 0.1),
rotation up to 15 degrees, horizontal flip (p=0.5), vertical flip (p=0.05), resize to the model's
size and normalize. The peer is what users ran: torchvision ImageFolder + DataLoader(num_workers=2,
batch 256) with per-image PIL transforms, 1 torch thread in the main process. The kit starts from
the decoded uint8 tensor in memory (kitlib.data.cache.decode, built once, not timed) and augments whole
batches of 256 with 2 torch threads and no workers; picking each batch from the cache is timed.
Rounds alternate kit and peer (A B A B ...) in one process; medians are reported.

Two process settings apply to both sides (the peer's workers inherit them), each worth up to an
order of magnitude to the kit on a small shared VM; --default-process measures without them:
  - OMP_WAIT_POLICY=PASSIVE (set before torch loads OpenMP): idle OpenMP threads sleep instead of
    spinning, so 2 threads beside other busy processes do not stall each other (measured here under
    load: 330 -> 9,500 img/s for the kit at 64 px);
  - glibc keeps freed memory (mallopt), so each fresh 10 MB batch tensor is not paid again in page
    faults (about half the kit's CPU time per batch on this VM).
"""

from __future__ import annotations

import os
import sys

if "--default-process" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede `import torch`

import argparse  # noqa: E402
import resource  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from bench.common import interleave, machine, median, ratios, table, timed, unpacked  # noqa: E402
from kitlib import augment, runtime  # noqa: E402
from kitlib.data.cache import decode  # noqa: E402
from kitlib.data import load_competition  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH = 256


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the DataLoader's workers), in seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def kit_ops(policy: str) -> list:
    """The kit's version of the peer's transform list."""
    first = augment.TrivialAugment() if policy == "trivial" else augment.RandAugment()
    return [first, augment.ColorJitter(0.4, 0.4, 0.4, 0.1), augment.Rotate(15), augment.Flip(0.5),
            augment.Flip(0.05, vertical=True)]


def peer_transform(policy: str, size: int):
    """The per-image PIL pipeline users had."""
    first = T.TrivialAugmentWide() if policy == "trivial" else T.RandAugment()
    return T.Compose([T.Resize((size, size)), first, T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.RandomRotation(15),
                      T.RandomHorizontalFlip(), T.RandomVerticalFlip(0.05), T.ToTensor(), T.Normalize(MEAN, STD)])


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--policy", choices=("trivial", "rand"), default="trivial")
    parser.add_argument("--limit", type=int, default=None, help="images per round (default: all 10,000)")
    parser.add_argument("--kit-threads", type=int, default=2)
    parser.add_argument("--default-process", action="store_true",
                        help="leave OpenMP's wait policy and glibc's allocator at their defaults")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other processes on this machine skew both sides, the kit's threads more
    kept = False if args.default_process else runtime.keep_freed_memory()
    root = unpacked("tiny-imagenet-100c.tar.gz") / "tiny-imagenet-100c"
    competition = load_competition(root)
    train = (competition.samples["split"] == "train").to_numpy()
    paths = list(competition.samples["image"][train])[: args.limit]
    labels = torch.tensor(competition.targets[train].to_numpy()[: args.limit])
    cache = decode(paths, size=(64, 64)).images  # (N, 3, 64, 64) uint8, built once
    n = len(paths)
    for path in paths:  # warm the page cache, so no side pays for the first disk read
        path.read_bytes()

    rows, log = [], []
    for size in args.sizes:
        transform = augment.train_transform(kit_ops(args.policy), size=(size, size), mean=MEAN, std=STD,
                                            num_classes=len(competition.classes))
        generator = torch.Generator().manual_seed(0)

        per_cpu_second = {"kit": [], "peer": []}  # images per CPU-second: the work, whatever the load

        def kit_epoch() -> float:
            torch.set_num_threads(args.kit_threads)
            order = torch.randperm(n, generator=generator)

            def run():
                for start in range(0, n, BATCH):
                    index = order[start:start + BATCH]  # index_select: 20x faster than cache[index] on uint8
                    transform(cache.index_select(0, index), labels[index], generator=generator)
            return measured(run, per_cpu_second["kit"])

        def peer_epoch() -> float:
            torch.set_num_threads(1)
            files = torchvision.datasets.ImageFolder(root / "train", transform=peer_transform(args.policy, size))
            loader = DataLoader(Subset(files, range(n)), batch_size=BATCH, shuffle=True, num_workers=2)
            return measured(lambda: [None for _ in loader], per_cpu_second["peer"])

        def measured(fn, cpu_rates: list) -> float:
            """Images per wall-clock second; appends images per CPU-second (this process and its workers)."""
            before = cpu_seconds()
            rate = n / timed(fn)
            cpu_rates.append(n / (cpu_seconds() - before))
            return rate

        print(f"--- {size} px ---", flush=True)
        results = interleave({"kit": kit_epoch, "peer": peer_epoch}, rounds=args.rounds)
        kit, peer = median(results["kit"]), median(results["peer"])
        cpu = per_cpu_second
        rows.append([f"{size} px", f"{peer:,.0f}", f"{kit:,.0f}", f"{ratios(results['kit'], results['peer']):.1f}x",
                     f"{median(cpu['peer']):,.0f} / {median(cpu['kit']):,.0f} ({ratios(cpu['kit'], cpu['peer']):.1f}x)"])
        log.append((size, results))
    policy = "TrivialAugmentWide" if args.policy == "trivial" else "RandAugment"
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"\n{machine()}; kit {args.kit_threads} threads; OMP_WAIT_POLICY={wait}; "
          f"glibc keeps freed memory: {kept}; {n} Tiny ImageNet-100c train JPEGs (64x64); {policy} + ColorJitter + "
          f"rotation + flips + normalize; median of {args.rounds} interleaved rounds; 1-min load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print(table(["model input", "DataLoader(num_workers=2) + PIL, img/s", f"kit ({args.kit_threads} threads), img/s",
                 "kit / DataLoader (median ratio)", "img per CPU-second: DataLoader / kit"], rows))
    print(f"\ncommand: python -m bench.pipeline {' '.join(sys.argv[1:])}".rstrip())
    for size, results in log:
        print(f"{size} px rounds (img/s): kit {[round(v) for v in results['kit']]}, "
              f"peer {[round(v) for v in results['peer']]}")


if __name__ == "__main__":
    main()
