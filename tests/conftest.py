"""Shared fixtures: the real data sets of ../shared/data, unpacked once into the kit's cache."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tests run in one process; pin threads so a parallel helper process cannot oversubscribe.
torch.set_num_threads(int(os.environ.get("KIT_TEST_THREADS", "2")))


def _unpacked(tarball: str) -> Path:
    """Unpack ../shared/data/<tarball> into the cache (once) and return the folder it made."""
    src = SHARED_DATA / tarball
    if not src.exists():
        pytest.skip(f"{src} is absent: the real-data tests need ../shared/data beside the project")
    root = Path(os.environ.get("KIT_CACHE_DIR") or Path.home() / ".cache" / "kit") / "shared-data"
    dest = root / f"{tarball.removesuffix('.tar.gz')}-{src.stat().st_size}"
    if not (dest / ".done").exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(src) as tar:
            tar.extractall(tmp, filter="data")
        if dest.exists():  # a half-finished earlier attempt
            import shutil

            shutil.rmtree(dest)
        tmp.rename(dest)
        (dest / ".done").touch()
    return dest


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """CIFAR-10 as ImageFolder: train/<class>/*.jpg (50,000) and test/<class>/*.jpg (10,000)."""
    return _unpacked("cifar10-jpg.tar.gz")


@pytest.fixture(scope="session")
def tiny_imagenet_root() -> Path:
    """Tiny ImageNet-100c in its own layout (wnids.txt, words.txt, train/, val/)."""
    return _unpacked("tiny-imagenet-100c.tar.gz") / "tiny-imagenet-100c"


@pytest.fixture(scope="session")
def cl_noisy_root() -> Path:
    """The confident-learning benchmark's out-of-fold probabilities and noisy labels."""
    return _unpacked("cl-cifar10-noisy.tar.gz") / "cl-cifar10-noisy"
