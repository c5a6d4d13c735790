"""Reading slides with masks on a cold cache: the kit's preparation vs the plain script's tile cutting.

    python -m bench.slide_reading [--slides 120] [--rounds 3] [--baseline /path/to/an/older/checkout]

Writes a course-like competition into a temporary folder: `--slides` slides of 1,100-1,700 x 900-1,400 px
(PNGs of stained tissue, bench/defects.py), each with a binary mask file of its size. Then, each in a
fresh process and with an empty cache, interleaved A B A B ...:
- kit: what `all` does before training on slides (kitlib.data.prepare_for, masks tiles): the images' sizes,
  the 64 px tiles at native resolution (kitlib.data.tiles) and the 64 px images and masks that the audit
  and the figures read (kitlib.data.cache);
- baseline (with `--baseline`): the same from another checkout of the kit;
- plain: bench/plain_tiles.py's `tiles()` over every slide (PIL, one process): the tiles only.
Reported: seconds (median over rounds) and slides/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import machine, median, table
from bench.defects import tissue
from kitlib.files import write_csv

ROOT = Path(__file__).resolve().parents[1]

KIT = """
import sys, time
import torch
torch.set_num_threads(2)
from kitlib.data import load_competition, prepare_for
from kitlib.train import TrainConfig
competition = load_competition(sys.argv[1])
started = time.perf_counter()
prepare_for(competition, TrainConfig(masks="tiles", device="cpu", progress=False))
print("SECONDS", time.perf_counter() - started)
"""

PLAIN = """
import sys, time
from pathlib import Path
import numpy as np
from PIL import Image
source = Path(sys.argv[2]).read_text()  # bench/plain_tiles.py: its tile size and its tiles() function, as written
for first, end in (("T, STRIDE =", "\\n"), ("def tiles(", "\\n\\n\\n")):
    start = source.index(first)
    exec(source[start:source.index(end, start)])
root = sys.argv[1]
started = time.perf_counter()
for path in sorted(Path(root, "train_data").glob("img_*.png")):
    tiles(path.name, "train_data")
print("SECONDS", time.perf_counter() - started)
"""


def write_slides(root: Path, count: int, seed: int = 0) -> None:
    """A competition in the course's layout: `count` slides (train_data/img_XXXX.png) with a mask each
    (mask_XXXX.png: two ellipses of diseased region), two classes in train_labels.csv; no test set."""
    rng = np.random.default_rng(seed)
    folder = root / "train_data"
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(root / "train_labels.csv", ["sample_index", "label"], [[f"img_{i:04d}.png", "HER2(+)" if i % 2 else "Luminal A"]
                                          for i in range(count)])
    for i in range(count):
        h, w = int(rng.integers(900, 1400)), int(rng.integers(1100, 1700))
        side = max(h, w) // 3 + 1
        small = Image.fromarray(tissue(rng, side)).resize((3 * side, 3 * side), Image.BILINEAR)
        Image.fromarray(np.asarray(small)[:h, :w]).save(folder / f"img_{i:04d}.png")
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        for _ in range(2):
            cy, cx, ry, rx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, h / 8, w / 6
            mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"mask_{i:04d}.png")


def seconds(code: str, folder: Path, checkout: Path) -> float:
    """Run `code` on `folder` in a fresh process importing kitlib from `checkout`, with an empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(checkout), "KIT_CACHE_DIR": cache}
        out = subprocess.run([sys.executable, "-c", code, str(folder), str(ROOT / "bench" / "plain_tiles.py")],
                             env=env, cwd=cache, check=True,
                             capture_output=True, text=True).stdout
    return float(next(line for line in out.splitlines() if line.startswith("SECONDS")).split()[1])


def main() -> None:
    """Run the benchmark and print the README table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout of the kit to run beside this one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "slides"
        write_slides(root, args.slides)
        folder = root / "train_data"
        megabytes = sum(p.stat().st_size for p in folder.glob("img_*.png")) / 2**20
        for path in folder.iterdir():  # warm the page cache once, so no side pays for the first disk read
            path.read_bytes()
        candidates = {"kit": (KIT, ROOT)}
        if args.baseline:
            candidates["baseline"] = (KIT, args.baseline.resolve())
        candidates["plain"] = (PLAIN, ROOT)
        results: dict[str, list[float]] = {name: [] for name in candidates}
        for r in range(args.rounds):
            for name, (code, checkout) in candidates.items():
                results[name].append(seconds(code, root, checkout))
                print(f"round {r + 1}/{args.rounds}  {name}: {results[name][-1]:.2f} s", flush=True)
    print(f"\n{machine()}; {args.slides} slides, {megabytes / args.slides:.1f} MB a PNG on average\n")
    rows = [[name, f"{median(values):.2f}", f"{args.slides / median(values):.1f}"] for name, values in results.items()]
    print(table(["candidate", "seconds (median)", "slides/s"], rows))


if __name__ == "__main__":
    main()
