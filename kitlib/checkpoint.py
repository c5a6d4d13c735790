"""Checkpoints: written atomically, self-describing, enough to resume or to predict.

A checkpoint is one dict saved with torch.save (format below). `last.pt` carries everything a
resume needs; `best.pt` carries the inference weights of the best epoch. Both hold the model's
recipe (name, classes, normalization), so predicting needs no other file. Writes go to a
temporary file in the same folder, are flushed to disk, then renamed over the old file: a
process killed mid-write (a Colab disconnect) leaves the previous checkpoint intact. Rename is
atomic on local disks and on Google Drive's mount alike.

Format 1:
    format, kit_version, git_commit, config (dict), model (create() arguments), classes,
    normalization {mean, std, size, cache_size, fit}, epoch, step, metrics (of the saved epoch),
    state_dict (inference weights: the EMA's when EMA is on), and in last.pt: train_state
    {model, ema, optimizer, scaler, plateau, history, best, elapsed, rng}.
"""

from __future__ import annotations

import pickle
import random
import subprocess
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import kitlib
from kitlib.errors import KitError
from kitlib.files import file_kind, first_sentence, replace_atomically

FORMAT = 1


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The kit's git commit (with '-dirty' when it has uncommitted changes), or None outside git."""
    repo = Path(kitlib.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def rng_state() -> dict:
    """Every random generator's state: Python, NumPy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(checkpoint: dict, path: str | Path) -> Path:
    """Write `checkpoint` to `path` atomically (temporary file, fsync, rename)."""
    checkpoint = {"format": FORMAT, "kit_version": kitlib.__version__, "git_commit": git_commit(),
                  **checkpoint}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)

    return replace_atomically(path, write)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint file written by `save`; KitError naming the file and what it seems to be for anything else.

    An HTML page (a failed download), an empty or cut-off file, a Git LFS pointer, an image, a
    folder: each is one line, never torch's traceback.
    """
    path = Path(path)
    if path.is_dir():
        raise KitError(f"{path}: a folder, not a checkpoint. Pass the checkpoint file in it (best.pt or last.pt).")
    if not path.exists():
        raise KitError(f"{path}: no checkpoint here. Pass a checkpoint written by `python -m kitlib train` "
                       "(RUN/best.pt).")
    kind = file_kind(path)
    again = "Copy or download it again, or pass the run folder written by `python -m kitlib train`."
    if not kind.startswith(("a PyTorch file", "a ZIP archive", "a Python pickle")):
        raise KitError(f"{path}: {kind}, not a kit checkpoint. {again}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError, ImportError, IndexError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: {kind} that torch cannot read ({first_sentence(error)}): cut off or damaged. "
                       f"{again}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise KitError(f"{path}: not a kit checkpoint of format {FORMAT}.")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint file, weights loaded, in eval mode; and the checkpoint."""
    from kitlib import models

    checkpoint = load(path)
    try:
        spec = checkpoint["model"]
        # pretrained=False: the checkpoint holds every weight, no download or weights file is needed
        model = models.create(spec["name"], spec["num_classes"], norm=spec["norm"],
                              in_channels=spec.get("in_channels", 3), **spec["options"])
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError) as error:  # a kit checkpoint edited or damaged by hand
        raise KitError(f"{path}: a kit checkpoint whose model cannot be rebuilt ({type(error).__name__}: "
                       f"{first_sentence(error)}). Retrain it.") from error
    return model.to(device).eval(), checkpoint
