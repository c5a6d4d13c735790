"""DDP on CPU: two processes with the gloo backend, launched by torchrun as on Kaggle's 2x T4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from kitlib import checkpoint
from kitlib.train.lr_find import lr_find
from kitlib.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_gloo_training(demo_root, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "resnet_small", "model_options": {"widths": [16, 32, 64], "stem_width": 16},
                                  "batch_size": 64, "epochs": 1, "progress": False, "images_dir": None}))
    env = {**os.environ, "KIT_THREADS": "1"}  # one thread per process on two cores
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "kitlib", "train", str(demo_root), "--out", str(tmp_path / "run"),
                           "--config", str(config)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # each process trains its half of the 1,198 training rows in batches of 32: 19 batches
    assert checkpoint.load(tmp_path / "run" / "last.pt")["step"] == 19
    assert list(pd.read_csv(tmp_path / "run" / "metrics.csv")["epoch"]) == [1]
    assert done.stdout.count("best epoch 1") == 1  # only rank 0 reports and writes


def test_lr_find_suggests_a_sane_rate(demo_root, tmp_path):
    from kitlib.data import load_competition
    from kitlib.data import prepare

    data = prepare(load_competition(demo_root), progress=False)
    found = lr_find(data, TrainConfig(model="resnet_small", progress=False), steps=100,
                    plot=tmp_path / "lr.png")
    assert 1e-4 < found.suggestion < 3.0
    assert len(found.lrs) == len(found.losses) <= 100 and (tmp_path / "lr.png").stat().st_size > 10_000
