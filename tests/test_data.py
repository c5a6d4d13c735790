"""kitlib.data: each layout read into the same tables, labels byte for byte, bad input refused."""

from __future__ import annotations

import os
import stat
import warnings
import pytest

from builders import (LABELS, csv_competition, imagefolder_competition, png, snapshot,
                      tinyimagenet_competition, write_csv)
from kitlib.data import COLUMNS, load_competition
from kitlib.errors import KitError


@pytest.mark.parametrize("with_extension", [True, False])
def test_csv_layout(tmp_path, with_extension):
    root = csv_competition(tmp_path, with_extension=with_extension)
    comp = load_competition(root)
    assert comp.layout == "csv"
    assert list(comp.samples.columns) == COLUMNS
    assert comp.classes == ["HER2(+)", "Luminal A", "Triple negative", "rocking chair, rocker"]
    assert list(comp.samples["label"][:4]) == LABELS
    assert comp.samples["image"][3] == root / "train_data" / "img_0003.png"
    assert comp.samples["mask"][3] == root / "train_data" / "mask_0003.png"
    assert list(comp.targets[:4]) == [0, 2, 1, 3]
    suffix = ".png" if with_extension else ""
    # the test table follows the sample submission's order, ids spelled as it spells them
    assert list(comp.test["sample_index"]) == [f"img_000{i}{suffix}" for i in (2, 1, 0)]
    assert comp.test["mask"].isna().all() and comp.test["label"].isna().all()
    assert comp.sample_submission == root / "sample_submission.csv"
    assert comp.summary().endswith("4 classes, 8 train, 3 test, 8 masks")


def test_numeric_ids_and_extra_columns_are_kept(tmp_path):
    csv_competition(tmp_path)
    write_csv(tmp_path / "train_labels.csv", [[str(i), LABELS[i % 4], f"patient{i // 2}"] for i in range(8)],
              header=("id", "class", "patient"))
    comp = load_competition(tmp_path)
    assert comp.samples["image"][7].name == "img_0007.png"
    assert list(comp.samples["patient"][:3]) == ["patient0", "patient0", "patient1"]


def test_imagefolder_layout(tmp_path):
    comp = load_competition(imagefolder_competition(tmp_path))
    assert comp.layout == "imagefolder"
    assert comp.classes == ["cat", "dog", "rocking chair, rocker"]
    assert list(comp.samples["sample_index"][:2]) == ["cat/0.png", "cat/1.png"]
    assert list(comp.test["sample_index"]) == ["t0.png", "t1.png", "t2.png", "t3.png"]
    assert comp.test["label"].isna().all()


def test_imagefolder_with_labelled_test(tmp_path):
    comp = load_competition(imagefolder_competition(tmp_path, labelled_test=True))
    assert list(comp.test["label"]) == ["cat", "cat", "dog", "dog", "rocking chair, rocker"] + ["rocking chair, rocker"]


def test_tinyimagenet_layout(tmp_path):
    comp = load_competition(tinyimagenet_competition(tmp_path / "tiny"))
    assert comp.layout == "tinyimagenet"
    assert comp.classes == ["European fire salamander", "goldfish, Carassius auratus"]
    assert comp.samples["split"].value_counts().to_dict() == {"train": 4, "val": 2}
    assert comp.samples["sample_index"][0] == "n01443537/images/n01443537_0.JPEG"
    assert list(comp.samples["label"][4:]) == ["goldfish, Carassius auratus", "European fire salamander"]


def test_nested_folder_is_descended(tmp_path):
    csv_competition(tmp_path / "outer" / "inner")
    assert load_competition(tmp_path / "outer").root == tmp_path / "outer" / "inner"


# ------------------------------------------------------------------------------ bad input

def _error(root) -> str:
    with pytest.raises(KitError) as info:
        load_competition(root)
    return str(info.value)


def test_row_whose_image_is_missing(tmp_path):
    csv_competition(tmp_path)
    os.remove(tmp_path / "train_data" / "img_0005.png")
    message = _error(tmp_path)
    assert "train_labels.csv: 1 row(s) name an image that is not in" in message
    assert "line 7 ('img_0005.png')" in message and "delete the row" in message


def test_image_without_row_is_warned_and_listed(tmp_path):
    csv_competition(tmp_path)
    png(tmp_path / "train_data" / "img_0099.png")
    with pytest.warns(UserWarning, match=r"1 image\(s\) have no row in train_labels.csv .*img_0099.png"):
        comp = load_competition(tmp_path)
    assert len(comp.samples) == 8


@pytest.mark.parametrize("label", ["", "  ", "nan", "NaN"])
def test_empty_or_nan_label(tmp_path, label):
    csv_competition(tmp_path)
    write_csv(tmp_path / "train_labels.csv", [[f"img_{i:04d}.png", label if i == 2 else "a"] for i in range(8)])
    message = _error(tmp_path)
    assert "1 sample(s) have an empty or NaN label: line 4 ('img_0002.png')" in message


def test_duplicate_ids(tmp_path):
    csv_competition(tmp_path)
    write_csv(tmp_path / "train_labels.csv", [[f"img_{min(i, 6):04d}.png", "a"] for i in range(8)])
    assert "id 'img_0006.png' appears on lines 8, 9" in _error(tmp_path)


def test_csv_without_expected_columns(tmp_path):
    csv_competition(tmp_path)  # unknown names, and no column's values name the images: the id column is not found
    write_csv(tmp_path / "train_labels.csv", [["zebra.png", "a"]], header=("picture", "kind"))
    message = _error(tmp_path)
    assert "no id column (looked for sample_index, id" in message
    assert "found columns: picture, kind. Pass --id-column NAME (id_column= in Python" in message


def test_sample_submission_with_ids_absent_from_test_folder(tmp_path):
    csv_competition(tmp_path)
    os.remove(tmp_path / "test_data" / "img_0001.png")
    message = _error(tmp_path)
    assert "sample_submission.csv: 1 row(s) name an image that is not in" in message
    assert "'img_0001.png'" in message


def test_empty_folder(tmp_path):
    assert "the folder is empty" in _error(tmp_path)


def test_unrecognised_layout(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    assert "no competition layout recognised (found: a.png, b.png)" in _error(tmp_path)


def test_read_only_data_folder_is_never_written(tmp_path, monkeypatch):
    """Kaggle's /kaggle/input is read-only: loading and decoding must not write there."""
    from kitlib.data.cache import decode_table

    root = csv_competition(tmp_path / "competition")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    before = snapshot(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no warning either: this competition is clean
            comp = load_competition(root)
        decode_table(comp.samples, size=4, progress=False)
        decode_table(comp.test, size=4, progress=False)
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    # as root the permission bits don't bind, so the snapshot (names and mtimes) is the proof
    assert snapshot(root) == before
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 2
