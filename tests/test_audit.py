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
from bench import defects


def _data(images: torch.Tensor, labels: list[int], classes=("a", "b, c"), masks=None) -> TrainingData:
    n = len(images)
    return TrainingData(classes=list(classes), ids=[f"s{i:02d}" for i in range(n)], images=images, masks=masks,
                        targets=torch.tensor(labels), train_index=torch.arange(n),
                        val_index=torch.zeros(0, dtype=torch.int64), fit="squash")


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(N, 3, H, W) uint8 from (H, W, 3) arrays."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _photos(count: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Crops of scikit-learn's two sample photos (a temple, a flower) at random places and scales."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos, out = load_sample_images().images, []
    for i in range(count):
        photo = photos[i % 2]
        side = int(rng.integers(64, 200))
        top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        out.append(np.asarray(Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size))))
    return out


def _blob_masks(count: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """(count, 1, size, size) uint8 irregular blobs, each its own."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mask = Image.new("L", (size, size), 0)
        centre = rng.uniform(size / 3, 2 * size / 3, 2)
        points = [(float(centre[0] + r * np.cos(a)), float(centre[1] + r * np.sin(a)))
                  for a, r in zip(np.linspace(0, 2 * np.pi, 9)[:-1], rng.uniform(size / 8, size / 3, 8))]
        ImageDraw.Draw(mask).polygon(points, fill=255)
        out.append(np.asarray(mask)[None])
    return torch.from_numpy(np.stack(out))


def test_label_issues_find_the_flipped_labels():
    """cleanlab's confident learning behind the kit's function, on probabilities with six known flips."""
    rng = np.random.default_rng(0)
    true = np.repeat([0, 1, 2], 20)
    probs = np.full((60, 3), 0.1)
    probs[np.arange(60), true] = 0.8
    probs += rng.uniform(0, 0.05, probs.shape)
    probs /= probs.sum(axis=1, keepdims=True)
    given = true.copy()
    flips = [3, 17, 25, 38, 44, 59]
    given[flips] = (true[flips] + 1) % 3
    probs[50] = [0.1, 0.45, 0.45]  # a hard sample of class 2, torn between 1 and 2: not a label issue
    flagged, score, suggested = audit.label_issues(probs, given)
    assert np.flatnonzero(flagged).tolist() == flips
    assert np.flatnonzero(audit.cleanlab_issues(probs, given)).tolist() == flips  # cleanlab's default agrees
    # the posterior alone defers to the given label at 0.8 confidence and 10 % noise; cleanlab's filter flags them
    np.testing.assert_allclose(score[flips], 0.5)
    assert round(float(score[50]), 3) == 0.097
    assert suggested[flips].tolist() == true[flips].tolist() == [0, 0, 1, 1, 2, 2]


def test_label_posterior_uses_the_noise_model():
    """P(true | x, given) under cleanlab's estimated noise: two samples of 0 filed as 1 are called 0."""
    probs = np.array([[0.95, 0.04, 0.01]] * 8 + [[0.02, 0.97, 0.01]] * 8 + [[0.01, 0.02, 0.97]] * 8
                     + [[0.97, 0.02, 0.01]] * 2)
    given = np.array([0] * 8 + [1] * 8 + [2] * 8 + [1, 1])  # the last two: 0 filed as 1
    posterior = audit.label_posterior(probs, given)
    assert posterior.shape == (26, 3) and np.allclose(posterior.sum(axis=1), 1.0)
    assert (posterior[-2:, 0] > 0.5).all() and (posterior[:24].argmax(axis=1) == given[:24]).all()


def test_rarity_alone_never_makes_a_label_suspect():
    # one sample of class 2: no fold model saw its class, so it looks like class 0 out of fold
    probs = np.array([[0.9, 0.1, 0.0]] * 10 + [[0.1, 0.9, 0.0]] * 10 + [[0.9, 0.1, 0.0]])
    flagged, score, _ = audit.label_issues(probs, np.array([0] * 10 + [1] * 10 + [2]))
    assert not flagged.any() and score[-1] == 0.0


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


def test_foreign_evidence_is_the_larger_signal():
    statistics, thumbnail, features = np.array([6.0, 1.0, 1.0]), np.array([1.0, 6.0, 6.0]), np.array([0.0, 0.0, 6.0])
    np.testing.assert_allclose(audit.foreign_z(statistics, thumbnail), [6.0, 6.0, 6.0])
    # with fold models the thumbnail's z is averaged with the features': a model alone calls nothing foreign
    np.testing.assert_allclose(audit.foreign_z(statistics, thumbnail, features), [6.0, 3.0, 6.0])


def test_suspects_one_row_per_sample_worst_first(tmp_path):
    scores = pd.DataFrame({
        "sample_index": ["s0", "s1", "s2", "s3", "s4", "s5"], "given_label": ["a", "b, c", "a", "a", "b, c", "a"],
        "blank": [0.0, 0.9, 0.0, 0.0, 0.0, 0.0], "shared_mask": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        "alien": [0.0, 0.8, 0.0, 0.0, 0.0, 0.9], "conflict": [0.0, 0.0, 0.0, 0.0, 0.8, 0.0],
        "duplicate": [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], "mislabeled": [0.95, 0.9, 0.0, 0.7, 0.0, 0.0],
        "oof_loss": [3.0, 2.0, 0.1, 1.0, 0.5, 0.5], "predicted_label": ["b, c", "a", "a", "b, c", "a", "a"],
        "twin": ["s2", "", "s0", "", "s3", ""], "group": ["", "", "", "", "", "s5"],
        "mislabeled_flag": [True, True, False, False, False, False]})
    suspects = audit.suspects_from(scores)
    # s1 is blank first (ISSUES order); s3 scores 0.7 but was not flagged; s5 is listed under its mask group
    assert suspects.values.tolist() == [
        ["s2", "duplicate", 1.0, "a", "a", "s0", ""], ["s5", "shared_mask", 1.0, "a", "", "", "s5"],
        ["s0", "mislabeled", 0.95, "a", "b, c", "", ""], ["s1", "blank", 0.9, "b, c", "", "", ""],
        ["s4", "conflict", 0.8, "b, c", "a", "s3", ""]]
    path = write_table(tmp_path / "suspects.csv", suspects)
    assert path.read_text().splitlines()[:3] == [
        "sample_index,issue,score,given_label,suggested_label,twin,group", "s2,duplicate,1.0,a,a,s0,",
        "s5,shared_mask,1.0,a,,,s5"]


def test_first_cycle_evidence_names_the_flipped_labels(tmp_path):
    """kitlib.audit.dynamics: 80 trained-on samples (confident; the margins below their class's) and 40 held out
    (softer; the kit's confident learning), 3 flips in each."""
    from kitlib import rundir
    from kitlib.audit.dynamics import add_suspects, first_cycle_suspects

    rng = np.random.default_rng(0)
    true = np.tile([0, 1, 2, 3], 30)
    confidence = np.where(np.arange(120) < 80, 0.9, 0.6)  # trained on: confident; held out: softer
    probs = (1 - confidence)[:, None] / 3 * np.ones((120, 4))
    probs[np.arange(120), true] = confidence
    probs = (probs + rng.uniform(0, 0.02, probs.shape)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    given = true.copy()
    flips = [5, 22, 63, 83, 98, 117]
    given[flips] = (true[flips] + 1) % 4
    ids = [f"s{i:03d}" for i in range(120)]
    others = probs.copy()
    others[np.arange(120), given] = 0
    margins = np.log(probs[np.arange(120), given] / others.max(axis=1))  # as if the logits were log-probabilities
    rundir.write_label_evidence(tmp_path, rundir.LabelEvidence(ids, given, ["a", "b", "c", "d"], probs,
                                                               np.arange(120) >= 80, margins))
    found = first_cycle_suspects(tmp_path)
    assert sorted(found["sample_index"]) == [ids[i] for i in flips]
    assert set(found["issue"]) == {"mislabeled"} and (found["score"] >= 0.5).all()
    assert found.set_index("sample_index").loc["s022", ["given_label", "suggested_label"]].tolist() == ["d", "c"]
    # a sample the audit already lists keeps its first issue; the file stays worst first
    write_table(tmp_path / "suspects.csv", pd.DataFrame(
        [["s005", "blank", 0.9, "b", "", "", ""], ["s200", "duplicate", 0.3, "a", "a", "s201", ""]],
        columns=audit.config.SUSPECT_COLUMNS))
    table = add_suspects(tmp_path, found)
    assert table.loc[table["sample_index"] == "s005", "issue"].tolist() == ["blank"]
    assert table["issue"].tolist().count("mislabeled") == 5 and table["score"].is_monotonic_decreasing
    assert table.iloc[-1].tolist() == ["s200", "duplicate", 0.3, "a", "a", "s201", ""]
    assert first_cycle_suspects(tmp_path / "elsewhere").empty  # no evidence written: nothing to say


def test_samples_far_below_their_class_margin_are_listed():
    """low_margins: over 2 robust standard deviations below the class's median margin and below `below` (0 by
    default; higher for a net that memorized, whose flips keep a positive margin); rare classes never."""
    from kitlib.audit.dynamics import low_margins

    true = np.array([0, 1, 2, 3] * 25 + [3, 3])
    margins = 2.0 + 0.1 * ((np.arange(102) // 4) % 5 - 2)  # 1.8 .. 2.2 in each class: median 2, MAD 0.1
    probs = np.full((102, 5), 0.02)
    probs[np.arange(102), true] = 0.92
    given = true.copy()
    flips = [7, 30, 53, 96]
    given[flips] = (true[flips] + 1) % 4
    margins[flips] = [-1.0, -1.0, 0.2, 1.6]  # two the net did not fit, two it memorized (z = -12 and -2.7)
    given[[100, 101]] = [4, 4]  # a class of 2 samples, which the net has not fit either
    margins[[100, 101]] = -1.0
    margins[8] = 1.75  # low, but within 2 robust standard deviations (z = -1.7)
    assert np.flatnonzero(low_margins(margins, probs, given)[0]).tolist() == [7, 30]  # the two below 0
    flagged, score, suggested = low_margins(margins, probs, given, below=1.7)
    assert np.flatnonzero(flagged).tolist() == flips
    assert score[flips].tolist() == pytest.approx([0.96] * 4)  # 24 of its class's 25 have a larger margin
    assert score[8] == pytest.approx(0.92) and score[[100, 101]].tolist() == [0.0, 0.0]
    assert suggested[flips].tolist() == true[flips].tolist()
    assert not low_margins(np.full(102, 0.5), probs, given, below=1.0)[0].any()  # margins that do not spread


def test_a_memorized_flip_is_listed_as_far_as_the_held_out_error_reaches(tmp_path):
    """first_cycle_suspects: every trained-on margin positive (memorized); 4 flips at 0.8 against clean 1.8-2.2.
    The held-out error share opens the trained-on cut by its lower 95 % bound (Clopper-Pearson): none of 20 wrong
    or 2 of 20 (bound 1.8 %: one sample of 100) list no memorized flip; 4 of 20 (bound 7.1 %) list all four."""
    from kitlib import rundir
    from kitlib.audit.dynamics import error_lower_bound, first_cycle_suspects

    assert error_lower_bound(2, 20) == pytest.approx(0.01807, abs=1e-5)
    assert error_lower_bound(4, 20) == pytest.approx(0.07135, abs=1e-5)
    assert error_lower_bound(0, 20) == 0.0 and error_lower_bound(1, 64) == pytest.approx(0.0008, abs=1e-4)
    given = np.array([0, 1, 2, 3] * 30)
    margins = 2.0 + 0.1 * ((np.arange(120) // 4) % 5 - 2)
    flips = [9, 38, 71, 84]
    margins[flips] = 0.8
    probs = np.full((120, 4), 0.1, dtype=np.float32)
    probs[np.arange(120), given] = 0.6 + 0.05 * (np.arange(120) % 5)  # 0.6 .. 0.8: held-out margins spread
    held = np.arange(120) >= 100
    margins[held] = np.nan
    ids = [f"s{i:03d}" for i in range(120)]

    def listed(wrong):
        rotated = probs.copy()
        rotated[wrong] = probs[wrong][:, [1, 2, 3, 0]]  # the net finds the next class 6-8x as probable
        rundir.write_label_evidence(tmp_path, rundir.LabelEvidence(ids, given, list("abcd"), rotated, held, margins))
        return sorted(first_cycle_suspects(tmp_path)["sample_index"])

    assert listed([]) == []  # every held-out sample right: no memorized one is listed
    assert listed([101, 110]) == ["s101", "s110"]
    # the four flips, and two of the four wrong held-out samples: at most 10 % of a group is listed
    assert listed([101, 110, 103, 116]) == [ids[i] for i in flips] + ["s101", "s103"]


def test_probability_margins_are_log_ratios_of_the_given_label_to_the_best_other():
    from kitlib.audit.dynamics import probability_margins

    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    assert probability_margins(probs, np.array([0, 0])).tolist() == pytest.approx([np.log(2), np.log(1 / 7)], abs=1e-5)


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
    assert list(suspects.columns) == ["sample_index", "issue", "score", "given_label", "suggested_label", "twin", "group"]
    assert suspects["score"].astype(float).is_monotonic_decreasing
    found = defects.merge(suspects, on="sample_index", how="left")
    hits = (found["defect"] == found["issue"]).groupby(found["defect"]).sum().to_dict()
    # duplicates: the demo names the copy, the audit flags the later id of the pair (either is right)
    assert hits["blank"] == 8 and hits["alien"] >= 3 and hits["mislabeled"] >= 20
    exact = suspects[(suspects["issue"] == "duplicate") & (suspects["score"] == "1.0")]
    assert len(exact) == 3 and (suspects["issue"] == "duplicate").sum() <= 6  # and look-alike digits, same label
    relabel = found[(found["defect"] == "mislabeled") & (found["issue"] == "mislabeled")]
    assert (relabel["suggested_label"] == relabel["true_label"]).mean() >= 0.9
    false = suspects[~suspects["sample_index"].isin(defects["sample_index"]) & (suspects["issue"] != "duplicate")]
    assert len(false) <= 10
    scores = pd.read_csv(tmp_path / "audit" / "scores.csv")
    assert list(scores.columns) == ["sample_index", "given_label", "blank", "shared_mask", "alien", "conflict",
                                    "duplicate", "mislabeled", "oof_loss", "predicted_label", "twin", "group",
                                    "empty_mask", "full_mask"]
    checks = pd.read_csv(tmp_path / "audit" / "checks.csv", dtype=str, keep_default_na=False)
    # the blank and foreign images were written with empty masks; two test digits look so much like
    # two training digits (one writer, 8x8 scans) that they are reported as leaks
    train = checks[checks["set"] == "train"]
    assert sorted(train["sample_index"]) == sorted(defects.loc[defects["defect"].isin(["blank", "alien"]),
                                                               "sample_index"])
    assert set(train["check"]) == {"empty_mask"}
    assert checks.loc[checks["set"] == "test", ["sample_index", "check", "twin"]].values.tolist() == [
        ["img_0008.png", "leak", "img_1245.png"], ["img_0134.png", "leak", "img_1140.png"]]
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


def test_a_shared_mask_group_of_5_among_50_is_found_whole():
    rng = np.random.default_rng(0)
    images = _tensor([defects.tissue(rng, 48) for _ in range(50)])
    masks = _blob_masks(50)
    group = [4, 11, 23, 37, 48]
    masks[group] = masks[4].clone()  # five images carry one mask
    masks[7] = 0  # an empty mask
    masks[9] = 255  # a mask covering the whole image
    data = _data(images, [i % 2 for i in range(50)], masks=masks)
    scores = audit.score_table(data, None, None, AuditConfig())
    suspects = audit.suspects_from(scores)
    shared = suspects[suspects["issue"] == "shared_mask"]
    assert sorted(shared["sample_index"]) == ["s04", "s11", "s23", "s37", "s48"]
    assert set(shared["group"]) == {"s04"} and set(shared["score"]) == {1.0}
    assert scores.loc[scores["empty_mask"], "sample_index"].tolist() == ["s07"]
    assert scores.loc[scores["full_mask"], "sample_index"].tolist() == ["s09"]
    assert len(suspects) == 5  # empty and full masks are reported in checks.csv, not dropped
    assert audit.scores.train_checks(scores) == [["train", "s07", "empty_mask", 1.0, "", ""],
                                                 ["train", "s09", "full_mask", 1.0, "", ""]]


def test_a_stained_copy_with_another_label_is_a_conflict():
    rng = np.random.default_rng(1)
    images = [defects.tissue(rng, 48) for _ in range(60)]
    images[59] = defects.green_stain(images[12], np.random.default_rng(3))[:, ::-1]  # stained, flipped
    images[58] = defects.ink_mark(images[30], np.random.default_rng(4))  # marked, same label
    labels = [i % 3 for i in range(60)]
    labels[59], labels[58] = (labels[12] + 1) % 3, labels[30]
    data = _data(_tensor(images), labels, classes=("a", "b", "c"))
    suspects = audit.suspects_from(audit.score_table(data, None, None, AuditConfig()))
    # without models the stained copy is the atypical side: flagged, its twin's label suggested
    assert suspects[["sample_index", "issue", "given_label", "suggested_label", "twin"]].values.tolist() == [
        ["s59", "conflict", "b", "a", "s12"], ["s58", "duplicate", "a", "a", "s30"]]
    # with out-of-fold probabilities, the side its fold model believes less is the wrong one
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), labels] = 0.9
    probs[12] = [0.1, 0.85, 0.05]  # the original looks like b: its label a is the suspect one
    scores = audit.score_table(data, probs, np.zeros(60), AuditConfig())
    assert scores.loc[scores["conflict"] >= 0.5, "sample_index"].tolist() == ["s12"]


def _naturals(count: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Colour images with the 1/f amplitude spectrum of natural photos (random phases)."""
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None] ** 2)
    f[0, 0] = 1.0
    out = []
    for _ in range(count):
        x = np.fft.ifft2((rng.normal(size=(3, size, size)) + 1j * rng.normal(size=(3, size, size))) / f).real
        x = np.tensordot(rng.normal(size=(3, 3)) * 0.2 + np.eye(3), x, axes=1)  # correlated channels
        x = (x - x.mean()) / x.std() * rng.uniform(35, 50) + rng.uniform(100, 150, (3, 1, 1))
        out.append(np.clip(x, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    return out


def test_cartoons_among_photo_like_images_stand_out():
    rng = np.random.default_rng(2)
    images = _tensor(_naturals(200) + [defects.cartoon(rng, 48) for _ in range(5)])
    z = audit.statistics_z(images)
    assert sorted(np.argsort(-z)[:5].tolist()) == [200, 201, 202, 203, 204]  # the five cartoons, far ahead
    assert z[200:].min() > 2 * z[:200].max()


def test_rarity_alone_never_makes_a_suspect(tmp_path):
    """Issue 14: the lone sample of a class was flagged alien, score 1.0, by both audits."""
    rng = np.random.default_rng(3)
    images = [defects.tissue(rng, 32) for _ in range(40)] + [defects.cartoon(rng, 32)]  # the lone one looks apart
    data = _data(_tensor(images), [i % 2 for i in range(40)] + [2], classes=("a", "b", "lone"))
    quick = audit.audit(data, AuditConfig(folds=0, train=TrainConfig(epochs=1, images_dir=None, progress=False)),
                        tmp_path / "quick")
    full = audit.audit(data, AuditConfig(folds=2, train=TrainConfig(epochs=1, batch_size=16, images_dir=None,
                                                                     progress=False)), tmp_path / "full")
    for result in (quick, full):
        assert "s40" not in set(result.suspects["sample_index"])
        assert result.scores.set_index("sample_index").loc["s40", ["alien", "mislabeled"]].tolist() == [0.0, 0.0]


def test_the_test_set_is_checked_and_never_dropped(tmp_path):
    """Leaks (a test image that is a training image, exact or stained) and test masks go to checks.csv."""
    from PIL import Image

    from builders import write_csv

    rng = np.random.default_rng(5)
    root = tmp_path / "comp"
    (root / "train_data").mkdir(parents=True)
    (root / "test_data").mkdir()
    train = [defects.tissue(rng, 48) for _ in range(40)]
    masks = _blob_masks(46, seed=1)[:, 0].numpy()
    test = [defects.tissue(rng, 48) for _ in range(3)] + [train[5], defects.green_stain(train[9], rng), train[20]]
    for folder, images, offset in (("train_data", train, 0), ("test_data", test, 40)):
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / folder / f"img_{i:02d}.png")
            Image.fromarray(masks[offset + i]).save(root / folder / f"mask_{i:02d}.png")
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "test_data" / "mask_01.png")  # an empty test mask
    Image.fromarray(masks[20]).save(root / "test_data" / "mask_05.png")  # the copy of img_20 kept its mask
    write_csv(root / "train_labels.csv", [[f"img_{i:02d}.png", "ab"[i % 2]] for i in range(40)])
    write_csv(root / "sample_submission.csv", [[f"img_{i:02d}.png", "a"] for i in range(6)])
    config = AuditConfig(folds=0, train=TrainConfig(epochs=1, images_dir=None, progress=False))
    result = audit.audit(root, config, tmp_path / "audit")
    assert result.suspects.empty
    checks = pd.read_csv(tmp_path / "audit" / "checks.csv", dtype=str, keep_default_na=False)
    assert checks[["set", "sample_index", "check", "twin"]].values.tolist() == [
        ["test", "img_01.png", "empty_mask", ""], ["test", "img_03.png", "leak", "img_05.png"],
        ["test", "img_04.png", "leak", "img_09.png"], ["test", "img_05.png", "leak", "img_20.png"]]
