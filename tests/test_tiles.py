"""Slides with masks: tile geometry, coverage, fallbacks, per-image aggregation, grouped splits, end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from builders import SLIDE_LABELS, csv_competition, slide_competition
from PIL import Image

from kitlib.__main__ import main
from kitlib.data import images as image_files
from kitlib.data import load_competition, prepare, prepare_for
from kitlib.data.dataset import with_decisions
from kitlib.data.masks import choose_masks
from kitlib.data.tiles import TileSpec, aggregate, build_tiles, cut_image
from kitlib.errors import KitError
from kitlib.train import TrainConfig, fit


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))


def _slide(tmp_path, mask: np.ndarray | None, size=(200, 300), name="img_0.png"):
    """A noise image of (h, w) = size with `mask` (uint8, same size) saved beside it as mask_*.png."""
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / name)
    if mask is None:
        return str(tmp_path / name), None
    Image.fromarray(mask).save(tmp_path / name.replace("img_", "mask_"))
    return str(tmp_path / name), str(tmp_path / name.replace("img_", "mask_"))


def _rectangle(y0, y1, x0, x1, size=(200, 300), value=255) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[y0:y1, x0:x1] = value
    return mask


# --------------------------------------------------------------------------------------------- geometry

def test_tiles_lie_on_a_half_tile_grid_inside_the_mask(tmp_path):
    mask = _rectangle(40, 104, 100, 228)  # a 64 x 128 region
    mask[150:152, 10:12] = 255  # a 4 px speck, under 5 % of a tile's area: dropped
    cut = cut_image(*_slide(tmp_path, mask), TileSpec(size=64))
    assert cut["status"] == "mask"
    assert [p.shape for p in cut["pieces"]] == [(128, 192, 3)]  # the region plus half a tile each side
    assert cut["origins"] == [(8, 68)]
    assert cut["grid"] == [(0, 0, 32), (0, 0, 64), (0, 0, 96), (0, 32, 0), (0, 32, 32), (0, 32, 64), (0, 32, 96),
                           (0, 32, 128), (0, 64, 32), (0, 64, 64), (0, 64, 96)]
    assert cut["coverage"].tolist() == [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    positions = cut["positions"][0]
    assert len(positions) == 113 and (positions % 8 == 0).all()  # every 8 px where coverage >= 0.5


def test_a_region_smaller_than_the_coverage_still_gives_its_windows(tmp_path):
    cut = cut_image(*_slide(tmp_path, _rectangle(60, 84, 60, 84)), TileSpec(size=64))  # 24 x 24: 14 % of a tile
    assert cut["status"] == "mask" and len(cut["grid"]) == 1
    assert cut["coverage"].tolist() == [pytest.approx(576 / 4096)]
    y, x = cut["grid"][0][1:]
    piece_y, piece_x = cut["origins"][0]
    assert piece_y + y <= 60 and piece_y + y + 64 >= 84 and piece_x + x <= 60 and piece_x + x + 64 >= 84


def test_crop_mode_cuts_each_region_with_a_margin(tmp_path):
    mask = _rectangle(40, 104, 100, 228)
    mask[150:190, 20:60] = 255  # a second, smaller region
    cut = cut_image(*_slide(tmp_path, mask), TileSpec(mode="crop", size=64))
    assert cut["origins"] == [(27, 87), (142, 12)]  # largest first; margins of 13 and 8 px
    assert [p.shape for p in cut["pieces"]] == [(64, 64, 3), (64, 64, 3)]
    assert cut["coverage"].tolist() == pytest.approx([8192 / (90 * 154), 1600 / (56 * 56)])


@pytest.mark.parametrize("mask,status", [(None, "no mask"), (np.zeros((200, 300), np.uint8), "empty mask"),
                                         (np.full((200, 300), 255, np.uint8), "full mask")])
def test_images_without_a_usable_mask_fall_back_to_the_whole_image(tmp_path, mask, status, capsys):
    image, mask_file = _slide(tmp_path, mask)
    tiles = build_tiles([image], [mask_file], TileSpec(size=64), progress=False)
    assert tiles.status == [status] and tiles.fallbacks() == [(image, status)]
    assert tiles.pieces[0].shape == (200, 300, 3) and len(tiles) == 32  # windows anywhere, capped
    assert f"1 fell back to the whole image (1 {status}): img_0.png" in capsys.readouterr().out


def test_tiles_are_cached_per_image_and_memory_mapped_when_large(tmp_path, monkeypatch, capsys):
    from kitlib.data import tiles as tiling

    image, mask_file = _slide(tmp_path, _rectangle(40, 104, 100, 228))
    first = build_tiles([image], [mask_file], TileSpec(size=64), progress=False)
    assert "1 images cut" in capsys.readouterr().out
    monkeypatch.setattr(tiling, "total_ram", lambda: 100)  # pretend the machine has 100 bytes
    again = build_tiles([image], [mask_file], TileSpec(size=64), progress=False)
    out = capsys.readouterr().out
    assert "tiles: 1 of 64 px" not in out and "memory-mapped from the cache" in out  # described once a process
    monkeypatch.setattr(tiling, "_ANNOUNCED", set())  # as a new process finds it
    build_tiles([image], [mask_file], TileSpec(size=64), progress=False)
    assert "0 images cut" in capsys.readouterr().out
    assert torch.equal(first.cut(torch.arange(len(first))), again.cut(torch.arange(len(again))))


def test_a_graded_mask_is_thresholded_at_half_its_largest_value(tmp_path, capsys):
    mask = _rectangle(40, 104, 100, 228, value=200)
    mask[40:104, 100:140] = 90  # below half of 200: not part of the mask
    tiles = build_tiles([_slide(tmp_path, mask)[0]], [str(tmp_path / "mask_0.png")], TileSpec(size=64), progress=False)
    assert tiles.origins.tolist() == [[8, 108]]  # the region starts at x = 140
    assert "1 mask(s) held more than two values; a pixel counts as masked from half the mask's largest value up" in \
        capsys.readouterr().out


def test_a_mask_of_another_size_is_stretched_onto_its_image(tmp_path):
    # the course's cartoons carried one mask file whatever their size: half the image's size, twice as coarse
    image, _ = _slide(tmp_path, None)
    Image.fromarray(_rectangle(20, 52, 50, 114, size=(100, 150))).save(tmp_path / "mask_0.png")
    cut = cut_image(image, str(tmp_path / "mask_0.png"), TileSpec(size=64))
    assert cut["status"] == "mask" and cut["origins"] == [(8, 68)]  # as the full-size mask of the first test
    assert len(cut["grid"]) == 11


def test_slides_over_the_cap_are_named(tmp_path, monkeypatch):
    image, _ = _slide(tmp_path, None)
    monkeypatch.setattr(image_files, "MAX_PIXELS", 50_000)
    with pytest.raises(KitError, match=r"img_0.png: 300 x 200 px is over the kit's limit of 50,000 px"):
        build_tiles([image], [None], TileSpec(size=32), progress=False)


def test_random_windows_stay_inside_the_mask(tmp_path):
    mask = _rectangle(60, 124, 60, 188)
    image, mask_file = _slide(tmp_path, mask)
    tiles = build_tiles([image], [mask_file], TileSpec(size=32, coverage=0.9), progress=False)
    rows = torch.zeros(200, dtype=torch.int64)
    first = tiles.draw(rows, torch.Generator().manual_seed(0))
    assert torch.equal(first, tiles.draw(rows, torch.Generator().manual_seed(0)))  # seeded: resumable
    pixels = np.array(Image.open(image))
    y0, x0 = tiles.origins[0].tolist()
    for window in first[:20]:  # each window is somewhere inside the region
        found = [(y, x) for y, x in tiles.positions[0].tolist()
                 if torch.equal(window, torch.from_numpy(pixels[y0 + y:y0 + y + 32, x0 + x:x0 + x + 32]).permute(2, 0, 1))]
        (y, x), = found
        assert mask[y0 + y:y0 + y + 32, x0 + x:x0 + x + 32].mean() >= 0.9 * 255
    assert len({tuple(w.flatten()[:16].tolist()) for w in first}) > 10  # not the same window every time


# --------------------------------------------------------------------------------------------- per image

def test_aggregation_per_image_literal_values():
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    owner = torch.tensor([0, 0, 1])
    assert aggregate(probs, owner, 2).flatten().tolist() == pytest.approx([0.6, 0.4, 0.1, 0.9])
    weighted = aggregate(probs, owner, 2, "coverage", torch.tensor([1.0, 3.0, 0.0]))
    assert weighted.flatten().tolist() == pytest.approx([0.5, 0.5, 0.1, 0.9])  # all-zero weights: the plain mean
    geometric = aggregate(probs, owner, 2, "logit")
    expected = np.sqrt([0.8 * 0.4, 0.2 * 0.6])
    assert geometric[0].tolist() == pytest.approx((expected / expected.sum()).tolist())
    with pytest.raises(KitError, match="aggregate 'max': choose one of mean, coverage, logit"):
        aggregate(probs, owner, 2, "max")


def test_auto_picks_tiles_for_slides_and_ignores_small_images(tmp_path):
    slides = load_competition(slide_competition(tmp_path / "slides", per_class=(2, 2, 2, 2), test=0))
    mode, reason = choose_masks("auto", slides, 32)
    assert mode == "tiles" and reason.startswith("8 of 8 training images have a mask and their median longer side "
                                                 "(190 px) is 5.9x the training size (32 px)")
    small = load_competition(csv_competition(tmp_path / "small"))  # 8 x 8 px images, each with a mask
    assert choose_masks("auto", small, 64)[0] == "ignore"
    bare = load_competition(csv_competition(tmp_path / "bare", masks=False))
    with pytest.raises(KitError, match=r"--masks tiles: no training image of .*bare has a mask file"):
        choose_masks("tiles", bare, 64)


def test_one_image_s_tiles_never_straddle_the_split(tmp_path):
    comp = load_competition(slide_competition(tmp_path / "slides", per_class=(6, 6, 6, 6), test=0))
    data = prepare(comp, size=32, val_fraction=0.25, tiles=TileSpec(size=24), mask_mode="tiles", progress=False)
    tiles = data.tiles
    train_tiles = set(tiles.tiles_of(data.train_index).tolist())
    val_tiles = set(tiles.tiles_of(data.val_index).tolist())
    assert train_tiles.isdisjoint(val_tiles) and len(train_tiles | val_tiles) == len(tiles)
    assert set(tiles.tile_sample[sorted(val_tiles)].tolist()) == set(data.val_index.tolist())
    folds = prepare(comp, size=32, folds=3, fold=1, tiles=TileSpec(size=24), mask_mode="tiles", progress=False)
    assert set(folds.tiles.tile_sample[folds.tiles.tiles_of(folds.train_index)].tolist()).isdisjoint(
        folds.val_index.tolist())


def test_decisions_applied_to_decoded_data_match_a_fresh_prepare(tmp_path):
    comp = load_competition(slide_competition(tmp_path / "slides", per_class=(6, 6, 6, 6), test=0))
    ids = list(comp.samples["sample_index"])
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"sample_index,action,new_label\n{ids[0]},drop,\n{ids[7]},relabel,\"{SLIDE_LABELS[3]}\"\n"
                         f"{ids[20]},drop,\n")
    options = dict(size=32, val_fraction=0.25, tiles=TileSpec(size=24), mask_mode="tiles", progress=False)
    fresh = prepare(comp, decisions=decisions, **options)
    kept = with_decisions(prepare(comp, **options), comp, decisions)
    assert kept.ids == fresh.ids and len(kept.ids) == 22
    assert kept.targets[6].item() == comp.classes.index(SLIDE_LABELS[3])
    for name in ("images", "masks", "targets", "train_index", "val_index"):
        assert torch.equal(getattr(kept, name), getattr(fresh, name)), name
    a, b = kept.tiles, fresh.tiles
    assert len(a) == len(b) and a.status == b.status and a.sources == b.sources
    for name in ("piece_sample", "origins", "grid", "coverage"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert all(torch.equal(x, y) for x, y in zip(a.pieces, b.pieces))
    assert torch.equal(a.cut(torch.arange(len(a))), b.cut(torch.arange(len(b))))


# --------------------------------------------------------------------------------------------- end to end

TINY = dict(image_size=24, batch_size=32, model="resnet_small", progress=False, images_dir=None,
            model_options={"widths": [16, 32, 64], "stem_width": 16})


def test_train_on_tiles_validates_per_image_and_resumes(tmp_path):
    comp = load_competition(slide_competition(tmp_path / "slides", per_class=(8, 8, 8, 8), test=0))
    data = prepare_for(comp, TrainConfig(**TINY))
    assert data.mask_mode == "tiles" and len(data.tiles) > len(data.ids)
    run = tmp_path / "run"
    fit(data, TrainConfig(epochs=1, **TINY), run)
    validated = pd.read_csv(run / "val.csv")
    assert len(validated) == len(data.val_index) == 8  # one row per image, not per tile
    assert np.load(run / "val_probs.npy").shape == (8, 4)
    config = json.loads((run / "config.json").read_text())
    assert config["masks"] == "tiles" and config["tiles"]["size"] == 24 and config["normalization"]["tiles"]["size"] == 24
    assert (run / "tile_votes.png").exists()
    again = fit(data, TrainConfig(epochs=2, **TINY), run, resume=True)
    assert [row["epoch"] for row in again.history] == [1, 2]


def test_all_on_slides_writes_one_row_per_image(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = slide_competition(tmp_path / "slides", per_class=(10, 8, 6, 6), test=12)
    run = tmp_path / "run"
    assert main(["all", str(root), "--out", str(run), "--epochs", "3", "--size", "24", "--audit", "none"]) == 0
    out = capsys.readouterr().out
    assert "masks: tiles: 30 of 30 training images have a mask" in out
    submission = pd.read_csv(run / "submission.csv", dtype=str)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert list(submission["sample_index"]) == list(sample["sample_index"]) and len(submission) == 12
    assert set(submission["label"]) <= set(SLIDE_LABELS)
    answers = pd.read_csv(tmp_path / "slides_answers.csv", dtype=str)
    assert (submission["label"] == answers["label"]).mean() >= 0.5  # the textures are easy inside the masks
    # a second run that ignores the masks ensembles with the tile run: each predicts its own way
    whole = tmp_path / "whole"
    assert main(["train", str(root), "--out", str(whole), "--epochs", "1", "--size", "24", "--masks", "ignore"]) == 0
    assert main(["predict", str(run), str(whole), "--data", str(root), "--out", str(tmp_path / "both.csv"),
                 "--aggregate", "logit"]) == 0
    assert len(pd.read_csv(tmp_path / "both.csv")) == 12
    record = json.loads((tmp_path / "both.json").read_text())
    assert record["aggregate"] == "logit" and len(record["runs"]) == 2


def test_the_mask_as_a_fourth_channel(tmp_path):
    root = slide_competition(tmp_path / "slides", per_class=(6, 6, 6, 6), test=4)
    run = tmp_path / "run"
    assert main(["train", str(root), "--out", str(run), "--epochs", "1", "--masks", "channel",
                 "--size", "32"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["masks"] == "channel" and config["model_spec"]["in_channels"] == 4
    assert config["normalization"]["mask_channel"] is True
    assert main(["predict", str(run), "--data", str(root), "--out", str(tmp_path / "sub.csv"), "--tta"]) == 0
    assert len(pd.read_csv(tmp_path / "sub.csv")) == 4


def test_the_audit_scores_each_slide_through_its_tiles(tmp_path):
    from kitlib.audit import AuditConfig, audit

    comp = load_competition(slide_competition(tmp_path / "slides", per_class=(6, 6, 6, 6), test=0))
    config = AuditConfig(folds=2, train=TrainConfig(epochs=1, **TINY))
    result = audit(comp, config, tmp_path / "audit")
    assert len(result.scores) == 24 and result.oof_probs.shape == (24, 4)  # one row per slide
    assert (result.scores["oof_loss"] > 0).all()
    validated = pd.read_csv(tmp_path / "audit" / "folds" / "fold0" / "val.csv")
    assert len(validated) == 12  # the fold model validated on slides, not on tiles


def test_pretrained_models_take_tiles_at_their_weights_size(tmp_path, monkeypatch):
    from kitlib.notebook import fake_offline_weights

    monkeypatch.setenv("KIT_OFFLINE", "1")
    fake_offline_weights("mobilenet_v3_small")  # weights made here: no download
    comp = load_competition(slide_competition(tmp_path / "slides", per_class=(3, 3, 3, 3), test=0))
    config = TrainConfig(model="mobilenet_v3_small", pretrained=True, masks="tiles", epochs=1, batch_size=16,
                         progress=False, images_dir=None, tiles_per_image=2)
    data = prepare_for(comp, config)
    assert data.tiles.spec.size == 224 and data.tiles.cut(torch.tensor([0])).shape == (1, 3, 224, 224)
    fit(data, config, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["image_size"] == 224 and saved["finetune"] is True


def test_images_of_any_size_sharing_one_mask_file_are_one_group_and_listed(tmp_path, capsys):
    # the course's cartoons carried one and the same mask file whatever their size: no stop, one group
    root = slide_competition(tmp_path / "slides", per_class=(6, 5, 4, 3), test=4)
    train, test = root / "train_data", root / "test_data"
    for number, size in ((1, (170, 120)), (2, (190, 150)), (3, (120, 120))):
        Image.open(train / f"img_{number:04d}.png").resize(size).save(train / f"img_{number:04d}.png")
        (train / f"mask_{number:04d}.png").write_bytes((train / "mask_0000.png").read_bytes())
    test_mask = sorted(test.glob("mask_*.png"))[0]
    Image.open(test_mask).resize((95, 75)).save(test_mask)
    assert main(["audit", str(root), "--out", str(tmp_path / "audit"), "--folds", "0"]) == 0
    out = capsys.readouterr().out  # img_0002 keeps the slide's size: its mask fits
    assert "masks: 2 not the size of their image, each stretched onto it: train_data/mask_0001.png (190x150 onto 170x120), " \
           "train_data/mask_0003.png (190x150 onto 120x120) (the audit lists them in checks.csv as mask_size)" in out
    assert "masks: 1 not the size of their image, each stretched onto it: test_data/mask_0000.png (95x75 onto 190x150)" in out
    # train and test, each said once (the test set's tiles are cut in the audit, for the prediction)
    assert sum(line.startswith("tiles: ") and " px (tiles) from " in line for line in out.splitlines()) == 2
    checks = pd.read_csv(tmp_path / "audit" / "checks.csv", dtype=str, keep_default_na=False)
    assert checks.loc[checks["check"] == "mask_size", ["set", "sample_index"]].values.tolist() == [
        ["train", "img_0001.png"], ["train", "img_0003.png"], ["test", test_mask.name.replace("mask_", "img_")]]
    suspects = pd.read_csv(tmp_path / "audit" / "suspects.csv", dtype=str, keep_default_na=False)
    assert sorted(suspects.loc[suspects["issue"] == "shared_mask", "sample_index"]) == [
        "img_0000.png", "img_0001.png", "img_0002.png", "img_0003.png"]


@pytest.mark.parametrize("fit", ["squash", "pad"])
def test_slides_are_read_once_and_decode_as_the_cache_decodes_them(tmp_path, capsys, fit):
    root = slide_competition(tmp_path / "slides", per_class=(3, 3, 2, 2), test=0)
    image = root / "train_data" / "img_0001.png"
    Image.open(image).resize((170, 120)).save(image)  # its mask is now stretched onto it
    competition = load_competition(root)
    data = prepare(competition, size=(40, 48), fit=fit, tiles=TileSpec(size=24), val_fraction=0, progress=False)
    out = capsys.readouterr().out
    assert "decoded 10 images into" in out and ": 10 while cutting their tiles\n" in out
    from kitlib.data.cache import decode_table
    direct = decode_table(competition.samples, size=(40, 48), fit=fit, cache=tmp_path / "direct", progress=False)
    assert torch.equal(data.images, direct.images) and torch.equal(data.masks, direct.masks)
    assert data.stretched_masks == {"img_0001.png": "190x150 onto 170x120"} and direct.stretched == {1: "190x150 onto 170x120"}
