"""kitlib.review: losses from a run's validation predictions, blank scores, the grid PNG, the review widget."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kitlib import checkpoint
from kitlib.audit import grid as review_grid
from kitlib.audit import review
from kitlib.data import TrainingData, apply_decisions
from kitlib.errors import KitError

CLASSES = ["a", "b, c", 'd "quoted"']
D = CLASSES[2]


def _run(folder, ids, labels, probs):
    """A run folder as fit leaves it, reduced to what review reads: val.csv, val_probs.npy, best.pt's classes."""
    folder.mkdir(parents=True)
    pd.DataFrame({"sample_index": ids, "label": labels}).to_csv(folder / "val.csv", index=False)
    np.save(folder / "val_probs.npy", np.asarray(probs, dtype=np.float32))
    checkpoint.save({"classes": CLASSES}, folder / "best.pt")
    return folder


PROBS = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]]


def test_top_losses_worst_first_with_literal_values(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    table = review.top_losses(run)
    assert list(table.columns) == review.COLUMNS
    assert table["sample_index"].tolist() == ["s1", "s2", "s0"]
    assert table["predicted"].tolist() == [D, "b, c", "a"]
    np.testing.assert_allclose(table["loss"], [2.302585, 0.693147, 0.356675], atol=1e-6)  # -ln p(label)
    np.testing.assert_allclose(table["p_label"], [0.1, 0.5, 0.7], atol=1e-7)
    np.testing.assert_allclose(table["p_pred"], [0.8, 0.5, 0.7], atol=1e-7)
    assert review.top_losses(run, k=1)["sample_index"].tolist() == ["s1"]


def test_top_losses_joins_the_folds_of_one_split(tmp_path):
    _run(tmp_path / "audit" / "fold0", ["s0", "s1"], ["a", "a"], PROBS[:2])
    _run(tmp_path / "audit" / "fold1", ["s2"], ["b, c"], PROBS[2:])
    assert review.top_losses(tmp_path / "audit")["sample_index"].tolist() == ["s1", "s2", "s0"]
    _run(tmp_path / "audit" / "fold2", ["s2"], ["b, c"], PROBS[2:])
    with pytest.raises(KitError, match=r"samples \['s2'\] are in more than one run's validation split"):
        review.top_losses(tmp_path / "audit")
    with pytest.raises(KitError, match="no val_probs.npy there or in its subfolders"):
        review.top_losses(tmp_path)


def _data(images: torch.Tensor, labels: list[str]) -> TrainingData:
    n = len(images)
    return TrainingData(classes=CLASSES, ids=[f"s{i}" for i in range(n)], images=images, masks=None,
                        targets=torch.tensor([CLASSES.index(x) for x in labels]),
                        train_index=torch.arange(n), val_index=torch.arange(0), fit="squash")


def _images() -> torch.Tensor:
    """(3, 3, 4, 4) uint8: s0 half black / half white in every channel, s1 one flat colour, s2 only red varies."""
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    images[0, :, :, 2:] = 255
    images[1] = torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1)
    images[2, 0, :, 2:] = 255
    images[2, 1:] = 90
    return images


def test_blank_scores_and_flattest():
    np.testing.assert_allclose(review.blank_scores(_images()), [0.5, 0.0, 0.5 / 3], atol=1e-12)
    flat = review.flattest(_data(_images(), ["a", "b, c", "a"]), k=2)
    assert flat["sample_index"].tolist() == ["s1", "s2"]
    assert flat["label"].tolist() == ["b, c", "a"]


def test_plot_top_losses_captions_each_image(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    table = review.top_losses(run)
    assert review.caption(table.iloc[0]) == 's1\nlabel: a\npred: d "quoted" (0.80)\nloss 2.30, p(label) 0.10'
    data = _data(_images(), ["a", "a", "b, c"])
    path = review.plot_top_losses(table, data, tmp_path / "images" / "top.png", columns=2)
    assert Image.open(path).size == (420, 540)  # 2 columns x 2.1 in, 2 rows x 2.7 in, at 100 dpi
    with pytest.raises(KitError, match=r"samples \['s9'\] are not in the decoded data"):
        review.plot_top_losses(pd.DataFrame({"sample_index": ["s9"], "label": ["a"]}), data, tmp_path / "x.png")


def test_review_widget_saves_the_exact_csv_that_training_applies(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    data = _data(_images(), ["a", "a", "b, c"])
    table = pd.concat([review.top_losses(run, k=2), review.flattest(data, k=1)])  # s1, s2, then s1 again
    out = tmp_path / "decisions.csv"
    grid = review.review_widget(table, data, out)
    assert grid.ids == ["s1", "s2"]
    assert grid.labels["s1"].value == D and grid.labels["s1"].disabled  # starts at the model's guess
    grid.actions["s1"].value = "relabel"
    grid.actions["s2"].value = "drop"
    assert not grid.labels["s1"].disabled and grid.labels["s2"].disabled
    save_button = grid.widget.children[0].children[0]
    save_button.click()  # as a user would
    assert out.read_text(encoding="utf-8") == (
        'sample_index,action,new_label\ns1,relabel,"d ""quoted"""\ns2,drop,\n')

    # a second review shows s0 and s2: s2 starts as saved, s0 undecided (None), s1 (not shown) is kept in the file
    again = review.review_widget(review.top_losses(run).iloc[1:], data, out)
    assert (again.actions["s2"].value, again.actions["s0"].value) == ("drop", None)
    again.actions["s0"].value = "relabel"
    again.labels["s0"].value = "b, c"
    again.actions["s2"].value = "keep"
    again.save()
    assert out.read_text(encoding="utf-8") == (
        'sample_index,action,new_label\ns1,relabel,"d ""quoted"""\ns2,keep,\ns0,relabel,"b, c"\n')

    samples = pd.DataFrame({"sample_index": ["s0", "s1", "s2", "s3"], "label": ["a", "a", "b, c", "a"]})
    applied = apply_decisions(samples, out, CLASSES)
    assert applied.to_dict("list") == {"sample_index": ["s0", "s1", "s2", "s3"], "label": ["b, c", D, "b, c", "a"]}


def test_review_starts_from_the_audits_suggestion(tmp_path):
    run = _run(tmp_path / "run", ["s0", "s1", "s2"], ["a", "a", "b, c"], PROBS)
    data = _data(_images(), ["a", "a", "b, c"])
    suspects = pd.DataFrame({"sample_index": ["s0", "s2"], "issue": ["mislabeled", "blank"], "score": [0.9, 1.0],
                             "given_label": ["a", "b, c"], "suggested_label": ["b, c", ""]})
    table = pd.concat([suspects, review.top_losses(run, k=2)])  # as notebook 01 shows them: s0, s2, then s1
    grid = review.review_widget(table, data, tmp_path / "decisions.csv")
    assert grid.ids == ["s0", "s2", "s1"]
    assert [grid.labels[s].value for s in grid.ids] == ["b, c", "b, c", D]  # suggestion, given label, prediction
    assert review.caption(table.iloc[0]) == "s0\nlabel: a\nmislabeled 0.90\nsuggested: b, c"
    assert review.caption(table.iloc[1]) == "s2\nlabel: b, c\nblank 1.00"


# --------------------------------------------------------------------------------------------- the review at scale

def _suspects(n: int = 30) -> tuple[pd.DataFrame, TrainingData]:
    """n samples s0..s{n-1}: 5 blank, 5 duplicates (twin: the blank 5 ids before), the rest mislabeled; scores fall."""
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 4, 4)
    labels = [CLASSES[i % 3] for i in range(n)]
    kinds = ["blank"] * 5 + ["duplicate"] * 5 + ["mislabeled"] * (n - 10)
    table = pd.DataFrame({"sample_index": [f"s{i}" for i in range(n)], "issue": kinds,
                          "score": [round(1 - i / 100, 2) for i in range(n)], "given_label": labels,
                          "suggested_label": ["" if k != "mislabeled" else "a" for k in kinds],
                          "twin": [f"s{i - 5}" if kinds[i] == "duplicate" else "" for i in range(n)]})
    return table, _data(images, labels)


def test_review_pages_filters_sort_and_progress(tmp_path):
    table, data = _suspects()
    out = tmp_path / "decisions.csv"
    grid = review.review_widget(table, data, out, page_size=8)
    assert (grid.pages, grid.page, grid.shown, grid.cursor) == (4, 0, [f"s{i}" for i in range(8)], "s0")
    assert grid.page_label.value == "page 1 of 4" and grid.prev.disabled and not grid.next.disabled
    assert grid.status.value == "0 of 30 decided · every click is saved to decisions.csv"
    assert len(grid.grid.children) == 8

    grid.issue_filter.value = "blank"
    assert grid.order == ["s0", "s1", "s2", "s3", "s4"] and grid.pages == 1
    assert grid.apply_to_page("drop", "blank") == ["s0", "s1", "s2", "s3", "s4"]
    assert out.read_text(encoding="utf-8") == "sample_index,action,new_label\n" + "".join(
        f"s{i},drop,\n" for i in range(5))
    assert grid.status.value == "5 of 30 decided (5 drop) · 5 match the filters · every click is saved to decisions.csv"

    grid.issue_filter.value = "all issues"
    grid.class_filter.value = "b, c"
    assert grid.order == [f"s{i}" for i in range(1, 30, 3)]
    assert grid.cursor == "s7"  # the first undecided of the filter
    grid.class_filter.value = "all classes"
    grid.sort.value = "-score"
    assert grid.order[:3] == ["s29", "s28", "s27"] and grid.cursor == "s29"
    grid.sort.value = "order"
    assert (grid.page, grid.cursor) == (0, "s5")  # the page of the first undecided sample
    assert grid.apply_to_page("keep") == ["s5", "s6", "s7"]  # the undecided on this page
    grid.go(9)
    assert (grid.page, grid.shown) == (3, ["s24", "s25", "s26", "s27", "s28", "s29"])
    assert [c for c in grid.issue_filter.options] == ["all issues", "blank", "duplicate", "mislabeled"]
    assert [label for label, _ in grid.bulk.options] == [
        "keep the undecided on this page", "drop the undecided on this page", "drop all blank on this page",
        "drop all duplicate on this page", "drop all mislabeled on this page"]
    with pytest.raises(KitError, match="action 'purge': choose one of drop, keep, relabel"):
        grid.apply_to_page("purge")


def test_review_keys_decide_and_move_the_cursor_across_pages(tmp_path):
    table, data = _suspects(12)
    out = tmp_path / "decisions.csv"
    grid = review.review_widget(table, data, out, page_size=4)
    grid.press("d")  # the cursor's card (s0), then the next one
    grid.press("ArrowRight")
    grid.press("r")  # s2 relabelled to its menu's guess: its given label (a blank suggests nothing)
    assert (grid.actions["s0"].value, grid.actions["s1"].value, grid.actions["s2"].value) == ("drop", None, "relabel")
    assert grid.cursor == "s3"
    grid.press("k")  # the page's last card: the next page opens on its first
    assert (grid.page, grid.cursor) == (1, "s4")
    grid.press("p")
    assert (grid.page, grid.cursor) == (0, "s1")  # paging puts the cursor on the page's first undecided card
    grid.press("ArrowLeft")
    grid.press("ArrowLeft")  # the first card: it stays
    assert grid.cursor == "s0"
    grid.press("n")
    grid.press("x")  # not a shortcut: nothing happens
    assert (grid.page, grid.cursor) == (1, "s4")
    grid.actions["s5"].value = "drop"  # a click moves the cursor past the card, within the page
    assert grid.cursor == "s6"
    assert read_decisions_rows(out) == [("s0", "drop", ""), ("s2", "relabel", D), ("s3", "keep", ""),
                                        ("s5", "drop", "")]
    grid.press("o")
    assert grid.viewing == "s6" and grid.viewer.layout.display == "flex" and grid.grid.layout.display == "none"
    assert "the decoded copy" in grid._view_title.value
    grid.press("d")  # deciding in the viewer moves it on to the next card
    assert (grid.viewing, grid.actions["s6"].value) == ("s7", "drop")
    grid.press("Escape")
    assert grid.viewing is None and grid.grid.layout.display is None

    again = review.review_widget(table, data, out, page_size=4)  # reopened: every decision, first undecided
    assert [again.actions[s].value for s in again.ids[:8]] == ["drop", None, "relabel", "keep", None, "drop", "drop",
                                                               None]
    assert (again.page, again.cursor, again.labels["s2"].value) == (0, "s1", D)
    assert again.status.value.startswith("5 of 12 decided (3 drop, 1 keep, 1 relabel)")


def read_decisions_rows(path) -> list[tuple[str, str, str]]:
    """decisions.csv's rows as training reads them."""
    return list(review.read_decisions(path).itertuples(index=False, name=None))


def test_review_cards_show_twins_and_groups_beside_the_image(tmp_path):
    table, data = _suspects(12)
    table["group"] = ["g1", "", "g1", "", "", "", "", "", "", "", "s3;s4", ""]
    grid = review.review_widget(table, data, tmp_path / "decisions.csv", page_size=12)
    assert grid.partners["s5"] == ["s0"]  # a duplicate's twin
    assert grid.partners["s0"] == ["s2"] and grid.partners["s2"] == ["s0"]  # a group key shared by rows
    assert grid.partners["s10"] == ["s3", "s4"]  # a group given as ids
    pictures = grid._card("s5").children[0].children  # the image, its twin beside it
    assert len(pictures) == 2 and pictures[0].value[:8] == b"\x89PNG\r\n\x1a\n"
    assert [len(row.children) for row in grid._card("s10").children[:2]] == [1, 2]  # a group: in a row below
    assert review.caption(table.iloc[5]) == "s5\nlabel: d \"quoted\"\nduplicate 0.95\ntwin: s0"
    assert review.caption(table.iloc[10]) == "s10\nlabel: b, c\nmislabeled 0.90\nsuggested: a\ngroup: s3;s4"
    table["group"] = [7, None, 7, None, None, None, None, None, None, None, 7, None]  # group keys as numbers
    assert review.review_widget(table, data, tmp_path / "decisions.csv").partners["s10"] == ["s0", "s2"]
    data_without_s0 = _data(data.images[1:], [CLASSES[i % 3] for i in range(1, 12)])
    with pytest.raises(KitError, match=r"samples \['s11'\] are not in the decoded data"):
        review.review_widget(table, data_without_s0, tmp_path / "other.csv")


def test_review_opens_the_image_file_at_a_readable_size_with_its_mask(tmp_path):
    table, data = _suspects(12)
    slide = tmp_path / "img_0.png"
    Image.fromarray(np.full((1000, 3000, 3), 200, dtype=np.uint8)).save(slide)  # a 3000 x 1000 slide
    mask = np.zeros((1000, 3000), dtype=np.uint8)
    mask[200:800, 600:2400] = 255
    Image.fromarray(mask).save(tmp_path / "mask_0.png")
    samples = pd.DataFrame({"sample_index": ["s0", "s1"], "image": [slide, slide],
                            "mask": [tmp_path / "mask_0.png", None]})
    grid = review.review_widget(table, data, tmp_path / "decisions.csv", competition=samples, view_size=1024)
    grid.open("s0")
    shown = Image.open(io.BytesIO(grid._view_image.value))
    assert shown.size == (1024, 341) and grid._view_image.layout.width == "1024px"
    assert "img_0.png, 3000 x 1000 px, mask outlined" in grid._view_title.value
    pixels = np.asarray(shown)
    green = (pixels == review_grid.OUTLINE).all(axis=2)
    assert green[68:273, 205:819].sum() == green.sum() > 0  # the outline runs along the mask's rectangle
    assert green[100, 205:207].all() and not green[100, 207:817].any()  # 2 px wide at 1024 px, hollow inside
    grid.open("s1")
    assert "mask outlined" not in grid._view_title.value
    grid.open("s2")  # not in the sample table: the decoded pixels, enlarged
    assert Image.open(io.BytesIO(grid._view_image.value)).size == (512, 512)


def test_view_png_turns_a_photo_upright_and_enlarges_small_images(tmp_path):
    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    Image.fromarray(np.zeros((400, 1200, 3), dtype=np.uint8)).save(photo, exif=exif)
    png, size = review_grid.view_png(photo, longest=600)
    assert size == (400, 1200) and Image.open(io.BytesIO(png)).size == (200, 600)
    mask = np.zeros((400, 1200), dtype=np.uint8)  # drawn on the stored pixels: its left quarter
    mask[:, :300] = 255
    Image.fromarray(mask).save(tmp_path / "photo_mask.png")
    png, _ = review_grid.view_png(photo, tmp_path / "photo_mask.png", longest=600)
    green = (np.asarray(Image.open(io.BytesIO(png))) == review_grid.OUTLINE).all(axis=2)
    rows = np.flatnonzero(green.any(axis=1))
    assert (rows.min(), rows.max()) == (0, 149)  # turned with the photo: the top quarter as shown
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "digit.png")
    png, size = review_grid.view_png(tmp_path / "digit.png")
    assert size == (32, 32) and Image.open(io.BytesIO(png)).size == (512, 512)
    with pytest.raises(KitError, match="missing.png: the file is missing"):
        review_grid.view_png(tmp_path / "missing.png")


def test_outline_and_card_png_literal():
    mask = np.zeros((5, 6), dtype=np.uint8)
    mask[1:4, 1:5] = 1
    assert review_grid.outline(mask).astype(int).tolist() == [
        [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 1, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]]
    assert review_grid.outline(np.ones((3, 3))).astype(int).tolist() == [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    image = np.zeros((5, 6, 3), dtype=np.uint8)
    card = Image.open(io.BytesIO(review_grid.card_png(image, mask, size=24)))
    assert card.size == (24, 20)  # enlarged 4x by whole pixels
    assert np.asarray(card)[4, 4].tolist() == list(review_grid.OUTLINE) and np.asarray(card)[8, 8].tolist() == [0, 0, 0]
