"""kitlib.train: end to end on the demo and CIFAR-10, resume (also after a real kill), budgets, schedules."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kitlib import checkpoint, models, runtime
from kitlib.data import load_competition
from kitlib.data import prepare
from kitlib.errors import KitError
from kitlib.data.dataset import decode_size
from kitlib.train import TrainConfig
from kitlib.train.schedules import Plateau, lr_factor
from kitlib.data import prepare_for
from kitlib.train import fit, sample_losses

from builders import csv_competition, noise_png

ROOT = Path(__file__).resolve().parents[1]
# a narrow kit ResNet: seconds per epoch on the demo's 1,197 training digits at 32 px
TINY = dict(model="resnet_small", model_options={"widths": [16, 32, 64], "stem_width": 16},
            batch_size=64, progress=False, images_dir=None)


@pytest.fixture(scope="module")
def demo_data(demo_root):
    return prepare(load_competition(demo_root), progress=False)


def test_schedule_curves():
    at = [0.0, 0.1, 0.25, 0.5, 1.0]
    assert [round(lr_factor("onecycle", p), 4) for p in at] == [0.04, 0.424, 1.0, 0.7525, 0.01]
    assert [round(lr_factor("cosine", p, warmup=0.1), 4) for p in at] == [0.01, 1.0, 0.9337, 0.591, 0.01]
    assert [round(lr_factor("triangular2", p, cycles=2), 4) for p in [0.0, 0.25, 0.5, 0.75, 1.0]] == \
        [0.01, 1.0, 0.01, 0.5, 0.01]
    assert [round(lr_factor("constant", p, warmup=0.1), 4) for p in at] == [0.01, 1.0, 1.0, 1.0, 1.0]
    plateau = Plateau(factor=0.5, patience=1)
    assert [plateau.update(s) for s in [0.5, 0.6, 0.6, 0.6, 0.7, 0.6, 0.6]] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    with pytest.raises(KitError, match="choose one of onecycle, cosine"):
        lr_factor("linear", 0.5)


def test_initial_loss_is_log_k(demo_data):
    model = models.create("resnet_small", 10).eval()
    images = demo_data.images[:256].float() / 255
    loss = sample_losses(model(images), demo_data.targets[:256]).mean().item()
    assert abs(loss - math.log(10)) < 0.05


def test_fit_end_to_end_then_resume(demo_data, tmp_path):
    run = tmp_path / "run"
    result = fit(demo_data, TrainConfig(epochs=2, **TINY), run)
    assert sorted(p.name for p in run.iterdir() if p.suffix != ".png") == [
        "best.pt", "config.json", "last.pt", "metrics.csv", "per_class_f1.csv", "tensorboard", "val.csv",
        "val_probs.npy"]
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and list(metrics["step"]) == [19, 38]
    assert metrics["val_macro_f1"].notna().all() and metrics["val_loss"].iloc[1] < math.log(10)
    assert np.load(run / "val_probs.npy").shape == (299, 10)  # 20 % of each class of 1,497
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["optimizer"], config["precision"], config["norm"]) == \
        ("resnet_small", "sgd", "bf16" if runtime._cpu_has_fast_bf16() else "fp32", "batch")
    model, saved = checkpoint.load_model(run / "best.pt")
    assert saved["classes"] == demo_data.classes and saved["normalization"]["size"] == [32, 32]
    assert result.best["epoch"] == saved["epoch"]
    resumed = fit(demo_data, TrainConfig(epochs=3, progress=False, images_dir=None), run, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [19, 38, 57]


def test_bf16_autocast_trains_on_cpu(demo_data, tmp_path):
    # the precision AMX / AVX-512-BF16 CPUs get by default; forced here, where it is only slower
    small = dataclasses.replace(demo_data, train_index=demo_data.train_index[:256], val_index=demo_data.val_index[:64])
    result = fit(small, TrainConfig(epochs=1, precision="bf16", **TINY), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"
    assert math.isfinite(result.history[-1]["train_loss"]) and result.history[-1]["step"] == 4
    model, _ = checkpoint.load_model(tmp_path / "run" / "best.pt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast keeps fp32 weights


def test_validation_batches_are_identical_across_epochs(demo_data, tmp_path, monkeypatch):
    """Validation sees the deterministic eval transform only: the same pixels every epoch."""
    import kitlib.train.loop as loop

    seen: list[torch.Tensor] = []
    original = loop.probabilities

    def recording(model, batches, transform, **options):
        batches = list(batches)
        seen.append(transform(batches[0][:64]))
        return original(model, batches, transform, **options)

    monkeypatch.setattr(loop, "probabilities", recording)
    fit(demo_data, TrainConfig(epochs=2, augment="strong", **TINY), tmp_path / "run")
    assert len(seen) >= 2 and torch.equal(seen[0], seen[1])


def test_time_budget_is_kept(demo_data, tmp_path):
    budget = 25.0
    started = time.perf_counter()
    result = fit(demo_data, TrainConfig(time_budget=budget, **TINY), tmp_path / "run")
    took = time.perf_counter() - started
    assert 0.6 * budget < took < 1.1 * budget
    assert (tmp_path / "run" / "best.pt").exists() and result.history[-1]["strength"] > 0.3
    again = fit(demo_data, TrainConfig(progress=False, images_dir=None), tmp_path / "run", resume=True)
    assert again.history == result.history  # the budget is spent: resuming trains nothing more


def test_cifar10_subset_few_steps_then_resume(cifar10_root, tmp_path):
    competition = load_competition(cifar10_root)
    subset = competition.samples.groupby("label").head(60).reset_index(drop=True)
    data = prepare(dataclasses.replace(competition, samples=subset), progress=False)
    run = tmp_path / "cifar"
    fit(data, TrainConfig(epochs=1, **TINY), run)
    fit(data, TrainConfig(epochs=2, progress=False, images_dir=None), run, resume=True)
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2]
    assert checkpoint.load(run / "last.pt")["step"] == 16  # 480 training images / 64 per batch, twice


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save({"state_dict": {"w": torch.ones(3)}}, tmp_path / "last.pt")

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("the Colab runtime disconnected")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(tmp_path / "last.pt")["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _train_command(data: Path, run: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kitlib", "train", str(data), "--out", str(run), "--config", str(config), *extra]


def test_killed_and_resumed_run_ends_with_the_same_weights(demo_root, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, "epochs": 3, "checkpoint_minutes": 0.0}))  # last.pt after every batch
    env = {**os.environ, "KIT_THREADS": "1", "PYTHONHASHSEED": "0"}
    subprocess.run(_train_command(demo_root, tmp_path / "whole", config), check=True, env=env,
                   capture_output=True, cwd=ROOT)
    victim = subprocess.Popen(_train_command(demo_root, tmp_path / "killed", config), env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (last.exists() and checkpoint.load(last)["step"] >= 27):
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)  # a real kill, mid-epoch 2
    victim.wait()
    stopped_at = checkpoint.load(last)["step"]
    assert 27 <= stopped_at < 57
    subprocess.run(_train_command(demo_root, tmp_path / "killed", config, "--resume"), check=True, env=env,
                   capture_output=True, cwd=ROOT)
    whole = checkpoint.load(tmp_path / "whole" / "last.pt")["train_state"]["model"]
    resumed = checkpoint.load(last)["train_state"]["model"]
    assert checkpoint.load(last)["step"] == 57
    for name, tensor in whole.items():
        assert torch.allclose(tensor.float(), resumed[name].float(), atol=1e-5), name


def test_default_decode_size_shrinks_large_images_to_the_training_size():
    config = TrainConfig()
    assert decode_size(config, (512, 384), "cpu") == (64, 48)  # aspect kept
    assert decode_size(config, (512, 512), "cuda") == (128, 128)
    assert decode_size(config, (32, 32), "cpu") == (32, 32)  # never enlarged
    assert decode_size(TrainConfig(image_size=96), (512, 512), "cpu") == (96, 96)
    assert decode_size(TrainConfig(model="resnet18", pretrained=True), (512, 512), "cpu") == (224, 224)
    assert decode_size(TrainConfig(decode_size=200), (512, 512), "cpu") == (200, 200)


def test_prepare_for_decodes_large_images_at_the_capped_size(tmp_path, capsys):
    root = csv_competition(tmp_path / "comp", masks=False, test=0)
    for image in (root / "train_data").glob("img_*.png"):
        noise_png(image, (256, 192))  # (w, h)
    data = prepare_for(root, TrainConfig(device="cpu", progress=False))
    assert tuple(data.images.shape) == (8, 3, 48, 64)
    assert "decoding at 64x48 px (most images are 256x192)" in capsys.readouterr().out
