"""The machine the kit runs on: CPU threads, device, numeric precision, seeding."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from kitlib.errors import KitError

PRECISIONS = ("bf16", "fp16", "fp32")


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None = None) -> int:
    """Pin torch's intra-op threads (default: every core; `$KIT_THREADS`) and return the number.

    On a 2-core machine, 2 torch threads beside a busy DataLoader worker make small ops
    50-100x slower (OpenMP oversubscription); the kit keeps decoded data in memory and uses
    no loader workers, so all cores go to torch. Also keeps freed memory (see keep_freed_memory).
    """
    threads = threads or int(os.environ.get("KIT_THREADS", 0)) or cpu_count()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    return threads


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory instead of returning it to the OS after every batch; False elsewhere.

    Each fresh batch tensor (~10 MB) was otherwise paid again in page faults: about half the CPU
    time of batched augmentation on a small VM. PyTorch's CPU tuning guide gets the same from jemalloc.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else CUDA, then Apple MPS, then the CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512-BF16, where bf16 matmuls beat fp32 (elsewhere ~100x slower)."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:  # probe unsupported on this build
                continue
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = cpuinfo.read_text(errors="ignore")
        return " amx_bf16" in flags or " avx512_bf16" in flags
    return False


def pick_precision(device: torch.device, precision: str = "auto") -> str:
    """The fastest safe autocast precision for `device`: 'bf16', 'fp16' or 'fp32'.

    bf16 on Ampere-or-newer GPUs and on CPUs with AMX / AVX-512-BF16; fp16 (with a gradient
    scaler) on older CUDA GPUs such as the T4; fp32 everywhere else.
    """
    if precision != "auto":
        if precision not in PRECISIONS:
            raise KitError(f"precision {precision!r}: choose one of auto, {', '.join(PRECISIONS)}.")
        return precision
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    if device.type == "cpu":
        return "bf16" if _cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` ('fp32' gives a no-op context)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cache_dir(kind: str = "") -> Path:
    """The kit's cache folder (`$KIT_CACHE_DIR`, default ~/.cache/kit), never inside a data folder."""
    root = Path(os.environ.get("KIT_CACHE_DIR") or Path.home() / ".cache" / "kit")
    path = root / kind if kind else root
    path.mkdir(parents=True, exist_ok=True)
    return path
