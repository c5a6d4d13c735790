"""Competition folders -> one sample table, the class list and the test table.

Three layouts are recognised (DESIGN.md): the CSV layout of course and Kaggle challenges, the
torchvision ImageFolder layout, and Tiny ImageNet's own layout. Whatever the layout, the result
is a `Competition` whose tables have the same columns, so nothing downstream knows the layout.
Nothing is ever written into the data folder (it may be read-only, as /kaggle/input is).

What an OS, an archiver or an editor leaves in a folder (dot-files and dot-folders such as
.ipynb_checkpoints/ and .DS_Store, macOS's __MACOSX/ and ._ resource forks, Thumbs.db, ...) is
never data: every layout skips it and says so once. The labels CSV's columns and cells are found
and cleaned by kitlib.data.columns.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from kitlib.data.columns import (ID_COLUMNS, LABEL_COLUMNS, clean, clean_cells, find_column, find_id_column,
                                 find_label_column, name_key, unify_labels)
from kitlib.errors import KitError
from kitlib.files import read_csv_lines, read_text

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
LABEL_FILES = ("train_labels.csv", "train.csv", "labels.csv", "trainLabels.csv")
TRAIN_DIRS = ("train_data", "train", "train_images", "images")
TEST_DIRS = ("test_data", "test", "test_images")
# Columns of every sample and test table; extra CSV columns (e.g. a patient id) are kept after them.
COLUMNS = ["sample_index", "image", "mask", "label", "split"]
# Left by an OS, an archiver or an editor (compared in lower case); so is every name starting with '.' or '~$'.
LEFTOVERS = {"__macosx", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "$recycle.bin",
             "system volume information", "@eadir", "__pycache__", "icon\r"}


def is_leftover(name: str) -> bool:
    """Whether a file or folder name is one an OS, an archiver or an editor leaves behind, never competition data:
    dot-files and dot-folders (.DS_Store, .ipynb_checkpoints, ._ resource forks), __MACOSX, Thumbs.db, @eaDir, ..."""
    return name.startswith((".", "~$")) or name.lower() in LEFTOVERS


class _Scan:
    """Folder listings without leftovers (`is_leftover`), which it keeps to name them once at the end."""

    def __init__(self, top: Path):
        self.top, self.skipped = top, []

    def entries(self, folder: Path) -> list[Path]:
        """The folder's files and subfolders, sorted by name, leftovers set aside."""
        try:
            found = sorted(folder.iterdir())
        except OSError as error:  # a folder without read permission
            raise KitError(f"{folder}: cannot be listed ({error.strerror or error}).") from error
        self.skipped += [p for p in found if is_leftover(p.name)]
        return [p for p in found if not is_leftover(p.name)]

    def folders(self, folder: Path) -> list[Path]:
        """Subfolders, sorted by name."""
        return [p for p in self.entries(folder) if p.is_dir()]

    def images(self, folder: Path) -> list[Path]:
        """Image files (by extension), sorted by name."""
        return [p for p in self.entries(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]

    def warn(self) -> None:
        """One warning naming what was skipped, if anything."""
        if self.skipped:
            names = sorted(dict.fromkeys(os.path.relpath(p, self.top) + ("/" if p.is_dir() else "")
                                         for p in self.skipped))
            warnings.warn(f"{self.top}: ignored {len(names)} file(s) or folder(s) that an OS, an archiver or an editor "
                          f"leaves behind: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}", stacklevel=3)


@dataclass(frozen=True)
class Competition:
    """One competition, read and checked: what every later step starts from."""

    root: Path
    """The competition folder."""
    layout: str
    """'csv', 'imagefolder' or 'tinyimagenet'."""
    samples: pd.DataFrame
    """Labelled samples: sample_index, image, mask (path or None), label, split ('train' or 'val')."""
    classes: list[str]
    """Class names, sorted; a sample's target is its label's position here."""
    test: pd.DataFrame
    """Samples to predict, in submission order: same columns; label is None unless answers ship."""
    sample_submission: Path | None
    """The sample submission file, if the competition has one."""
    id_column: str = "sample_index"
    """Submission id column name (from the sample submission, else the labels file)."""
    label_column: str = "label"
    """Submission label column name."""

    @property
    def targets(self) -> pd.Series:
        """Class index of every labelled sample (int64)."""
        index = {name: i for i, name in enumerate(self.classes)}
        return self.samples["label"].map(index).astype("int64")

    def summary(self) -> str:
        """One line: layout, counts and where masks are."""
        split = self.samples["split"].value_counts().to_dict()
        masks = int(self.samples["mask"].notna().sum())
        return (f"{self.root} ({self.layout}): {len(self.classes)} classes, "
                + ", ".join(f"{n} {s}" for s, n in split.items())
                + f", {len(self.test)} test" + (f", {masks} masks" if masks else ""))


def load_competition(root: str | Path, *, train_dir: str | None = None,
                     id_column: str | None = None, label_column: str | None = None) -> Competition:
    """Read a competition folder in any supported layout (auto-detected) and check it.

    `id_column`/`label_column` name the labels CSV's columns (CSV layout only); by default they are
    found by name (kitlib.data.columns), the id column else by values that name the image files.
    """
    given = Path(root).expanduser()
    scan = _Scan(given)
    root = _descend(given, scan)
    layout = detect_layout(root)
    if layout != "csv" and (id_column or label_column) and layout is not None:
        raise KitError(f"{root}: --id-column/--label-column (id_column=/label_column=) name the columns of a labels "
                       f"CSV, but this competition is in the {layout} layout, whose labels are folder names. "
                       "Leave them out.")
    if layout == "tinyimagenet":
        competition = _read_tinyimagenet(root, scan)
    elif layout == "csv":
        competition = _read_csv_layout(root, train_dir, id_column, label_column, scan)
    elif layout == "imagefolder":
        competition = _read_imagefolder(root, scan)
    else:
        found = [p.name + ("/" if p.is_dir() else "") for p in scan.entries(root)][:12]
        raise KitError(
            f"{root}: no competition layout recognised (found: {', '.join(found) or 'nothing'}). "
            "Expected train_labels.csv + train_data/ (CSV layout), train/<class>/ (ImageFolder) "
            "or wnids.txt + train/ (Tiny ImageNet).")
    scan.warn()
    return competition


def detect_layout(folder: Path) -> str | None:
    """'tinyimagenet', 'csv' or 'imagefolder' from the folder's file names alone (nothing is read); else None."""
    if (folder / "wnids.txt").is_file():
        return "tinyimagenet"
    if _labels_file(folder) is not None:
        return "csv"
    train = folder / "train"
    if train.is_dir() and any(p.is_dir() and not is_leftover(p.name) for p in train.iterdir()):
        return "imagefolder"
    return None


def _descend(root: Path, scan: _Scan) -> Path:
    """The folder itself, or its only subfolder when it holds nothing else (Kaggle inputs nest)."""
    if not root.is_dir():
        raise KitError(f"{root}: no such folder. Pass the folder that holds the competition's files.")
    entries = scan.entries(root)
    if len(entries) == 1 and entries[0].is_dir():
        return _descend(entries[0], scan)
    if not entries:
        raise KitError(f"{root}: the folder is empty. Unpack the competition there first.")
    return root


def _labels_file(root: Path) -> Path | None:
    return next((root / n for n in LABEL_FILES if (root / n).is_file()), None)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension, leftovers such as ._ resource forks skipped), sorted by name."""
    return _Scan(folder).images(folder)


# ---------------------------------------------------------------------------------------------
# CSV layout: train_labels.csv + train_data/img_XXXX.png (+ mask_XXXX.png) + test_data/ + sample_submission.csv

def _is_mask(path: Path) -> bool:
    stem = path.stem.lower()
    return stem.startswith("mask") or stem.endswith("_mask")


def _mask_for(image: Path, masks: dict[str, Path]) -> Path | None:
    """The mask beside an image: img_0001.png -> mask_0001.png, or 0001.png -> 0001_mask.png."""
    stem = image.stem
    candidates = [stem + "_mask"]
    if stem.lower().startswith("img"):
        candidates.insert(0, "mask" + stem[3:])
    return next((masks[c] for c in candidates if c in masks), None)


def _split_images_and_masks(folder: Path, scan: _Scan) -> tuple[list[Path], dict[str, Path]]:
    files = scan.images(folder)
    masks = {p.stem: p for p in files if _is_mask(p)}
    return [p for p in files if not _is_mask(p)], masks


def _id_lookup(images: list[Path]) -> dict[str, Path]:
    """Every way a CSV may name an image: file name, stem, and the number in the stem."""
    lookup: dict[str, Path] = {}
    numbers: dict[int, list[Path]] = {}
    for path in images:
        lookup[path.name] = path
        lookup[path.stem] = path
        match = re.search(r"(\d+)$", path.stem)
        if match:
            numbers.setdefault(int(match.group(1)), []).append(path)
    for number, paths in numbers.items():
        if len(paths) == 1:  # "17" -> img_0017.png only when no other file ends in 17
            lookup.setdefault(str(number), paths[0])
    return lookup


def _find(lookup: dict[str, Path], sample_id: str) -> Path | None:
    """The image an id names: as written, as a number ('0017' -> '17'), or by the last part of a path."""
    sample_id = clean(sample_id)
    if sample_id in lookup:
        return lookup[sample_id]
    if sample_id.isascii() and sample_id.isdigit():
        return lookup.get(str(int(sample_id)))
    name = PurePosixPath(sample_id.replace("\\", "/")).name  # 'train_data/img_1.png' -> 'img_1.png'
    return lookup.get(name) if name != sample_id else None


def _resolve_ids(ids: pd.Series, lines: list[int], lookup: dict[str, Path], csv_path: Path, folder: Path,
                 fix: str) -> list[Path]:
    """The image file of every id, or an error listing the rows whose image is missing or taken twice."""
    paths = [_find(lookup, sample_id) for sample_id in ids]
    missing = [f"line {line} ({sample_id!r})" for line, sample_id, path in zip(lines, ids, paths) if path is None]
    if missing:
        raise KitError(
            f"{csv_path}: {len(missing)} row(s) name an image that is not in {folder}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. {fix}")
    first: dict[Path, int] = {}
    for line, path in zip(lines, paths):
        if path in first:
            raise KitError(f"{csv_path}: lines {first[path]} and {line} both name {path.name}. Keep one row per image.")
        first[path] = line
    return paths


def _check_unique(ids: pd.Series, lines: list[int], path: Path) -> None:
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = ids[duplicated].iloc[0]
        rows = [str(line) for line, sample_id in zip(lines, ids) if sample_id == first]
        raise KitError(
            f"{path}: id {first!r} appears on lines {', '.join(rows)} "
            f"({ids[duplicated].nunique()} duplicated id(s) in all). Keep one row per image.")


def _check_labels(labels: pd.Series, ids: pd.Series, lines: list[int], path: Path) -> None:
    """No empty or NaN-looking labels: they are export accidents, never a class."""
    bad = (labels.eq("") | labels.str.lower().isin(["nan", "none", "null"])).to_numpy()
    if bad.any():
        where = ", ".join(f"line {lines[i]} ({ids.iloc[i]!r})" for i in bad.nonzero()[0][:5])
        raise KitError(f"{path}: {int(bad.sum())} sample(s) have an empty or NaN label: {where}"
                       f"{' ...' if bad.sum() > 5 else ''}. Fill in the label or delete the row.")


def _header_is_a_row(frame: pd.DataFrame, lines: list[int], lookup: dict[str, Path],
                     path: Path) -> tuple[pd.DataFrame, list[int]]:
    """A CSV without a header row (its first line names an image file) read with that line as a sample."""
    known = {name_key(n) for n in ID_COLUMNS + LABEL_COLUMNS}
    if not any(_find(lookup, c) and name_key(c) not in known and not c.isdigit() for c in map(str, frame.columns)):
        return frame, lines
    names = [f"column {i + 1}" for i in range(frame.shape[1])]
    rows = [[str(c) for c in frame.columns], *frame.to_numpy().tolist()]
    warnings.warn(f"{path}: no header row (line 1 names an image file): line 1 is read as a sample and the columns "
                  f"are called {', '.join(repr(n) for n in names)}", stacklevel=4)
    return pd.DataFrame(rows, columns=names, dtype=str), [1, *lines]


def _read_csv_layout(root: Path, train_dir: str | None, id_column: str | None,
                     label_column: str | None, scan: _Scan) -> Competition:
    labels_path = _labels_file(root)
    frame, lines = read_csv_lines(labels_path)
    frame = clean_cells(frame, labels_path, lines)
    if frame.empty:
        raise KitError(f"{labels_path}: the file has no rows. Add one row per training image.")
    folder = _find_dir(root, (train_dir,) if train_dir else TRAIN_DIRS, "training images")
    images, masks = _split_images_and_masks(folder, scan)
    if not images:
        raise KitError(f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    lookup = _id_lookup(images)
    frame, lines = _header_is_a_row(frame, lines, lookup, labels_path)
    id_col = find_id_column(frame, id_column, lambda v: _find(lookup, v), labels_path, folder)
    label_col = find_label_column(frame, label_column, id_col, labels_path)
    _check_unique(frame[id_col], lines, labels_path)
    _check_labels(frame[label_col], frame[id_col], lines, labels_path)
    paths = _resolve_ids(frame[id_col], lines, lookup, labels_path, folder,
                         "Restore the image file(s) or delete the row(s) from the CSV.")
    unlisted = sorted(set(images) - set(paths))
    if unlisted:
        names = ", ".join(p.name for p in unlisted[:10])
        warnings.warn(f"{folder}: {len(unlisted)} image(s) have no row in {labels_path.name} and are "
                      f"left out of training: {names}{' ...' if len(unlisted) > 10 else ''}", stacklevel=3)
    samples = pd.DataFrame({
        "sample_index": frame[id_col].to_numpy(), "image": paths,
        "mask": [_mask_for(p, masks) for p in paths],
        "label": unify_labels(frame[label_col], lines, labels_path).to_numpy(), "split": "train",
    })
    extra = frame.drop(columns=[id_col, label_col])
    samples = pd.concat([samples, extra.reset_index(drop=True)], axis=1)
    classes = sorted(set(samples["label"]))
    test, submission, sub_id, sub_label = _read_csv_test(root, frame[id_col], id_col, label_col, scan)
    return Competition(root, "csv", samples, classes, test, submission, sub_id, sub_label)


def _find_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise KitError(f"{root}: no folder of {what} (looked for {', '.join(n + '/' for n in names)}).")


def _read_csv_test(root: Path, train_ids: pd.Series, id_col: str, label_col: str, scan: _Scan):
    """The test table in submission order, and the submission's column names (as the sample file spells them)."""
    folder = next((root / n for n in TEST_DIRS if (root / n).is_dir()), None)
    images, masks = _split_images_and_masks(folder, scan) if folder else ([], {})
    submission = root / "sample_submission.csv"
    if folder is None and not submission.exists():
        return _empty_table(), None, id_col, label_col
    if folder is None:
        raise KitError(f"{submission} exists but no test folder ({', '.join(TEST_DIRS)}) does.")
    with_extension = train_ids.str.contains(r"\.[A-Za-z]{3,4}$").mean() > 0.5
    if not submission.exists():
        ids = [p.name if with_extension else p.stem for p in images]
        return _table(ids, images, masks), None, id_col, label_col
    frame, lines = read_csv_lines(submission)
    if frame.empty and images:
        raise KitError(f"{submission}: no rows, but {folder} holds {len(images)} test images. Download the "
                       "sample submission again.")
    # the submission keeps the sample file's own spelling of its header and ids; they are cleaned only to match
    sub_id = find_column(frame, None, (id_col, *ID_COLUMNS), "id", submission) or frame.columns[0]
    others = [c for c in frame.columns if c != sub_id]
    sub_label = find_column(frame[others], None, (label_col, *LABEL_COLUMNS), "label", submission) or (
        others[0] if others else label_col)
    _check_unique(frame[sub_id], lines, submission)
    paths = _resolve_ids(frame[sub_id], lines, _id_lookup(images), submission, folder,
                         "Check that the test images were unpacked completely.")
    unlisted = sorted(set(images) - set(paths))
    if unlisted:
        warnings.warn(f"{folder}: {len(unlisted)} image(s) are not in {submission.name} and will not "
                      f"be predicted: {', '.join(p.name for p in unlisted[:10])}", stacklevel=3)
    return _table(list(frame[sub_id]), paths, masks), submission, sub_id, sub_label


def _table(ids, paths, masks=None, labels=None, split="test") -> pd.DataFrame:
    masks = masks or {}
    return pd.DataFrame({
        "sample_index": list(ids), "image": list(paths),
        "mask": [_mask_for(p, masks) for p in paths],
        "label": list(labels) if labels is not None else [None] * len(paths),
        "split": split,
    }, columns=COLUMNS)


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


# ---------------------------------------------------------------------------------------------
# ImageFolder layout: train/<class>/*, optional val/<class>/*, test/ (flat, or test/<class>/* with answers)

def _class_folder_table(folder: Path, split: str, scan: _Scan) -> pd.DataFrame:
    ids, paths, labels = [], [], []
    for class_dir in scan.folders(folder):
        for path in scan.images(class_dir):
            ids.append(path.relative_to(folder).as_posix())
            paths.append(path)
            labels.append(class_dir.name)
    return _table(ids, paths, labels=labels, split=split)


def _read_imagefolder(root: Path, scan: _Scan) -> Competition:
    tables = [_class_folder_table(root / "train", "train", scan)]
    if (root / "val").is_dir():
        tables.append(_class_folder_table(root / "val", "val", scan))
    samples = pd.concat(tables, ignore_index=True)
    if samples.empty:
        raise KitError(f"{root / 'train'}: the class folders hold no images.")
    test = _empty_table()
    test_dir = root / "test"
    if test_dir.is_dir():
        if scan.folders(test_dir):
            test = _class_folder_table(test_dir, "test", scan)
        else:
            images = scan.images(test_dir)
            test = _table([p.name for p in images], images)
    classes = sorted(set(samples["label"]))
    return Competition(root, "imagefolder", samples, classes, test, None)


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt

def _read_tinyimagenet(root: Path, scan: _Scan) -> Competition:
    wnids = [w.strip() for w in read_text(root / "wnids.txt", "list of wnids").split() if w.strip()]
    names: dict[str, str] = {}
    words = root / "words.txt"
    if words.exists():
        for line in read_text(words, "words.txt (wnid<TAB>name lines)").splitlines():
            wnid, _, name = line.partition("\t")
            names[wnid] = name.strip()
    label = {w: names.get(w, w) for w in wnids}
    counts = pd.Series(list(label.values())).value_counts()
    for wnid, name in label.items():  # two wnids may share a name ("crane"): keep them apart
        if counts[name] > 1:
            label[wnid] = f"{name} ({wnid})"
    ids, paths, labels = [], [], []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise KitError(f"{folder}: missing, but {wnid} is listed in {root / 'wnids.txt'}.")
        for path in scan.images(folder):
            ids.append(path.relative_to(root / "train").as_posix())
            paths.append(path)
            labels.append(label[wnid])
    tables = [_table(ids, paths, labels=labels, split="train")]
    annotations = root / "val" / "val_annotations.txt"
    if annotations.exists():
        text = read_text(annotations, "val_annotations.txt (image<TAB>wnid lines)")
        rows = [line.split("\t") for line in text.splitlines() if line.strip()]
        short = [i for i, r in enumerate(rows) if len(r) < 2]
        if short:
            raise KitError(f"{annotations}: {len(short)} line(s) without a tab-separated wnid, e.g. {rows[short[0]]}; "
                           "the file may be cut off. Get it again.")
        unknown = [r for r in rows if r[1] not in label]
        if unknown:
            raise KitError(f"{annotations}: {len(unknown)} row(s) name a wnid not in wnids.txt, "
                           f"e.g. {unknown[0][0]} -> {unknown[0][1]}.")
        val_paths = [root / "val" / "images" / r[0] for r in rows]
        missing = [p for p in val_paths if not p.exists()]
        if missing:
            raise KitError(f"{annotations}: {len(missing)} listed image(s) are missing, e.g. {missing[0]}.")
        tables.append(_table([r[0] for r in rows], val_paths, labels=[label[r[1]] for r in rows],
                             split="val"))
    test = _empty_table()
    if (root / "test" / "images").is_dir():
        images = scan.images(root / "test" / "images")
        test = _table([p.name for p in images], images)
    samples = pd.concat(tables, ignore_index=True)
    return Competition(root, "tinyimagenet", samples, sorted(set(label.values())), test, None)
