"""The audit: each detector on literal inputs, then the whole audit finding the demo's injected defects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kitlib import audit
from kitlib.audit import AuditConfig
from kitlib.data import TrainingData
from kitlib.errors import KitError
from kitlib.files import write_table
from kitlib.train import TrainConfig


def _data(images: torch.Tensor, labels: list[int], classes=("a", "b, c")) -> TrainingData:
    n = len(images)
    return TrainingData(classes=list(classes), ids=[f"s{i}" for i in range(n)], images=images, masks=None,
                        targets=torch.tensor(labels), train_index=torch.arange(n),
                        val_index=torch.zeros(0, dtype=torch.int64), fit="squash")


def test_label_issues_is_confident_learning():
    # class thresholds: a = mean(0.9, 0.8, 0.1, 0.3) = 0.525, b = mean(0.7, 0.9) = 0.8
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.3, 0.7], [0.1, 0.9]])
    targets = np.array([0, 0, 0, 0, 1, 1])
    flagged, score, suggested = audit.label_issues(probs, targets)
    # s2 is labelled a but is confidently b, by a margin of 0.8; s3 is b below b's threshold;
    # s4 (b, 0.7) is below b's threshold, but a is below a's too: kept
    assert flagged.tolist() == [False, False, True, False, False, False]
    np.testing.assert_allclose(score, [0.0, 0.0, 0.8, 0.4, 0.0, 0.0])
    assert suggested.tolist() == [0, 0, 1, 1, 1, 1]


def test_blank_issue_is_relative_to_the_data_set():
    config = AuditConfig()
    np.testing.assert_allclose(audit.blank_issue(np.array([0.0, 0.01, 0.02, 0.2, 0.3, 0.3, 0.3]), config),
                               [1.0, 0.75, 0.5, 0.0, 0.0, 0.0, 0.0])
    # faint images (median std 0.05): the threshold drops to 0.005, a tenth of the median
    np.testing.assert_allclose(audit.blank_issue(np.array([0.0, 0.005, 0.05, 0.05, 0.05]), config),
                               [1.0, 0.5, 0.0, 0.0, 0.0])


def test_duplicates_keep_the_first_copy_in_id_order():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))
    images[3] = images[1]  # an exact copy
    near = images[0].int() + 2
    images[4] = near.clamp(0, 255).to(torch.uint8)  # a re-encoded copy: every pixel 2 levels off
    score, kept = audit.duplicate_issue(images, ["s0", "s1", "s2", "s3", "s4"], AuditConfig())
    assert kept.tolist() == [-1, -1, -1, 1, 0]
    assert score[3] == 1.0 and 0.5 < score[4] < 1.0 and score[:3].tolist() == [0.0, 0.0, 0.0]


def test_difference_hash_ignores_brightness_and_size():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 200, (1, 3, 16, 18), dtype=np.uint8))  # H 16, W 18: whole bins
    brighter = image + 40
    larger = torch.nn.functional.interpolate(image.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    hashes = audit.difference_hashes(torch.cat([image, brighter]))
    assert hashes[0] == hashes[1] == audit.difference_hashes(larger)[0]


def test_alien_needs_both_signals():
    config = AuditConfig()
    far, near = np.array([9.0, 9.0, 0.0]), np.array([9.0, 0.0, 0.0])
    np.testing.assert_allclose(audit.alien_issue(far, near, config),
                               1 / (1 + np.exp(-np.array([4.5, 0.0, -4.5]))))


def test_suspects_one_row_per_sample_worst_first(tmp_path):
    scores = pd.DataFrame({
        "sample_index": ["s0", "s1", "s2", "s3"], "given_label": ["a", "b, c", "a", "a"],
        "blank": [0.0, 0.9, 0.0, 0.0], "duplicate": [0.0, 0.0, 1.0, 0.0], "alien": [0.0, 0.8, 0.0, 0.0],
        "mislabeled": [0.95, 0.9, 0.0, 0.7], "oof_loss": [3.0, 2.0, 0.1, 1.0],
        "predicted_label": ["b, c", "a", "a", "b, c"], "duplicate_of": ["", "", "s0", ""],
        "mislabeled_flag": [True, True, False, False]})
    suspects = audit.suspects_from(scores)
    # s1 is blank first (ISSUES order); s3 scores 0.7 but confident learning did not flag it
    assert suspects.values.tolist() == [["s2", "duplicate", 1.0, "a", "a"], ["s0", "mislabeled", 0.95, "a", "b, c"],
                                        ["s1", "blank", 0.9, "b, c", ""]]
    path = write_table(tmp_path / "suspects.csv", suspects)
    assert path.read_text().splitlines() == [
        "sample_index,issue,score,given_label,suggested_label", "s2,duplicate,1.0,a,a",
        's0,mislabeled,0.95,a,"b, c"', 's1,blank,0.9,"b, c",']


def test_audit_rejects_too_few_folds(demo_root):
    with pytest.raises(KitError, match="folds=1: the audit needs K >= 2 folds"):
        audit.audit(demo_root, AuditConfig(folds=1))
    data = _data(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), [0, 0, 1])
    with pytest.raises(KitError, match="3 samples cannot fill 4 folds: give fewer --folds"):
        audit.audit(data, AuditConfig(folds=4))


def test_audit_finds_the_demo_defects(demo_root, tmp_path):
    """The demo hides 8 blank, 30 mislabeled, 4 alien and 3 duplicated images among 1,497."""
    config = AuditConfig(train=TrainConfig(epochs=8, images_dir=None, progress=False))
    result = audit.audit(demo_root, config, tmp_path / "audit")
    defects = pd.read_csv(demo_root.parent / "defects.csv", dtype=str, keep_default_na=False)
    suspects = pd.read_csv(tmp_path / "audit" / "suspects.csv", dtype=str, keep_default_na=False)
    assert list(suspects.columns) == ["sample_index", "issue", "score", "given_label", "suggested_label"]
    assert suspects["score"].astype(float).is_monotonic_decreasing
    found = defects.merge(suspects, on="sample_index", how="left")
    hits = (found["defect"] == found["issue"]).groupby(found["defect"]).sum().to_dict()
    # duplicates: the demo names the copy, the audit flags the later id of the pair (either is right)
    assert hits["blank"] == 8 and hits["alien"] >= 3 and hits["mislabeled"] >= 20
    assert (suspects["issue"] == "duplicate").sum() == 3
    relabel = found[(found["defect"] == "mislabeled") & (found["issue"] == "mislabeled")]
    assert (relabel["suggested_label"] == relabel["true_label"]).mean() >= 0.9
    false = suspects[~suspects["sample_index"].isin(defects["sample_index"]) & (suspects["issue"] != "duplicate")]
    assert len(false) <= 10
    scores = pd.read_csv(tmp_path / "audit" / "scores.csv")
    assert list(scores.columns) == ["sample_index", "given_label", "blank", "duplicate", "alien", "mislabeled",
                                    "oof_loss", "predicted_label", "duplicate_of"]
    assert len(scores) == 1497 and result.oof_probs.shape == (1497, 10)
    assert (tmp_path / "audit" / "suspects.png").stat().st_size > 10_000
    # a second call finds the fold runs finished and only scores again
    again = audit.audit(demo_root, config, tmp_path / "audit")
    pd.testing.assert_frame_equal(again.suspects, result.suspects)


def test_dropping_suspects_moves_no_other_sample_across_the_split(demo_root, tmp_path):
    from kitlib.data import load_competition
    from kitlib.data import prepare

    competition = load_competition(demo_root)
    before = prepare(competition, size=16, progress=False)
    val_before = {before.ids[i] for i in before.val_index.tolist()}
    rows = before.val_index[:3].tolist() + before.train_index[:2].tolist()  # 3 validated, 2 trained on
    dropped = [before.ids[i] for i in rows]
    suspects = tmp_path / "suspects.csv"
    write_table(suspects, pd.DataFrame({"sample_index": dropped, "issue": "blank", "score": 1.0, "given_label": "",
                                        "suggested_label": ""}))
    after = prepare(competition, size=16, decisions=suspects, progress=False)
    assert len(after.ids) == 1497 - 5
    assert {after.ids[i] for i in after.val_index.tolist()} == val_before - set(dropped)
