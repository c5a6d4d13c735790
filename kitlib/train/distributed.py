"""Data-parallel training over N processes (Kaggle's 2x T4), launched by torchrun.

    torchrun --nproc_per_node 2 -m kitlib train DATA --out RUN      # from a shell
    kitlib.train.distributed.launch(["train", DATA, "--out", RUN], nproc=2)  # from a notebook cell

`fit` calls `setup()`: under torchrun it joins the process group (NCCL on GPUs, gloo on CPUs),
pins each process to its GPU, and returns a Context; in a plain process it returns a
single-process Context whose collectives do nothing. Every process trains on its own shard of
each epoch; gradients are averaged by DistributedDataParallel; only rank 0 writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands in the group."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None
    """The device torchrun assigned (cuda:LOCAL_RANK), or None to choose as usual."""

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model wrapped in DistributedDataParallel (unchanged in a single process)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every process if `flag` is True on any (so all stop at the same batch)."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over every process, in place (unchanged in a single process)."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        """Wait for every process."""
        if self.world > 1:
            dist.barrier()


def setup() -> Context:
    """Join torchrun's process group when launched by it; a single-process Context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device is not None else "gloo")
    return Context(rank=rank, world=world, device=device or torch.device("cpu"))


def launch(args: list[str], nproc: int | None = None) -> int:
    """Run `python -m kitlib ARGS` under torchrun with `nproc` processes (default: one per GPU); return its exit code.

    From a notebook: `launch(["train", "data/comp", "--out", "runs/ddp"])`. Output streams into the cell.
    """
    nproc = nproc or max(torch.cuda.device_count(), 1)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "kitlib", *args]
    print(" ".join(command))
    return subprocess.run(command, check=False).returncode
