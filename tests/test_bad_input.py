"""Bad and unusual input as real competitions bring it (issue 14): each kind handled, each concrete case literal.

Commands run in-process through kitlib.__main__.main (one import of torch for the whole file); the
fuzz test feeds empty, cut-off, HTML and foreign versions of every file kind to every command that
reads it and wants exit 2, one line naming the file, no traceback and an untouched data folder.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from builders import csv_competition, imagefolder_competition, png, snapshot, tinyimagenet_competition, write_csv
from kitlib import metrics
from kitlib.__main__ import build_parser, main
from kitlib.data import cache, eda, load_competition, tiles
from kitlib.data import images as image_files
from kitlib.data.dataset import apply_decisions
from kitlib.errors import KitError
from kitlib.files import file_kind, read_csv_strings
from kitlib.predict.report import evaluate

HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # runs' curves go to ./images


def run(capsys, *argv) -> tuple[int, str, str]:
    """main(argv) as the command line runs it: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The one error line of a failed command's stderr (progress bars and warnings aside)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def warning_lines(err: str) -> list[str]:
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("warning: ")]


# --------------------------------------------------------------------------------------------- 1. leftovers

def test_jupyter_checkpoints_in_a_flat_test_folder(tmp_path, capsys):
    """The concrete case: test/ holds 8 images and .ipynb_checkpoints/; predict writes the 8-row submission."""
    root = imagefolder_competition(tmp_path / "comp")
    for i in range(4, 8):
        png(root / "test" / f"t{i}.png")
    png(root / "test" / ".ipynb_checkpoints" / "t0-checkpoint.png")
    assert run(capsys, "train", root, "--out", tmp_path / "run", "--epochs", 1)[0] == 0
    code, out, err = run(capsys, "predict", tmp_path / "run", "--data", root, "--out", tmp_path / "sub.csv")
    assert code == 0
    submission = pd.read_csv(tmp_path / "sub.csv", dtype=str)
    assert list(submission["sample_index"]) == [f"t{i}.png" for i in range(8)]
    assert warning_lines(err) == [f"warning: {root}: ignored 1 file(s) or folder(s) that an OS, an archiver or an "
                                  "editor leaves behind: test/.ipynb_checkpoints/"]


def _litter(root: Path, folders: list[Path]) -> None:
    """What macOS, Windows, Jupyter, editors and archivers leave, in `root` and each folder."""
    for folder in [root, *folders]:
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        png(folder / ".ipynb_checkpoints" / "x-checkpoint.png")
        for image in list(folder.glob("*.png"))[:1] + list(folder.glob("*.JPEG"))[:1]:
            (folder / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a resource fork
    png(root / "__MACOSX" / "._img.png")


@pytest.mark.parametrize("layout", ["csv", "imagefolder", "tinyimagenet"])
def test_leftovers_are_ignored_in_every_layout_and_named_once(tmp_path, layout):
    build = {"csv": csv_competition, "imagefolder": imagefolder_competition,
             "tinyimagenet": tinyimagenet_competition}[layout]
    clean, littered = build(tmp_path / "clean"), build(tmp_path / "littered")
    folders = sorted({p.parent for p in littered.rglob("*") if p.suffix in (".png", ".JPEG")})
    _litter(littered, folders)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = load_competition(littered)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "an OS, an archiver or an editor leaves behind" in messages[0]
    assert ".ipynb_checkpoints/" in messages[0] and "__MACOSX/" in messages[0] and ".DS_Store" in messages[0]
    want = load_competition(clean)
    assert got.classes == want.classes and got.layout == want.layout
    for table in ("samples", "test"):
        a, b = getattr(got, table), getattr(want, table)
        assert list(a["sample_index"]) == list(b["sample_index"]) and list(a["label"]) == list(b["label"])


def test_a_macos_zip_unpacked_beside_its_folder(tmp_path):
    """competition/ and __MACOSX/ side by side (a zip made on a Mac): the kit descends into competition/."""
    csv_competition(tmp_path / "download" / "competition")
    png(tmp_path / "download" / "__MACOSX" / "competition" / "train_data" / "._img_0000.png")
    with pytest.warns(UserWarning, match="__MACOSX/"):
        assert load_competition(tmp_path / "download").root == tmp_path / "download" / "competition"


# --------------------------------------------------------------------------------------------- 2. invisible characters

def _cats_and_dogs(root: Path, labels: list[str], header=("sample_index", "label")) -> Path:
    for i in range(len(labels)):
        png(root / "train_data" / f"img_{i:04d}.png", value=200 if labels[i].strip().lower() == "cat" else 20)
    for i in range(4):
        png(root / "test_data" / f"img_{i:04d}.png", value=200 if i % 2 else 20)
    write_csv(root / "train_labels.csv", [[f"img_{i:04d}.png", label] for i, label in enumerate(labels)],
              header=header)
    return root


def test_a_trailing_space_makes_no_class(tmp_path, capsys):
    """The concrete case: two rows say 'cat ' and the rest 'cat'; no third class, no label with a space."""
    labels = ["cat", "dog", "cat ", "dog", "cat", "dog", "cat ", "dog", "cat", "dog"]
    root = _cats_and_dogs(tmp_path / "comp", labels)
    with pytest.warns(UserWarning) as caught:
        competition = load_competition(root)
    assert competition.classes == ["cat", "dog"]
    assert [str(w.message) for w in caught] == [
        f"{root / 'train_labels.csv'}: 2 cell(s) had surrounding whitespace or invisible characters, removed: "
        "line 4 label 'cat ', line 8 label 'cat '"]
    assert run(capsys, "train", root, "--out", tmp_path / "run", "--epochs", 1)[0] == 0
    assert run(capsys, "predict", tmp_path / "run", "--data", root, "--out", tmp_path / "sub.csv")[0] == 0
    assert set(pd.read_csv(tmp_path / "sub.csv", dtype=str)["label"]) <= {"cat", "dog"}


def test_invisible_characters_in_ids_labels_and_header(tmp_path):
    labels = ["cat", "dog\u00a0", "\u200bcat", "dog", "Triple  negative", "Triple negative", "Triple negative",
              "Cat"]
    root = _cats_and_dogs(tmp_path / "comp", labels, header=("\ufeff Image_Name ", "Label\u200b"))
    frame = pd.read_csv(root / "train_labels.csv", dtype=str, keep_default_na=False)
    frame.iloc[3, 0] = "img_0003.png\u200b"  # a zero-width space pasted from a web page
    frame.to_csv(root / "train_labels.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        competition = load_competition(root)
    messages = [str(w.message).removeprefix(f"{root / 'train_labels.csv'}: ") for w in caught]
    assert competition.classes == ["Cat", "Triple negative", "cat", "dog"]
    assert list(competition.samples["sample_index"])[3] == "img_0003.png"
    assert messages[0] == ("5 cell(s) had surrounding whitespace or invisible characters, removed: header ' Image_Name ', "
                           "header 'Label\\u200b', line 3 Label 'dog\\xa0', line 4 Label '\\u200bcat', "
                           "line 5 Image_Name 'img_0003.png\\u200b'")
    assert messages[1] == ("1 label(s) differ from a commoner one only in whitespace and are read as it: "
                                "line 6 'Triple  negative' -> 'Triple negative'")
    assert messages[2] == ("labels that differ only in case are separate classes: 'cat' (2 rows) vs 'Cat' "
                                "(1 rows). If they are one class, relabel one spelling in a decisions.csv "
                                "(train --decisions).")


# --------------------------------------------------------------------------------------------- 3. files that lie

def _torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _cut(good: bytes, text: bool) -> bytes:
    """The file as a download that stopped leaves it: a binary file's first half; a text file up to the first
    characters of the line after its middle (a cut that ends a line leaves a shorter valid file, which is no error)."""
    middle = len(good) // 2
    if not text:
        return good[:middle]
    line_end = good.find(b"\n", middle)
    return good[:line_end + 6] if 0 <= line_end < len(good) - 6 else good[:middle]


PNG_BYTES = (lambda b: (Image.new("RGB", (8, 8), (9, 9, 9)).save(b, "PNG"), b.getvalue())[1])(io.BytesIO())
VARIANTS = {"empty": lambda good, text: b"", "cut off": _cut,
            "an HTML page": lambda good, text: HTML,
            "foreign": lambda good, text: PNG_BYTES if text else b"sample_index,label\nimg_0000.png,cat\n"}

# file kind -> (path in the set-up, is text, the commands that read it)
KINDS = {
    "labels CSV": ("comp/train_labels.csv", True, ["eda", "audit", "train", "predict", "all"]),
    "sample submission": ("comp/sample_submission.csv", True, ["eda", "train", "predict", "all"]),
    "training image": ("comp/train_data/img_0003.png", False, ["eda", "audit", "train", "all"]),
    "test image": ("comp/test_data/img_0001.png", False, ["predict"]),
    "decisions.csv": ("decisions.csv", True, ["train"]),
    "suspects.csv": ("suspects.csv", True, ["train"]),
    "--config JSON": ("config.json", True, ["train", "all"]),
    "checkpoint": ("run/best.pt", False, ["predict"]),
    "last.pt": ("resume/last.pt", False, ["train --resume"]),
    "weights file": ("weights.pth", False, ["train", "all"]),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> bytes:
    """best.pt of a 1-epoch run on the competition `_setup` writes."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_CACHE_DIR", str(folder / "cache"))
        patch.chdir(folder)
        assert main(["train", str(csv_competition(folder / "comp", masks=False)), "--out", str(folder / "run"),
                     "--epochs", "1"]) == 0
    return (folder / "run" / "best.pt").read_bytes()


def _setup(tmp_path: Path, best: bytes) -> Path:
    root = csv_competition(tmp_path / "comp", masks=False)
    (tmp_path / "decisions.csv").write_text("sample_index,action,new_label\nimg_0001.png,drop,\n"
                                            "img_0002.png,relabel,Luminal A\n")
    (tmp_path / "suspects.csv").write_text("sample_index,issue,score,given_label,suggested_label\n"
                                           "img_0001.png,blank,0.9,Triple negative,\n")
    (tmp_path / "config.json").write_text('{"batch_size": 4, "augment": "none"}\n')
    for name in ("run/best.pt", "resume/last.pt"):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_bytes(best)
    (tmp_path / "weights.pth").write_bytes(_torch_bytes({"features.0.0.weight": torch.zeros(16, 3, 3, 3)}))
    return root


def _command(command: str, kind: str, tmp_path: Path, root: Path) -> list:
    out = ["--out", tmp_path / "out", "--epochs", 1]
    extra = {"decisions.csv": ["--decisions", tmp_path / "decisions.csv"],
             "suspects.csv": ["--decisions", tmp_path / "suspects.csv"],
             "--config JSON": ["--config", tmp_path / "config.json"],
             "weights file": ["--model", "mobilenet_v3_small", "--weights", tmp_path / "weights.pth"]}.get(kind, [])
    if command == "eda":
        return ["eda", root, "--out", tmp_path / "figures"]
    if command == "audit":
        return ["audit", root, *out, "--folds", 2]
    if command == "predict":
        return ["predict", tmp_path / "run", "--data", root, "--out", tmp_path / "sub.csv"]
    if command == "train --resume":
        return ["train", root, "--out", tmp_path / "resume", "--resume"]
    return [command, root, *out, *extra, *(["--audit-folds", 2] if command == "all" else [])]


CASES = [(kind, command, variant) for kind, (_, _, commands) in KINDS.items() for command in commands
         for variant in VARIANTS]


@pytest.mark.parametrize("kind,command,variant", CASES, ids=["-".join(c) for c in CASES])
def test_every_file_kind_every_command_every_damage(tmp_path, capsys, trained, kind, command, variant):
    """Exit 2, one line naming the file, no traceback, and nothing written into the data folder."""
    root = _setup(tmp_path, trained)
    relative, text, _ = KINDS[kind]
    path = tmp_path / relative
    path.write_bytes(VARIANTS[variant](path.read_bytes(), text))
    before = snapshot(root)
    code, _, err = run(capsys, *_command(command, kind, tmp_path, root))
    line = error_line(err)
    assert code == 2 and str(path) in line, line
    assert snapshot(root) == before


def test_a_checkpoint_that_is_an_html_page(tmp_path, capsys):
    """The concrete case: best.pt is the HTML page a failed download saved."""
    root = csv_competition(tmp_path / "comp")
    (tmp_path / "best.pt").write_bytes(HTML)
    code, _, err = run(capsys, "predict", tmp_path / "best.pt", "--data", root, "--out", tmp_path / "sub.csv")
    assert code == 2 and error_line(err) == (
        f"error: {tmp_path / 'best.pt'}: an HTML page (a failed or blocked download?), not a kit checkpoint. Copy or "
        "download it again, or pass the run folder written by `python -m kitlib train`.")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (the pixels are missing: only the header is ever read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


@pytest.mark.parametrize("command", ["eda", "train"])
def test_a_very_large_image(tmp_path, capsys, command):
    """20,000 x 20,000 px: over the kit's cap, said in one line (Pillow's DecompressionBombError before)."""
    root = csv_competition(tmp_path / "comp", masks=False)
    big = root / "train_data" / "img_0004.png"
    big.write_bytes(_png_header(20_000, 20_000))
    epochs = ["--epochs", 1] if command == "train" else []
    code, _, err = run(capsys, command, root, "--out", tmp_path / "out", *epochs)
    assert code == 2 and error_line(err) == (
        f"error: {big}: 20000 x 20000 px is over the kit's limit of 268,435,456 px (kitlib.data.images.MAX_PIXELS). "
        "Shrink the image, or raise the limit if memory allows.")


@pytest.mark.parametrize("content,expected", [
    (b"", "empty (0 bytes)"), (HTML, "an HTML page (a failed or blocked download?)"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n",
     "a Git LFS pointer, not the file itself (run `git lfs pull`, or download the file again)"),
    (b"PK\x03\x04\x14\x00\x00\x00[Content_Types].xml", "an Excel workbook (.xlsx)"),
    (PNG_BYTES, "a PNG image"), (b"id,label\n1,a\n", "text"), (b'{"a": 1}', "JSON text"),
    (b"\x00\x01\x02\x03", "binary data")])
def test_file_kind_says_what_a_file_seems_to_be(tmp_path, content, expected):
    (tmp_path / "f").write_bytes(content)
    assert file_kind(tmp_path / "f") == expected


def test_a_checkpoint_that_mentions_xl_is_a_pytorch_file(tmp_path):
    """A checkpoint keeps its run's folder; CI once wrote one under /tmp/kit-smoke-qq3054xl/ and the
    "xl/" in its pickled text made it read as an Excel workbook."""
    torch.save({"out": "/tmp/kit-smoke-qq3054xl/runs/resnet"}, tmp_path / "best.pt")
    assert file_kind(tmp_path / "best.pt") == "a PyTorch file"


def test_spreadsheet_csv_dialects(tmp_path):
    """Semicolons, Windows-1252, UTF-16 with BOM, CRLF and empty trailing cells all read the same table."""
    want = {"id": ["a.png", "b.png"], "label": ["Crème brûlée", "b"]}
    files = {"semicolon.csv": "id;label\r\na.png;Crème brûlée\r\nb.png;b\r\n".encode("utf-8"),
             "cp1252.csv": "id,label\na.png,Crème brûlée\nb.png,b\n".encode("cp1252"),
             "utf16.csv": "id\tlabel\na.png\tCrème brûlée\nb.png\tb\n".encode("utf-16"),
             "trailing.csv": "id,label,\na.png,Crème brûlée,\n,,\nb.png,b,\n".encode("utf-8")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert read_csv_strings(tmp_path / name).to_dict("list") == want, name
    with pytest.warns(UserWarning, match="not UTF-8 text; read as cp1252"):
        read_csv_strings(tmp_path / "cp1252.csv")


def test_a_csv_cut_off_mid_line_names_the_line(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"id,label\na.png,cat\nb.png")
    with pytest.raises(KitError, match=r"labels.csv line 3: 1 of 2 cells; the file ends there without a line break: "
                                       r"it was cut off"):
        read_csv_strings(tmp_path / "labels.csv")


# --------------------------------------------------------------------------------------------- 4. geometry as displayed

def _sideways(path: Path, size=(48, 32)) -> Path:
    """A photo stored `size` (w, h) with EXIF orientation 6 (displayed turned 90 degrees: h wide, w high)."""
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[4:12, 4:12] = 255  # a marker near the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, exif=exif, quality=100)
    return path


def test_eda_sizes_are_the_displayed_ones(tmp_path):
    paths = [_sideways(tmp_path / f"phone{i}.jpg") for i in range(3)]
    assert eda._sizes(pd.DataFrame({"image": paths}), progress=False).tolist() == [[32, 48]] * 3


@pytest.mark.parametrize("drawn_on", ["stored pixels", "displayed image"])
def test_a_mask_beside_a_sideways_photo_lies_on_it(tmp_path, drawn_on):
    image = _sideways(tmp_path / "img_0.jpg")
    marker = np.zeros((32, 48), np.uint8)
    marker[4:12, 4:12] = 255
    if drawn_on == "displayed image":  # what the photo shows: the stored pixels turned 90 degrees clockwise
        marker = np.rot90(marker, -1).copy()
    Image.fromarray(marker).save(tmp_path / "mask_0.png")
    decoded = cache.decode([image], mask_paths=[tmp_path / "mask_0.png"], progress=False)
    assert tuple(decoded.images.shape) == (1, 3, 48, 32) and tuple(decoded.masks.shape) == (1, 1, 48, 32)
    bright, masked = decoded.images[0, 0].numpy() > 128, decoded.masks[0, 0].numpy() > 128
    assert masked.sum() == 64 and (bright & masked).sum() >= 60  # the mask covers the marker
    pixels, mask, _, _ = tiles._read(str(image), str(tmp_path / "mask_0.png"), tiles.TileSpec(size=8))  # tiles alike
    assert pixels.shape == (48, 32, 3) and mask.shape == (48, 32) and (mask & (pixels[..., 0] > 128)).sum() >= 60


# --------------------------------------------------------------------------------------------- 5. rare classes

def test_validation_macro_f1_leaves_out_classes_without_a_sample():
    """The concrete case: 3 classes, the third with no validation sample: 0.333 (0.667 / 2), not 0.222 (/ 3)."""
    truth, predicted = [0, 0, 1, 1], [0, 0, 0, 0]  # F1: 0.667, 0, and none for class 2
    assert round(metrics.macro_f1(truth, predicted, 3), 3) == 0.222  # sklearn's macro average, unchanged
    assert round(metrics.macro_f1(truth, predicted, 3, present_only=True), 3) == 0.333
    assert metrics.absent_note([2, 2, 0], ["a", "b", "c"]) == (
        "macro-F1 averages over the 2 of 3 classes that have samples to score; 1 has none and is left out: 'c'")


def test_the_report_says_which_classes_it_leaves_out(capsys):
    probs = np.eye(3)[[0, 0, 0, 0]]
    report = evaluate([0, 0, 1, 1], probs, ["a", "b", "c"])
    assert round(report.macro_f1, 3) == 0.333
    assert report.summary.splitlines()[1] == ("macro-F1 averages over the 2 of 3 classes that have samples to score; "
                                              "1 has none and is left out: 'c'")


def _rare(root: Path) -> Path:
    labels = ["a"] * 6 + ["b"] * 6 + ["c"]
    for i, label in enumerate(labels):
        png(root / "train_data" / f"img_{i:04d}.png", value={"a": 20, "b": 120, "c": 240}[label] + i)
    for i in range(3):
        png(root / "test_data" / f"img_{i:04d}.png", value=240)
    write_csv(root / "train_labels.csv", [[f"img_{i:04d}.png", label] for i, label in enumerate(labels)])
    return root


def test_a_class_with_one_sample(tmp_path, capsys):
    root = _rare(tmp_path / "comp")
    code, _, err = run(capsys, "train", root, "--out", tmp_path / "run", "--epochs", 2)
    assert code == 0
    assert warning_lines(err) == ["warning: validation macro-F1 averages over the 2 of 3 classes that have samples to "
                                  "score; 1 has none and is left out: 'c'"]  # once, for two epochs
    per_class = pd.read_csv(tmp_path / "run" / "per_class_f1.csv")
    assert per_class["c"].isna().all()  # no F1 rather than a 0
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv")["val_macro_f1"]
    assert np.allclose(logged, per_class[["a", "b"]].mean(axis=1), atol=1e-5)
    # the class can still be predicted: the model has its output
    assert run(capsys, "predict", tmp_path / "run", "--data", root, "--out", tmp_path / "sub.csv")[0] == 0
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=False)["classes"] == ["a", "b", "c"]


def test_decisions_never_drop_a_class_s_last_sample_silently(tmp_path, capsys):
    samples = load_competition(_rare(tmp_path / "comp")).samples
    (tmp_path / "suspects.csv").write_text("sample_index,issue,score,given_label,suggested_label\n"
                                           "img_0012.png,alien,1.0,c,\nimg_0001.png,blank,0.9,a,\n")
    with pytest.warns(UserWarning, match=r"suspects.csv: kept the 1 flagged sample\(s\) of class\(es\) 'c': dropping "
                                         r"them would leave the class no training sample"):
        kept = apply_decisions(samples, tmp_path / "suspects.csv", ["a", "b", "c"])
    assert "img_0012.png" in set(kept["sample_index"]) and len(kept) == 12
    assert "suspects.csv: dropped 1, relabelled 0 of 13 samples" in capsys.readouterr().out
    (tmp_path / "decisions.csv").write_text("sample_index,action,new_label\nimg_0012.png,drop,\n")
    with pytest.warns(UserWarning, match=r"decisions.csv leaves class\(es\) 'c' without any training sample"):
        assert len(apply_decisions(samples, tmp_path / "decisions.csv", ["a", "b", "c"])) == 12


# --------------------------------------------------------------------------------------------- 6. columns

def _kaggle_names(root: Path, header=("image_name", "patient_id", "target")) -> Path:
    rows = []
    for i in range(8):
        png(root / "train" / f"ISIC_{i:07d}.jpg", value=30 * (i % 2))
        rows.append([f"ISIC_{i:07d}", f"IP_{i // 2}", str(i % 2)])
    for i in range(2):
        png(root / "test" / f"ISIC_{100 + i:07d}.jpg")
    write_csv(root / "train.csv", rows, header=header)
    write_csv(root / "sample_submission.csv", [[f"ISIC_{100 + i:07d}", "0"] for i in range(2)],
              header=(header[0], header[2]))
    return root


def test_a_competitions_own_column_names(tmp_path, capsys):
    """The concrete case: image_name,patient_id,target is read as it is."""
    root = _kaggle_names(tmp_path / "comp")
    competition = load_competition(root)
    assert (competition.classes, competition.id_column, competition.label_column) == (["0", "1"], "image_name",
                                                                                      "target")
    assert list(competition.samples["patient_id"][:3]) == ["IP_0", "IP_0", "IP_1"]


def test_unknown_names_the_id_by_its_values_the_label_by_option(tmp_path, capsys):
    root = _kaggle_names(tmp_path / "comp", header=("isic", "patient", "melanoma"))
    code, _, err = run(capsys, "eda", root, "--out", tmp_path / "figures")
    assert code == 2 and error_line(err) == (
        f"error: {root / 'train.csv'}: no label column (looked for label, labels, class, class_name, classname, "
        "class_id, target, category, species, diagnosis, breed); found columns: isic, patient, melanoma. Pass "
        "--label-column NAME (label_column= in Python, setup(label_column=) in the notebooks).")
    code, _, err = run(capsys, "eda", root, "--out", tmp_path / "figures", "--label-column", "melanoma")
    assert code == 0
    assert warning_lines(err) == [f"warning: {root / 'train.csv'}: id column 'isic' (its values name 8 of the 8 "
                                  "rows' image files in train/); pass --id-column NAME (id_column= in Python, "
                                  "setup(id_column=) in the notebooks) to choose another"]
    assert run(capsys, "eda", root, "--out", tmp_path / "f2", "--label-column", "melanoma", "--id-column",
               "patient")[0] == 2  # patient ids name no image: said, not guessed


def test_a_csv_without_a_header_row(tmp_path):
    root = csv_competition(tmp_path / "comp")
    lines = (root / "train_labels.csv").read_text().splitlines()[1:]
    (root / "train_labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="no header row"):
        competition = load_competition(root)
    assert len(competition.samples) == 8 and competition.samples["sample_index"][0] == "img_0000.png"


@pytest.mark.parametrize("command", ["eda", "audit", "train", "predict", "all"])
def test_every_command_that_reads_the_csv_takes_the_column_options(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--id-column NAME" in text and "--label-column NAME" in text


def test_every_option_a_message_names_exists():
    """Hints name options of the interface: every --flag in kitlib's messages is an option of some command."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices.values()
    options = {flag for sub in commands for action in sub._actions for flag in action.option_strings}
    external = {"--nproc", "--nproc-per-node", "--standalone", "--porcelain", "--untracked-files"}  # torchrun, git
    package = Path(__file__).resolve().parents[1] / "kitlib"
    named = {}
    for path in package.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        for flag in set(__import__("re").findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", path.read_text())):
            named.setdefault(flag, path.name)
    unknown = {flag: where for flag, where in named.items() if flag not in options | external}
    assert unknown == {}


def test_notebooks_take_the_columns_in_setup(tmp_path, monkeypatch):
    from kitlib import notebook

    root = _kaggle_names(tmp_path / "comp", header=("isic", "patient", "melanoma"))
    for var in ("KIT_SMOKE", "KIT_DATA", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KIT_THREADS", str(torch.get_num_threads()))
    monkeypatch.setattr(notebook, "repo_root", lambda: tmp_path)
    monkeypatch.setenv("KIT_LABEL_COLUMN", "melanoma")
    env = notebook.setup(data=root, id_column="isic")
    assert env.columns == {"id_column": "isic", "label_column": "melanoma"}
    assert load_competition(env.data, **env.columns).classes == ["0", "1"]


@pytest.mark.parametrize("where", ["before the pixels", "after the pixels", "none"])
def test_a_png_orientation_is_read_without_decoding_its_pixels(tmp_path, where):
    # libpng may write eXIf after IDAT, where Pillow's getexif() finds it only by decoding the whole image
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "slide.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(path, exif=exif if where == "before the pixels" else None)
    if where == "after the pixels":
        data = path.read_bytes()
        body = exif.tobytes()[6:]  # without the "Exif\0\0" header, as PNG stores it
        chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
        path.write_bytes(data[:-12] + chunk + data[-12:])  # before IEND
    with image_files.open_image(path) as im:
        assert image_files.orientation(im) == (1 if where == "none" else 6)
        assert image_files.oriented_size(im) == ((48, 32) if where == "none" else (32, 48))
        assert im.tile  # its pixels not decoded yet
    with Image.open(path) as im:
        assert int(im.getexif().get(0x0112, 1)) == (1 if where == "none" else 6)  # as Pillow reads it
