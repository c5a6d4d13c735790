"""Prediction: the submission round trip on the demo competition, TTA, ensembles, evaluation reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from kitlib import checkpoint, models, predict
from kitlib.models import infer
from kitlib.data import cache
from kitlib.data import load_competition
from kitlib.data.demo import write_demo
from kitlib.errors import KitError
from kitlib.predict import Run, evaluate_oof, evaluate_run, load_runs, predict_probs, predict_submission

NORM = {"mean": [0.2, 0.3, 0.4], "std": [0.3, 0.25, 0.2], "size": [32, 32], "cache_size": [32, 32], "fit": "squash"}
SIX = 'six "half a dozen"'


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo competition with its sample file shuffled (the submission must keep that order)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        root = write_demo(tmp_path_factory.mktemp("demo"))
        sample = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
        sample.sample(frac=1.0, random_state=0).to_csv(root / "sample_submission.csv", index=False)
        yield load_competition(root)


def save_run(folder: Path, classes, *, norm=NORM, favour: str | None = None, seed: int = 0,
             config: dict | None = None) -> Path:
    """A run folder with best.pt of a fresh resnet_small; `favour` makes it predict that class everywhere."""
    torch.manual_seed(seed)
    model = models.create("resnet_small", len(classes))
    if favour is not None:
        with torch.no_grad():
            models.head(model)[-1].bias[classes.index(favour)] = 20.0
    checkpoint.save({"config": config or {"model": "resnet_small", "seed": seed},
                     "model": {"name": "resnet_small", "num_classes": len(classes), "norm": "batch", "options": {}},
                     "classes": list(classes), "normalization": norm, "epoch": 3, "step": 30,
                     "metrics": {"val_macro_f1": 0.5}, "state_dict": model.state_dict()}, folder / "best.pt")
    return folder


class PoolFirst(nn.Module):
    """Per-pixel features averaged over the image: invariant to flips by construction."""

    def __init__(self, k: int):
        super().__init__()
        self.pixel = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU())
        self.head = nn.Linear(16, k)

    def forward(self, x):
        return self.head(self.pixel(x).mean((2, 3)))


def memory_run(model: nn.Module, classes, norm=NORM, group: str = "") -> Run:
    return Run(model.eval(), {"classes": list(classes), "normalization": norm}, None, group)


def images(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_submission_round_trip_on_demo(demo, tmp_path, capsys):
    run = save_run(tmp_path / "run_a", demo.classes, config={"model": "resnet_small", "lr": 0.1})
    out = tmp_path / "out" / "submission.csv"
    written = predict_submission([run], demo, out, tta="hflip", progress=False)
    sample_ids = pd.read_csv(demo.sample_submission, dtype=str)["sample_index"].tolist()
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["sample_index", "label"]
    assert len(rows) == 1 + 300 and [r[0] for r in rows[1:]] == sample_ids  # the shuffled sample order
    # each id carries its own prediction: the same model's probabilities, in the test table's order
    probs = predict_probs(load_runs([run]), demo.test, tta="hflip", progress=False)
    expected = dict(zip(demo.test["sample_index"], (demo.classes[i] for i in probs.argmax(1))))
    assert {r[0]: r[1] for r in rows[1:]} == expected
    assert len(set(expected.values())) > 1  # a random net still predicts several classes: a real mix
    record = json.loads(written.meta_path.read_text())
    assert written.meta_path == tmp_path / "out" / "submission.json"
    assert record["runs"][0]["path"] == str(run / "best.pt") and record["runs"][0]["config"]["lr"] == 0.1
    assert record["runs"][0]["git_commit"] == checkpoint.git_commit()
    assert record["tta"] == {"mode": "hflip", "scales": [1.0], "views": 2}
    assert record["kit_version"] == "0.1.0" and record["written"]["rows"] == 300
    assert "train_share" in capsys.readouterr().out  # the distribution printed beside the training one


def test_submission_quotes_labels_byte_for_byte(demo, tmp_path):
    for label, line in ((SIX, '"six ""half a dozen"""'), ("nine (IX), nein", '"nine (IX), nein"')):
        run = save_run(tmp_path / label[:3], demo.classes, favour=label)
        out = predict_submission(run, demo.root, tmp_path / f"{label[:3]}.csv", tta="none", progress=False).path
        first = pd.read_csv(demo.sample_submission, dtype=str)["sample_index"].iloc[0]
        text = out.read_text(encoding="utf-8")
        assert text.startswith(f"sample_index,label\n{first},{line}\n")
        assert text.count("\n") == 301 and text.count(line) == 300


def test_tta_views_and_shapes():
    views = predict.tta_views("flips", (0.875, 1.0, 1.125))
    assert [s for s, _ in views] == [0.875, 1.0, 1.125] and all(len(f) == 4 for _, f in views)
    x = torch.randn(5, 3, 32, 32)
    assert [tuple(infer._view(x, s, f).shape) for s, f in views] == [(20, 3, 28, 28), (20, 3, 32, 32),
                                                                       (20, 3, 36, 36)]
    flipped = infer._view(x, 1.0, predict.TTA_MODES["flips"])
    assert torch.equal(flipped[5:10], x.flip(3)) and torch.equal(flipped[10:15], x.flip(2))
    assert torch.equal(flipped[15:], x.flip((2, 3)))
    shifted = infer._view(x, 1.0, predict.TTA_MODES["hflip+shifts"])  # 1 px at 32 px: (0, hflip) x (0, -1, +1)
    assert shifted.shape == (30, 3, 32, 32) and torch.equal(shifted[5:10], x.flip(3))
    assert torch.equal(shifted[10:15, :, :-1, :-1], x[:, :, 1:, 1:])  # up and left by 1 px
    assert torch.equal(shifted[10:15, :, -1, :-1], x[:, :, -2, 1:])  # the border reflected
    assert torch.equal(shifted[20:25, :, 1:, 1:], x[:, :, :-1, :-1])  # down and right
    big = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64).expand(1, 3, 64, 64)
    assert torch.equal(infer._view(big, 1.0, ((False, False, 1),))[..., 2:, 2:], big[..., :-2, :-2])  # 2 px at 64
    with pytest.raises(KitError, match="tta='mirror': choose one of none, hflip, flips, shifts, hflip\\+shifts"):
        predict.tta_views("mirror")
    with pytest.raises(KitError, match="scales"):
        predict.tta_views("none", (0.0, 1.0))


def test_hflip_equals_none_on_a_flip_invariant_model():
    torch.manual_seed(0)
    run = memory_run(PoolFirst(4), list("abcd"))
    x = images()
    none = predict_probs([run], x, tta="none", progress=False)
    assert none.shape == (12, 4) and none.dtype == np.float32
    assert np.allclose(none.sum(1), 1.0, atol=1e-6)
    for tta in ("hflip", "flips"):
        assert np.allclose(predict_probs([run], x, tta=tta, progress=False), none, atol=1e-6)
    # and on a model that is not invariant, "hflip" is the mean of the two views' softmax
    torch.manual_seed(0)
    net = memory_run(models.create("resnet_small", 4), list("abcd"))
    normed = net.transform()(x)
    with torch.no_grad():
        manual = (net.model(normed).softmax(1) + net.model(normed.flip(3)).softmax(1)) / 2
    # fp32 as the manual reference: on a CPU with AVX-512-BF16 "auto" predicts in bf16 (~1e-4 off)
    hflip = predict_probs([net], x, tta="hflip", batch_size=8, precision="fp32", progress=False)  # 4 a pass, 3 passes
    assert np.allclose(hflip, manual.numpy(), atol=1e-5)
    assert not np.allclose(hflip, predict_probs([net], x, tta="none", progress=False), atol=1e-3)
    scaled = predict_probs([net], x, tta="hflip", scales=(0.875, 1.0, 1.125), progress=False)
    assert scaled.shape == (12, 4) and np.allclose(scaled.sum(1), 1.0, atol=1e-6)
    assert not np.allclose(scaled, hflip, atol=1e-4)  # the other input sizes change the average


def test_ensemble_is_the_mean_of_runs_decoding_once_per_size(demo, monkeypatch):
    torch.manual_seed(1)
    classes = demo.classes
    small = {"mean": [0.5] * 3, "std": [0.5] * 3, "size": [24, 24], "cache_size": [28, 28], "fit": "pad"}
    a = memory_run(models.create("resnet_small", 10), classes)
    b = memory_run(PoolFirst(10), classes, small)
    c = memory_run(PoolFirst(10), classes)  # same decode as `a`
    table = demo.test.iloc[:40]
    calls, decode = [], cache.decode

    def counting(paths, **options):
        calls.append((options["size"], options["fit"]))
        return decode(paths, **options)

    monkeypatch.setattr(cache, "decode", counting)
    pa, pb, pc = (predict_probs([r], table, tta="hflip", progress=False) for r in (a, b, c))
    calls.clear()
    both = predict_probs([a, b, c], table, tta="hflip", progress=False)
    assert sorted(calls) == [((28, 28), "pad"), ((32, 32), "squash")]
    assert np.allclose(both, (pa + pb + pc) / 3, atol=1e-6)
    # folds of one run are averaged first: two folds of run "x" weigh as much as run "y"
    folds = [memory_run(a.model, classes, group="x"), memory_run(c.model, classes, group="x"),
             memory_run(b.model, classes, small, group="y")]
    assert np.allclose(predict_probs(folds, table, tta="hflip", progress=False), ((pa + pc) / 2 + pb) / 2, atol=1e-6)


def test_mismatched_classes_are_rejected(tmp_path, demo):
    save_run(tmp_path / "a", ["cat", "dog"])
    save_run(tmp_path / "b", ["cat", "dog", "emu"])
    save_run(tmp_path / "c", ["dog", "cat"])
    with pytest.raises(KitError, match=r"runs .*a \(2 classes\) and .*b \(3 classes\).*only in .*b: \['emu'\]"):
        load_runs([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(KitError, match="the same classes in another order"):
        predict_probs([memory_run(PoolFirst(2), ["cat", "dog"], group="a"),
                       memory_run(PoolFirst(2), ["dog", "cat"], group="c")], images(), progress=False)
    with pytest.raises(KitError, match=r"does not have: \['cat', 'dog'\]"):
        predict_submission(tmp_path / "a", demo, tmp_path / "sub.csv", progress=False)
    assert not (tmp_path / "sub.csv").exists()


def test_load_runs_reads_every_fold_of_a_folder(tmp_path):
    for fold in range(3):
        save_run(tmp_path / "cv" / f"fold{fold}", ["cat", "dog"], seed=fold)
    runs = load_runs(tmp_path / "cv")
    assert [r.path.parent.name for r in runs] == ["fold0", "fold1", "fold2"]
    assert {r.group for r in runs} == {str(tmp_path / "cv")} and runs[0].classes == ["cat", "dog"]
    with pytest.raises(KitError, match="no best.pt there or in its subfolders"):
        load_runs(tmp_path)


def test_evaluate_run_reads_validation_predictions(tmp_path):
    classes = ["a, b", 'c "d"', "e"]
    run = save_run(tmp_path / "run", classes)
    np.save(run / "val_probs.npy", np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0, 0.1, 0.9]],
                                            dtype=np.float32))
    (run / "val.csv").write_text('sample_index,label\nx1,"a, b"\nx2,"a, b"\nx3,"c ""d"""\nx4,e\n', encoding="utf-8")
    report = evaluate_run(run, out_dir=tmp_path / "report")
    assert report.accuracy == pytest.approx(0.75)
    assert report.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert report.summary.startswith("run (validation): macro-F1 0.7778 | accuracy 0.7500 | 4 samples, 3 classes")
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 5000
    np.save(run / "val_probs.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(KitError, match=r"shape \(3, 3\) but .*val.csv 4 rows"):
        evaluate_run(run)
    with pytest.raises(KitError, match="val_probs.npy: not found"):
        evaluate_run(tmp_path)


def test_evaluate_oof_rejects_gaps_and_repeats():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    report = evaluate_oof(["s1", "s2", "s3"], ["cat", "dog", "dog"], probs, ["cat", "dog"])
    assert report.accuracy == pytest.approx(2 / 3) and report.macro_f1 == pytest.approx(2 / 3)
    with pytest.raises(KitError, match=r"1 sample\(s\) have no out-of-fold prediction \(NaN\), e.g. \['s2'\]"):
        evaluate_oof(["s1", "s2", "s3"], ["cat", "dog", "dog"], np.where([[0], [1], [0]], np.nan, probs),
                     ["cat", "dog"])
    with pytest.raises(KitError, match=r"ids \['s1'\] appear more than once"):
        evaluate_oof(["s1", "s1", "s3"], ["cat", "dog", "dog"], probs, ["cat", "dog"])
