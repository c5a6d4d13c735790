"""Competition folders -> one sample table, the class list and the test table.

Three layouts are recognised (DESIGN.md): the CSV layout of course and Kaggle challenges, the
torchvision ImageFolder layout, and Tiny ImageNet's own layout. Whatever the layout, the result
is a `Competition` whose tables have the same columns, so nothing downstream knows the layout.
Nothing is ever written into the data folder (it may be read-only, as /kaggle/input is).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kitlib.errors import KitError
from kitlib.files import read_csv_strings

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
ID_COLUMNS = ("sample_index", "id", "image_id", "image", "filename", "file", "img", "name")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "target", "category")
LABEL_FILES = ("train_labels.csv", "train.csv", "labels.csv", "trainLabels.csv")
TRAIN_DIRS = ("train_data", "train", "train_images", "images")
TEST_DIRS = ("test_data", "test", "test_images")
# Columns of every sample and test table; extra CSV columns (e.g. a patient id) are kept after them.
COLUMNS = ["sample_index", "image", "mask", "label", "split"]


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
    """Read a competition folder in any supported layout (auto-detected) and check it."""
    root = _descend(Path(root).expanduser())
    layout = detect_layout(root)
    if layout == "tinyimagenet":
        competition = _read_tinyimagenet(root)
    elif layout == "csv":
        competition = _read_csv_layout(root, train_dir, id_column, label_column)
    elif layout == "imagefolder":
        competition = _read_imagefolder(root)
    else:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
        raise KitError(
            f"{root}: no competition layout recognised (found: {', '.join(found) or 'nothing'}). "
            "Expected train_labels.csv + train_data/ (CSV layout), train/<class>/ (ImageFolder) "
            "or wnids.txt + train/ (Tiny ImageNet).")
    _check_labels(competition.samples, competition.root)
    return competition


def detect_layout(folder: Path) -> str | None:
    """'tinyimagenet', 'csv' or 'imagefolder' from the folder's file names alone (nothing is read); else None."""
    if (folder / "wnids.txt").is_file():
        return "tinyimagenet"
    if _labels_file(folder) is not None:
        return "csv"
    if (folder / "train").is_dir() and any(p.is_dir() for p in (folder / "train").iterdir()):
        return "imagefolder"
    return None


def _descend(root: Path) -> Path:
    """The folder itself, or its only subfolder when it holds nothing else (Kaggle inputs nest)."""
    if not root.is_dir():
        raise KitError(f"{root}: no such folder. Pass the folder that holds the competition's files.")
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return _descend(entries[0])
    if not entries:
        raise KitError(f"{root}: the folder is empty. Unpack the competition there first.")
    return root


def _labels_file(root: Path) -> Path | None:
    return next((root / n for n in LABEL_FILES if (root / n).is_file()), None)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


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


def _split_images_and_masks(folder: Path) -> tuple[list[Path], dict[str, Path]]:
    files = image_files(folder)
    masks = {p.stem: p for p in files if _is_mask(p)}
    return [p for p in files if not _is_mask(p)], masks


def _pick_column(frame: pd.DataFrame, wanted: str | None, options: tuple[str, ...], what: str,
                 path: Path) -> str:
    if wanted is not None:
        if wanted not in frame.columns:
            raise KitError(f"{path}: no column {wanted!r}; found columns: {', '.join(frame.columns)}.")
        return wanted
    lower = {c.lower(): c for c in frame.columns}
    for name in options:
        if name in lower:
            return lower[name]
    raise KitError(
        f"{path}: no {what} column (looked for {', '.join(options)}); found columns: "
        f"{', '.join(map(str, frame.columns))}. Rename the column, or pass {what}_column=NAME.")


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


def _resolve_ids(ids: pd.Series, lookup: dict[str, Path], csv_path: Path, folder: Path,
                 fix: str) -> list[Path]:
    """The image file of every id, or an error listing the rows whose image is missing."""
    paths, missing = [], []
    for row, sample_id in enumerate(ids):
        path = lookup.get(sample_id) or (lookup.get(str(int(sample_id))) if sample_id.isdigit() else None)
        if path is None:
            missing.append(f"line {row + 2} ({sample_id!r})")
        paths.append(path)
    if missing:
        raise KitError(
            f"{csv_path}: {len(missing)} row(s) name an image that is not in {folder}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. {fix}")
    return paths


def _check_unique(ids: pd.Series, path: Path) -> None:
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        rows = [str(i + 2) for i in duplicated.index[duplicated == first]]
        raise KitError(
            f"{path}: id {first!r} appears on lines {', '.join(rows)} "
            f"({duplicated.nunique()} duplicated id(s) in all). Keep one row per image.")


def _read_csv_layout(root: Path, train_dir: str | None, id_column: str | None,
                     label_column: str | None) -> Competition:
    labels_path = _labels_file(root)
    frame = read_csv_strings(labels_path)
    if frame.empty:
        raise KitError(f"{labels_path}: the file has no rows. Add one row per training image.")
    id_col = _pick_column(frame, id_column, ID_COLUMNS, "id", labels_path)
    label_col = _pick_column(frame, label_column, LABEL_COLUMNS, "label", labels_path)
    _check_unique(frame[id_col], labels_path)

    folder = _find_dir(root, (train_dir,) if train_dir else TRAIN_DIRS, "training images")
    images, masks = _split_images_and_masks(folder)
    if not images:
        raise KitError(f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    paths = _resolve_ids(frame[id_col], _id_lookup(images), labels_path, folder,
                         "Restore the image file(s) or delete the row(s) from the CSV.")
    unlisted = sorted(set(images) - set(paths))
    if unlisted:
        names = ", ".join(p.name for p in unlisted[:10])
        warnings.warn(f"{folder}: {len(unlisted)} image(s) have no row in {labels_path.name} and are "
                      f"left out of training: {names}{' ...' if len(unlisted) > 10 else ''}", stacklevel=3)
    samples = pd.DataFrame({
        "sample_index": frame[id_col], "image": paths,
        "mask": [_mask_for(p, masks) for p in paths],
        "label": frame[label_col], "split": "train",
    })
    extra = frame.drop(columns=[id_col, label_col])
    samples = pd.concat([samples, extra.reset_index(drop=True)], axis=1)
    classes = sorted(set(samples["label"]))
    test, submission, sub_id, sub_label = _read_csv_test(root, frame[id_col], id_col, label_col)
    return Competition(root, "csv", samples, classes, test, submission, sub_id, sub_label)


def _find_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise KitError(f"{root}: no folder of {what} (looked for {', '.join(n + '/' for n in names)}).")


def _read_csv_test(root: Path, train_ids: pd.Series, id_col: str, label_col: str):
    """The test table in submission order, and the submission's column names."""
    folder = next((root / n for n in TEST_DIRS if (root / n).is_dir()), None)
    images, masks = _split_images_and_masks(folder) if folder else ([], {})
    submission = root / "sample_submission.csv"
    if folder is None and not submission.exists():
        return _empty_table(), None, id_col, label_col
    if folder is None:
        raise KitError(f"{submission} exists but no test folder ({', '.join(TEST_DIRS)}) does.")
    with_extension = train_ids.str.contains(r"\.[A-Za-z]{3,4}$").mean() > 0.5
    if not submission.exists():
        ids = [p.name if with_extension else p.stem for p in images]
        return _table(ids, images, masks), None, id_col, label_col
    frame = read_csv_strings(submission)
    sub_id = _pick_column(frame, None, ID_COLUMNS, "id", submission)
    others = [c for c in frame.columns if c != sub_id]
    sub_label = next((c for c in others if c.lower() in LABEL_COLUMNS), others[0] if others else label_col)
    _check_unique(frame[sub_id], submission)
    paths = _resolve_ids(frame[sub_id], _id_lookup(images), submission, folder,
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

def _class_folder_table(folder: Path, split: str) -> pd.DataFrame:
    ids, paths, labels = [], [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in image_files(class_dir):
            ids.append(path.relative_to(folder).as_posix())
            paths.append(path)
            labels.append(class_dir.name)
    return _table(ids, paths, labels=labels, split=split)


def _read_imagefolder(root: Path) -> Competition:
    tables = [_class_folder_table(root / "train", "train")]
    if (root / "val").is_dir():
        tables.append(_class_folder_table(root / "val", "val"))
    samples = pd.concat(tables, ignore_index=True)
    if samples.empty:
        raise KitError(f"{root / 'train'}: the class folders hold no images.")
    test = _empty_table()
    test_dir = root / "test"
    if test_dir.is_dir():
        if any(p.is_dir() for p in test_dir.iterdir()):
            test = _class_folder_table(test_dir, "test")
        else:
            images = image_files(test_dir)
            test = _table([p.name for p in images], images)
    classes = sorted(set(samples["label"]))
    return Competition(root, "imagefolder", samples, classes, test, None)


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt

def _read_tinyimagenet(root: Path) -> Competition:
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    names: dict[str, str] = {}
    words = root / "words.txt"
    if words.exists():
        for line in words.read_text(encoding="utf-8").splitlines():
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
        for path in image_files(folder):
            ids.append(path.relative_to(root / "train").as_posix())
            paths.append(path)
            labels.append(label[wnid])
    tables = [_table(ids, paths, labels=labels, split="train")]
    annotations = root / "val" / "val_annotations.txt"
    if annotations.exists():
        rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
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
        images = image_files(root / "test" / "images")
        test = _table([p.name for p in images], images)
    samples = pd.concat(tables, ignore_index=True)
    return Competition(root, "tinyimagenet", samples, sorted(set(label.values())), test, None)


# ---------------------------------------------------------------------------------------------

def _check_labels(samples: pd.DataFrame, root: Path) -> None:
    """No empty or NaN-looking labels: they are export accidents, never a class."""
    labels = samples["label"].astype(str)
    bad = labels.str.strip().eq("") | labels.str.lower().isin(["nan", "none", "null"])
    if bad.any():
        rows = samples.index[bad]
        where = ", ".join(f"line {i + 2} ({samples['sample_index'][i]!r})" for i in rows[:5])
        raise KitError(f"{root}: {int(bad.sum())} sample(s) have an empty or NaN label: {where}"
                       f"{' ...' if bad.sum() > 5 else ''}. Fill in the label or delete the row.")
