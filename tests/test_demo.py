"""The demo competition: real digit scans, awkward class names, injected defects, answers outside."""

from __future__ import annotations

import pandas as pd

from kitlib.__main__ import main
from kitlib.data import load_competition
from kitlib.data.demo import CLASSES, write_demo


def test_demo_competition(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", str(tmp_path / "demo")]) == 0
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
