"""What every benchmark shares: the real data sets, interleaved timing, the README table."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tarfile
import time
from pathlib import Path
from typing import Callable

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class MissingData(RuntimeError):
    """../shared/data (or one of its tarballs) is not beside the project."""


def unpacked(tarball: str) -> Path:
    """Unpack ../shared/data/<tarball> once into the kit's cache and return the folder it made."""
    src = SHARED_DATA / tarball
    if not src.exists():
        raise MissingData(f"{src} is absent: the real-data tests and benchmarks need ../shared/data")
    root = Path(os.environ.get("KIT_CACHE_DIR") or Path.home() / ".cache" / "kit") / "shared-data"
    dest = root / f"{tarball.removesuffix('.tar.gz')}-{src.stat().st_size}"
    done = dest.with_name(dest.name + ".done")  # beside the data, not in it: the kit warns of leftovers there
    if not done.exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(src) as tar:
            tar.extractall(tmp, filter="data")
        if dest.exists():  # a half-finished earlier attempt
            shutil.rmtree(dest)
        tmp.rename(dest)
        done.touch()
    return dest


def interleave(candidates: dict[str, Callable[[], float]], rounds: int = 3) -> dict[str, list[float]]:
    """Run each candidate once per round, in turn (A B A B ...), so machine noise hits all alike.

    Each candidate returns its own measure (images/s, or seconds); all rounds are kept.
    """
    results: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds):
        for name, run in candidates.items():
            value = run()
            results[name].append(value)
            print(f"round {r + 1}/{rounds}  {name}: {value:,.1f}", flush=True)
    return results


def median(values: list[float]) -> float:
    """The median (robust to one slow round)."""
    return statistics.median(values)


def ratios(numerators: list[float], denominators: list[float]) -> float:
    """The median of round-by-round ratios (the kit and its peer measured back to back)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn` takes, by the wall clock."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> str:
    """One line describing where the numbers were taken."""
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table for the README."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
