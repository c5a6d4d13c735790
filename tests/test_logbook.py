"""The logbook: literal metrics.csv contents, the curves, the table of runs, TensorBoard events."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kitlib.errors import KitError
from kitlib.logbook import TensorBoard, plot_curves, plot_runs, runs_table, write_metrics

NAN = float("nan")


def row(epoch: int, phase: str, f1: float, **changes) -> dict:
    """A history row as the training loop writes it."""
    return {"epoch": epoch, "phase": phase, "step": 10 * epoch, "seconds": 30.0 * epoch, "lr": 0.1 / epoch,
            "strength": min(1.0, 0.25 * epoch), "train_loss": 2.0 / epoch, "train_images_per_s": 1500.0,
            "val_loss": 2.2 / epoch, "val_accuracy": f1 + 0.05, "val_macro_f1": f1, **changes}


def history(f1s: list[float], head_epochs: int = 2) -> list[dict]:
    return [row(e, "head" if e <= head_epochs else "full", f1) for e, f1 in enumerate(f1s, start=1)]


def test_metrics_csv_literal(tmp_path):
    rows = [row(1, "head", 0.25, lr=0.001, train_loss=2.302585092994046, train_images_per_s=1234.56789,
                per_class_f1=[0.5, 0.0, 0.25]),
            row(2, "full", NAN, val_loss=NAN, val_accuracy=NAN, ema_decay=np.float32(0.999),
                per_class_f1=[1 / 3, 0.5, 0.75])]
    path = write_metrics(tmp_path, rows, classes=["cat", "rocking chair, rocker", 'say "cheese"'])
    assert path == tmp_path / "metrics.csv"
    assert path.read_text() == (
        "epoch,phase,step,seconds,lr,strength,train_loss,train_images_per_s,val_loss,val_accuracy,val_macro_f1,"
        "ema_decay\n"
        "1,head,10,30,0.001,0.25,2.30259,1234.57,2.2,0.3,0.25,\n"
        "2,full,20,60,0.05,0.5,1,1500,,,,0.999\n")
    assert (tmp_path / "per_class_f1.csv").read_text() == (
        'epoch,cat,"rocking chair, rocker","say ""cheese"""\n'
        "1,0.5,0,0.25\n"
        "2,0.333333,0.5,0.75\n")
    back = pd.read_csv(path)
    assert math.isnan(back.loc[1, "val_macro_f1"]) and back.loc[0, "val_macro_f1"] == 0.25
    # rewritten whole each epoch, with no temporary file left
    write_metrics(tmp_path, rows[:1])
    assert path.read_text().count("\n") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "per_class_f1.csv"]
    with pytest.raises(KitError, match="per_class_f1 has"):
        write_metrics(tmp_path, rows, classes=["cat", "dog"])


def test_curves_are_written_to_run_and_images(tmp_path):
    run = tmp_path / "runs" / "resnet_small-medium"
    write_metrics(run, history([0.2, 0.35, 0.5, 0.62, 0.6, 0.58]))
    paths = plot_curves(run, title="resnet_small, medium augmentation", images_dir=tmp_path / "images")
    assert paths == [run / "curves.png", tmp_path / "images" / "resnet_small-medium_curves.png"]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    image = np.asarray(Image.open(paths[0]).convert("L"))
    assert image.shape == (825, 1210)  # 11 x 7.5 inches at 110 dpi
    assert paths[0].stat().st_size > 40_000 and image.std() > 20  # four panels of lines and text, not a blank
    # without validation the panels say so instead of failing; images_dir=None writes only the run's copy
    bare = tmp_path / "bare"
    write_metrics(bare, [row(1, "train", NAN, val_loss=NAN, val_accuracy=NAN)])
    assert plot_curves(bare, title="no validation", images_dir=None) == [bare / "curves.png"]
    with pytest.raises(KitError, match="metrics.csv: not found"):
        plot_curves(tmp_path, title="nothing")


def make_run(folder: Path, config: dict, f1s: list[float]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**config, "out": str(folder)}))
    write_metrics(folder, history(f1s))
    return folder


def test_runs_table_shows_exactly_the_differing_keys(tmp_path):
    base = {"model": "resnet_small", "lr": 0.1, "augment": {"ops": "medium", "schedule": "ramp"}, "seed": 0,
            "kit_version": "0.1.0", "scales": [1.0]}
    make_run(tmp_path / "runs" / "a", base, [0.3, 0.5, 0.55])
    make_run(tmp_path / "runs" / "b", {**base, "lr": 0.05, "augment": {"ops": "strong", "schedule": "ramp"}},
             [0.4, 0.6, 0.7, 0.65])
    make_run(tmp_path / "runs" / "c", {**base, "ema": True, "scales": [0.9, 1.0]}, [0.1, 0.2])
    (tmp_path / "runs" / "notes").mkdir()  # not a run: ignored
    table = runs_table(tmp_path / "runs", out=tmp_path / "table.csv")
    assert list(table.columns) == ["run", "lr", "augment.ops", "scales", "ema", "best_val_macro_f1",
                                   "val_accuracy", "best_epoch", "epochs", "minutes"]
    assert table["run"].tolist() == ["b", "a", "c"]
    assert table["lr"].tolist() == [0.05, 0.1, 0.1]
    assert table["augment.ops"].tolist() == ["strong", "medium", "medium"]
    assert table["scales"].tolist() == ["[1.0]", "[1.0]", "[0.9, 1.0]"]
    assert table["ema"].tolist()[:2] == [None, None] and table["ema"][2] is True
    assert table["best_val_macro_f1"].tolist() == [0.7, 0.55, 0.2]
    assert table["val_accuracy"].tolist() == pytest.approx([0.75, 0.6, 0.25])
    assert table["best_epoch"].tolist() == [3, 3, 2] and table["epochs"].tolist() == [4, 3, 2]
    assert table["minutes"].tolist() == [2.0, 1.5, 1.0]
    assert pd.read_csv(tmp_path / "table.csv")["run"].tolist() == ["b", "a", "c"]
    figure = plot_runs(tmp_path / "runs", tmp_path / "images" / "runs.png")
    assert figure.stat().st_size > 20_000
    with pytest.raises(KitError, match="no run folders"):
        runs_table(tmp_path / "runs" / "notes")


def test_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TensorBoard(tmp_path) as board:
        assert board.enabled
        board.log(row(1, "head", 0.25, per_class_f1=[0.5, 0.0]))
        board.log(row(2, "full", NAN, val_loss=NAN))
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    reader = EventAccumulator(str(tmp_path / "tensorboard"))
    reader.Reload()
    assert sorted(reader.Tags()["scalars"]) == ["accuracy/val", "epoch", "images_per_s/train", "loss/train",
                                                "loss/val", "lr", "macro_f1/val", "seconds", "strength"]
    assert [(e.step, round(e.value, 4)) for e in reader.Scalars("loss/val")] == [(10, 2.2)]  # NaN skipped
    assert [(e.step, round(e.value, 4)) for e in reader.Scalars("macro_f1/val")] == [(10, 0.25)]
    assert [(e.step, round(e.value, 4)) for e in reader.Scalars("lr")] == [(10, 0.1), (20, 0.05)]


def test_tensorboard_is_a_no_op_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    board = TensorBoard(tmp_path)
    board.log(row(1, "head", 0.25))
    board.close()
    assert not board.enabled and not (tmp_path / "tensorboard").exists()
