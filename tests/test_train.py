"""kitlib.train: end to end on the demo and CIFAR-10, resume (also after a real kill), budgets, schedules."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kitlib import checkpoint, models, rundir, runtime
from kitlib.predict import evaluate_ensemble, evaluate_run
from kitlib.data import load_competition
from kitlib.data import prepare
from kitlib.errors import KitError
from kitlib.data.dataset import decode_size
from kitlib.train import TrainConfig
from kitlib.train.recipe import adaptive_augment, resolve, train_size
from kitlib.train.schedules import Clock, Plateau, lr_factor
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


def test_ema_averages_weights_and_batch_norm_statistics_and_copies_counts():
    from kitlib.train.ema import EMA

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    torch.nn.init.zeros_(model[0].weight)
    ema = EMA(model, decay=0.5)
    torch.nn.init.ones_(model[0].weight)
    model[1].running_mean.fill_(4.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # warm-up: d = min(0.5, 2 / 11) = 2 / 11
    averaged = ema.module
    assert averaged[0].weight.flatten().tolist() == pytest.approx([9 / 11] * 4)
    assert averaged[1].running_mean.tolist() == pytest.approx([36 / 11] * 2)
    assert averaged[1].running_var.tolist() == pytest.approx([1.0, 1.0])  # both at 1: unchanged
    assert int(averaged[1].num_batches_tracked) == 7


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


def test_a_budget_clock_reaches_the_end_of_its_schedule_where_training_stops():
    clock = Clock(total_steps=100, budget=100.0, started=time.perf_counter() - 45.0, reserve=10.0)
    assert round(clock.progress(0), 2) == 0.5 and not clock.out_of_time()  # 45 of the 90 s that train
    clock.keep(60.0)  # a slow save measured: the reserve only grows
    clock.keep(20.0)
    assert clock.reserve == 60.0 and clock.progress(0) == 1.0 and clock.out_of_time()


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


def test_adaptive_augmentation_is_medium_for_long_runs_only(demo_data):
    assert [adaptive_augment(e) for e in (1, 39.9, 40, 300)] == ["light", "light", "medium", "medium"]
    cpu = torch.device("cpu")
    assert [resolve(TrainConfig(epochs=e), demo_data, cpu).augment for e in (10, 60)] == ["light", "medium"]
    assert resolve(TrainConfig(time_budget=60), demo_data, cpu).augment == "adaptive"  # decided after epoch 1
    assert resolve(TrainConfig(epochs=60, augment="light"), demo_data, cpu).augment == "light"  # a choice stays


def test_progressive_resizing_grows_the_batches_to_the_full_size():
    config = TrainConfig(image_size=64, resize_from=0.5, resize_until=0.75)
    assert [train_size(config, p) for p in (0.0, 0.2, 0.375, 0.6, 0.75, 1.0)] == [32, 40, 48, 56, 64, 64]
    joined = dataclasses.replace(config, join_at=0.8)  # the ramp ends inside the first cycle: 0.75 x 0.8
    assert [train_size(joined, p) for p in (0.3, 0.6, 0.9)] == [48, 64, 64]
    assert [train_size(TrainConfig(image_size=32, resize_from=0.5), p) for p in (0.0, 0.4, 1.0)] == [16, 24, 32]
    assert train_size(TrainConfig(image_size=64, resize_from=1.0), 0.0) == 64
    with pytest.raises(KitError, match="resize_from=0.1: give a fraction"):
        TrainConfig(resize_from=0.1)


def test_validation_samples_join_for_a_second_cycle(demo_data, tmp_path, capsys):
    run = tmp_path / "run"
    result = fit(demo_data, TrainConfig(epochs=4, join_at=0.5, label_evidence=True, **TINY), run)
    metrics = pd.read_csv(run / "metrics.csv")
    # two epochs of the 1,198 training digits, then two of all 1,497: 19 and 24 batches of 64
    assert list(metrics["phase"]) == ["train", "train", "joined", "joined"]
    assert list(metrics["step"]) == [19, 38, 62, 86]
    assert metrics["val_macro_f1"].notna().tolist() == [True, True, False, False]
    assert metrics["lr"].iloc[1] < 0.02 * 0.1 and metrics["lr"].iloc[2] > metrics["lr"].iloc[3]  # two cycles
    saved = checkpoint.load(run / "best.pt")
    assert saved["epoch"] == 4 and saved["metrics"]["estimate"]["epoch"] == 2  # the last model predicts
    estimate = result.best["estimate"]
    assert (estimate["samples"], estimate["trained_on"]) == (299, 1198)
    assert estimate["val_macro_f1"] == pytest.approx(metrics["val_macro_f1"].iloc[1], abs=1e-6)
    assert len(pd.read_csv(run / "val.csv")) == 299  # the first cycle's predictions: the honest ones
    # label evidence: the training probabilities and margins of the first cycle's 2 epochs, and the validation
    # probabilities of its second half: epochs 1 and 2 (the first ends at step 19 of 38, just there); on disk
    # then, no longer in last.pt
    state = checkpoint.load(run / "last.pt")["train_state"]["state"]
    assert (state["held_out_epochs"], state["trajectory"], state["held_out"]) == (2, None, None)
    evidence = rundir.read_label_evidence(run)
    assert evidence.probs.shape == (1497, 10) and np.allclose(evidence.probs.sum(axis=1), 1.0, atol=1e-4)
    assert np.isfinite(evidence.margins[:1198]).all() and np.isnan(evidence.margins[1198:]).all()
    assert evidence.held_out.sum() == 299 and not evidence.held_out[:1198].any()
    assert evidence.ids == [demo_data.ids[i] for i in torch.cat([demo_data.train_index, demo_data.val_index])]
    out = capsys.readouterr().out
    assert "first cycle done: val macro-F1" in out and "final model: epoch 4, trained on all 1497 samples" in out
    # the report scores the first cycle's predictions, and refuses to score the final model on samples it saw
    assert rundir.joined(run) and "run (validation, before those samples joined training)" in evaluate_run(run).summary
    with pytest.raises(KitError, match="trained on its validation samples too"):
        evaluate_ensemble([run], None, tmp_path / "report")


def test_label_evidence_adds_each_batch_to_its_samples_and_a_tile_to_its_image():
    from types import SimpleNamespace

    from kitlib.train.loop import trace_labels
    from kitlib.train.trainer import State

    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # probabilities (0.5, 0.5), (0.881, 0.119), ...
    labels = torch.tensor([0, 0, 0])
    images = SimpleNamespace(data=SimpleNamespace(tiles=None, targets=torch.zeros(4, dtype=torch.long)))
    state = State()
    trace_labels(images, state, torch.tensor([3, 1, 0]), logits, labels)
    trace_labels(images, state, torch.tensor([3]), logits[:1], labels[:1])
    assert state.visits.tolist() == [1.0, 1.0, 0.0, 2.0]
    assert state.trajectory[:, 0].tolist() == pytest.approx([0.1192, 0.8808, 0.0, 1.0], abs=1e-4)
    assert state.margins.tolist() == [-2.0, 2.0, 0.0, 0.0]  # the label's logit minus the largest other
    # tiles: rows are tiles, and each counts for the image it was cut from
    tiles = SimpleNamespace(data=SimpleNamespace(tiles=SimpleNamespace(tile_sample=torch.tensor([0, 0, 1, 1, 1])),
                                                 targets=torch.zeros(2, dtype=torch.long)))
    state = State()
    trace_labels(tiles, state, torch.tensor([1, 4, 0]), logits, torch.tensor([1, 1, 1]))
    assert state.visits.tolist() == [2.0, 1.0]
    assert state.trajectory[:, 1].tolist() == pytest.approx([0.5 + 0.8808, 0.1192], abs=1e-4)
    assert state.margins.tolist() == [0.0 + 2.0, -2.0]


def test_without_a_validation_split_the_summary_says_so(demo_data, tmp_path, capsys):
    everything = dataclasses.replace(demo_data, train_index=demo_data.train_index[:256],
                                     val_index=demo_data.val_index[:0])
    fit(everything, TrainConfig(epochs=1, join_at=0.5, **TINY), tmp_path / "run")
    assert "last epoch 1: no validation split (val_fraction=0), so no estimate of the test score" in \
        capsys.readouterr().out


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


def test_time_budget_is_kept(demo_data, tmp_path, capsys):
    budget = 25.0
    started = time.perf_counter()
    result = fit(demo_data, TrainConfig(time_budget=budget, **TINY), tmp_path / "run")
    took = time.perf_counter() - started
    assert 0.6 * budget < took < 1.1 * budget
    assert (tmp_path / "run" / "best.pt").exists() and result.history[-1]["strength"] > 0.3
    # the adaptive augmentation chose once, a fifth into the budget, and the choice survives the checkpoint
    chosen = re.findall(r"augment: adaptive chose (light|medium): ~(\d+) epochs fit the budget", capsys.readouterr().out)
    assert len(chosen) == 1 and chosen[0][0] == adaptive_augment(int(chosen[0][1]))
    saved = checkpoint.load(tmp_path / "run" / "last.pt")["train_state"]
    assert saved["state"]["augment"] == chosen[0][0]
    # it stopped with fewer seconds left than its measured reserve, and last.pt says so: a resume stops too
    assert budget - saved["elapsed"] < saved["reserve"]
    again = fit(demo_data, TrainConfig(progress=False, images_dir=None), tmp_path / "run", resume=True)
    assert again.history == result.history  # the budget is spent: resuming trains nothing more


def test_adaptive_augment_reads_the_pace_after_the_first_epoch(monkeypatch, capsys):
    """The rehearsal run that misjudged: its first epoch took 9 s (one-off costs), the next ones ~4 s at
    32-40 px of 64. From the first epoch alone it expected 15 epochs and chose light; it trained 57."""
    from types import SimpleNamespace

    import kitlib.train.trainer as trainer
    monkeypatch.setattr(trainer, "use_augment", lambda t, preset: None)
    seconds = [9, 13, 18, 24, 31, 36, 40, 43, 46, 49, 52, 55, 58]
    sizes = [32] * 5 + [36] * 4 + [40] * 4
    state = trainer.State(history=[{"epoch": e + 1, "seconds": s, "train_size": z}
                                   for e, (s, z) in enumerate(zip(seconds, sizes))])
    t = SimpleNamespace(config=SimpleNamespace(image_size=64), ctx=SimpleNamespace(is_main=True),
                        clock=SimpleNamespace(remaining=lambda: 300 - 58))
    trainer.choose_augment(t, state)
    assert state.augment == "medium"
    assert "~46 epochs fit the budget at the pace of epochs 2-13" in capsys.readouterr().out  # 13 + 242 s / (49 s / 12 x 64 / 36)


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
    assert "decoding at 64x48 px (the most common size is 256x192)" in capsys.readouterr().out
