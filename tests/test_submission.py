"""Submission writing: byte-exact labels, the sample file's order, and every rejection writes nothing."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kitlib.errors import KitError
from kitlib.predict.submission import validate_submission, write_submission

CLASSES = ["HER2(+)", "rocking chair, rocker", 'say "cheese"', "cat"]
SAMPLE_IDS = ["img_0003.png", "img_0001.png", "img_0004.png", "img_0002.png"]  # not sorted on purpose
TRUTH = {"img_0001.png": "rocking chair, rocker", "img_0002.png": 'say "cheese"',
         "img_0003.png": "HER2(+)", "img_0004.png": "rocking chair, rocker"}


@pytest.fixture
def sample(tmp_path) -> Path:
    path = tmp_path / "data" / "sample_submission.csv"
    path.parent.mkdir()
    path.write_text("sample_index,label\n" + "".join(f"{i},cat\n" for i in SAMPLE_IDS), encoding="utf-8")
    return path


def _write(out: Path, sample: Path | None, preds: dict[str, str], **kw):
    return write_submission(out, list(preds), list(preds.values()), classes=CLASSES,
                            sample_submission=sample, test_ids=kw.pop("test_ids", sorted(SAMPLE_IDS)), **kw)


def test_round_trip_bytes_and_order(tmp_path, sample, capsys):
    shuffled = dict(sorted(TRUTH.items(), reverse=True))  # predictions in another order than the sample
    out = tmp_path / "run" / "submission.csv"
    written = _write(out, sample, shuffled, train_labels=CLASSES * 2 + ["cat"] * 2,
                     meta={"runs": ["run-a"], "tta": True, "commit": "abc123",
                           "metrics": {"val_loss": float("nan"), "f1": np.float32(0.5), "seen": [np.inf, 1.0]}})
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["sample_index", "label"]
    assert [r[0] for r in rows[1:]] == SAMPLE_IDS  # the sample file's order
    assert [r[1] for r in rows[1:]] == [TRUTH[i] for i in SAMPLE_IDS]  # byte for byte
    assert out.read_bytes() == (b'sample_index,label\nimg_0003.png,HER2(+)\n'
                                b'img_0001.png,"rocking chair, rocker"\n'
                                b'img_0004.png,"rocking chair, rocker"\nimg_0002.png,"say ""cheese"""\n')
    record = json.loads((tmp_path / "run" / "submission.json").read_text())
    assert written.meta_path == tmp_path / "run" / "submission.json"
    assert record["runs"] == ["run-a"] and record["tta"] is True and record["commit"] == "abc123"
    # strict JSON: no NaN or Infinity, which JavaScript's or Go's parsers reject
    assert record["metrics"] == {"val_loss": None, "f1": 0.5, "seen": [None, 1.0]}
    assert "NaN" not in (tmp_path / "run" / "submission.json").read_text()
    assert record["written"]["rows"] == 4
    assert record["written"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["written"]["predicted_counts"] == {
        "HER2(+)": 1, "rocking chair, rocker": 2, 'say "cheese"': 1}
    dist = written.distribution
    assert dist.loc["rocking chair, rocker", "predicted"] == 2
    assert dist.loc["cat", "predicted"] == 0
    assert dist.loc["cat", "train_share"] == pytest.approx(4 / 10)
    printed = capsys.readouterr().out
    assert "1 never predicted" in printed and "train_share" in printed
    # no temporary file left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv", "submission.json"]
    assert out.stat().st_mode & 0o777 == 0o644


def test_without_sample_file_sorted_test_ids(tmp_path):
    out = tmp_path / "sub.csv"
    _write(out, None, dict(reversed(list(TRUTH.items()))), test_ids=SAMPLE_IDS)
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["sample_index", "label"]
    assert frame["sample_index"].tolist() == ["img_0001.png", "img_0002.png", "img_0003.png", "img_0004.png"]
    assert (tmp_path / "sub.json").exists()


def test_other_column_names_and_extra_columns_kept(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("id,Usage,class\n7,Public,x\n3,Private,x\n", encoding="utf-8")
    out = tmp_path / "out" / "submission.csv"
    write_submission(out, ["3", "7"], ["cat", "HER2(+)"], classes=CLASSES, sample_submission=sample,
                     test_ids=["3", "7"])
    assert out.read_text() == "id,Usage,class\n7,Public,HER2(+)\n3,Private,cat\n"


def test_integer_ids_are_written_as_text(tmp_path):
    out = tmp_path / "s.csv"
    write_submission(out, [10, 2], ["cat", "cat"], classes=CLASSES, sample_submission=None,
                     test_ids=["2", "10"])
    assert out.read_text() == "sample_index,label\n10,cat\n2,cat\n"  # sorted as strings


BAD_PREDICTIONS = {
    "missing id": ({k: v for k, v in TRUTH.items() if k != "img_0004.png"},
                   "1 id\\(s\\) not predicted: 'img_0004.png'"),
    "extra id": ({**TRUTH, "img_0099.png": "cat"},
                 "1 predicted id\\(s\\) not in sample_submission.csv: 'img_0099.png'"),
    "empty label": ({**TRUTH, "img_0002.png": " "}, "1 empty 'label' cell\\(s\\), at ids 'img_0002.png'"),
    "unknown label": ({**TRUTH, "img_0001.png": "rocking chair"},
                      "'rocking chair' x1 \\(did you mean 'rocking chair, rocker'\\?\\)"),
    "ids without extension": ({k.removesuffix(".png"): v for k, v in TRUTH.items()},
                              "differ by a file extension"),
}


@pytest.mark.parametrize("case", BAD_PREDICTIONS)
def test_bad_predictions_are_rejected_and_nothing_written(tmp_path, sample, case):
    preds, message = BAD_PREDICTIONS[case]
    out = tmp_path / "run" / "submission.csv"
    out.parent.mkdir()
    out.write_text("an earlier submission\n")
    with pytest.raises(KitError, match=message):
        _write(out, sample, preds)
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]
    assert out.read_text() == "an earlier submission\n"  # untouched


def test_duplicate_predicted_id_rejected(tmp_path, sample):
    with pytest.raises(KitError, match="repeat 1 id\\(s\\): 'img_0001.png'"):
        write_submission(tmp_path / "s.csv", SAMPLE_IDS + ["img_0001.png"], ["cat"] * 5, classes=CLASSES,
                         sample_submission=sample, test_ids=SAMPLE_IDS)
    assert not (tmp_path / "s.csv").exists()


def test_sample_file_listing_ids_absent_from_test_folder(tmp_path, sample):
    message = "1 id\\(s\\) of sample_submission.csv have no test image: 'img_0004.png'"
    with pytest.raises(KitError, match=message):
        _write(tmp_path / "s.csv", sample, TRUTH, test_ids=SAMPLE_IDS[:2] + SAMPLE_IDS[3:])
    assert not (tmp_path / "s.csv").exists()


def _frame(ids=SAMPLE_IDS, labels=None, columns=("sample_index", "label")) -> pd.DataFrame:
    labels = labels or [TRUTH[i] for i in ids]
    return pd.DataFrame(dict(zip(columns, [list(ids), labels])))


@pytest.mark.parametrize("frame, message", [
    (_frame(), None),
    (_frame(columns=("sample_index", "prediction")), "missing \\['label'\\]; unexpected \\['prediction'\\]"),
    (_frame()[["sample_index"]], "missing \\['label'\\]"),
    (_frame()[["label", "sample_index"]], "Reorder them"),
    (_frame(ids=SAMPLE_IDS[:3]),
     "3 rows, sample_submission.csv expects 4; 1 id\\(s\\) missing: 'img_0002.png'"),
    (_frame(ids=SAMPLE_IDS[:3] + ["img_0001.png"], labels=["cat"] * 4),
     "1 duplicated id\\(s\\): 'img_0001.png'"),
    (_frame(ids=sorted(SAMPLE_IDS)), "4 row\\(s\\) out of order; row 1 has id 'img_0001.png' "
                                     "where sample_submission.csv has 'img_0003.png'"),
    (_frame(labels=["cat", "", "cat", "cat"]), "1 empty 'label' cell\\(s\\), at ids 'img_0001.png'"),
    (_frame(labels=["0", "1", "1", "2"]), "look like class indices"),
])
def test_validator_cases(sample, frame, message):
    check = lambda: validate_submission(frame, classes=CLASSES, test_ids=SAMPLE_IDS,  # noqa: E731
                                        sample_submission=sample, source="my.csv")
    if message is None:
        check()
    else:
        with pytest.raises(KitError, match="my.csv: .*" + message):
            check()


def test_real_class_names_with_commas_round_trip(tiny_imagenet_root, tmp_path):
    """Tiny ImageNet's 100 names ('goldfish, Carassius auratus', ...) over its 5,000 val images."""
    names = dict(line.split("\t") for line in (tiny_imagenet_root / "words.txt").read_text().splitlines())
    wnids = (tiny_imagenet_root / "wnids.txt").read_text().split()
    classes = [names[w] for w in wnids]
    truth = dict(line.split("\t")[:2] for line in
                 (tiny_imagenet_root / "val" / "val_annotations.txt").read_text().splitlines())
    ids, labels = list(truth), [names[w] for w in truth.values()]
    assert sum("," in c for c in classes) > 30
    out = tmp_path / "submission.csv"
    write_submission(out, ids, labels, classes=classes, sample_submission=None, test_ids=ids,
                     train_labels=labels)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == 5000
    assert [r[0] for r in rows] == sorted(ids)
    assert all(truth_label == names[truth[i]] for i, truth_label in rows)
