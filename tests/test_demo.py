"""The demo competitions: slides with masks and planted junk (the default), and digit images; answers outside."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from PIL import Image

from kitlib.__main__ import main
from kitlib.data import load_competition
from kitlib.data.demo import CLASSES, SLIDE_CLASSES, write_demo


def test_slide_demo_competition(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", str(tmp_path / "demo")]) == 0  # slides: the default
    assert "wrote the slides demo competition to" in capsys.readouterr().out
    root = tmp_path / "demo" / "competition"
    comp = load_competition(root)
    assert comp.classes == sorted(SLIDE_CLASSES) and len(comp.samples) == 320 and len(comp.test) == 120
    assert comp.samples["label"].value_counts().to_dict() == {"HER2(+)": 109, "Triple negative": 93,
                                                              "Luminal A": 83, "Luminal B, HER2(-)": 35}
    assert comp.samples["mask"].notna().all() and comp.test["mask"].notna().all()
    sizes = [Image.open(p).size for p in comp.samples["image"][:50]]
    assert min(min(s) for s in sizes) >= 176 and max(max(s) for s in sizes) <= 240 and len(set(sizes)) > 20
    assert sorted(p.name for p in root.iterdir()) == ["sample_submission.csv", "test_data", "train_data",
                                                      "train_labels.csv"]  # answers and defects stay outside
    answers = pd.read_csv(tmp_path / "demo" / "answers.csv", dtype=str)
    assert list(answers["sample_index"]) == list(comp.test["sample_index"])
    defects = pd.read_csv(tmp_path / "demo" / "defects.csv", dtype=str, keep_default_na=False)
    assert defects["defect"].value_counts().to_dict() == {"cartoon": 4, "stained_duplicate": 1, "blank": 1}
    masks = comp.samples.set_index("sample_index")["mask"]
    digests = {hashlib.sha1(Image.open(masks[i]).tobytes()).hexdigest()
               for i in defects.loc[defects["defect"] == "cartoon", "sample_index"]}
    assert len(digests) == 1  # the cartoons all carry one and the same mask
    stained = defects[defects["defect"] == "stained_duplicate"].iloc[0]
    given = comp.samples.set_index("sample_index")["label"]
    assert given[stained["sample_index"]] != given[stained["twin"]] == stained["true_label"]
    blank = np.asarray(Image.open(comp.samples.set_index("sample_index")["image"][
        defects.loc[defects["defect"] == "blank", "sample_index"].iloc[0]]))
    assert blank.reshape(-1, 3).std(0).max() == 0  # one flat colour


def test_demo_competition(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", str(tmp_path / "demo"), "--kind", "images"]) == 0
    root = tmp_path / "demo" / "competition"
    comp = load_competition(root)
    assert comp.layout == "csv"
    assert comp.classes == sorted(CLASSES)
    assert comp.samples["split"].value_counts().to_dict() == {"train": 1497}
    assert comp.samples["mask"].notna().all() and len(comp.test) == 300
    assert 'six "half a dozen"' in set(comp.samples["label"]) and "five, high" in comp.classes
    assert sorted(p.name for p in root.iterdir()) == ["sample_submission.csv", "test_data",
                                                      "train_data", "train_labels.csv"]
    answers = pd.read_csv(tmp_path / "demo" / "answers.csv", dtype=str, keep_default_na=False)
    assert list(answers["sample_index"]) == list(comp.test["sample_index"])
    defects = pd.read_csv(tmp_path / "demo" / "defects.csv", dtype=str, keep_default_na=False)
    assert defects["defect"].value_counts().to_dict() == {"mislabeled": 30, "blank": 8, "alien": 4,
                                                           "duplicate": 3}
    flipped = defects[defects["defect"] == "mislabeled"].set_index("sample_index")["true_label"]
    given = comp.samples.set_index("sample_index")["label"]
    assert (given[flipped.index] != flipped).all()  # every flipped label differs from the truth


def test_demo_is_deterministic(tmp_path):
    first = write_demo(tmp_path / "a")
    second = write_demo(tmp_path / "b")
    assert (first / "train_labels.csv").read_bytes() == (second / "train_labels.csv").read_bytes()
    assert (first / "train_data" / "img_0007.png").read_bytes() == \
        (second / "train_data" / "img_0007.png").read_bytes()
