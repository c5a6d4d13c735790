"""Shared fixtures: the real data sets of ../shared/data, unpacked once into the kit's cache."""

from __future__ import annotations

import os
from pathlib import Path

import kitlib  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads it)
import pytest
import torch

from bench.common import MissingData, unpacked

# Tests run in one process; pin threads so a parallel helper process cannot oversubscribe.
torch.set_num_threads(int(os.environ.get("KIT_TEST_THREADS", "2")))


def _unpacked(tarball: str) -> Path:
    try:
        return unpacked(tarball)
    except MissingData as reason:
        pytest.skip(str(reason))


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


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo competition (CSV layout, 1,497 train and 300 test digits), written once per session."""
    from kitlib.data.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo"))
