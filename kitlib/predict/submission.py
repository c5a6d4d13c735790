"""Submission files that the leaderboard cannot reject, checked before they are written.

Kaggle rejects a submission for a wrong row count, wrong columns, empty cells or unknown
labels, and tells you only after an upload. `write_submission` puts the predictions in the
sample file's columns and id order (or `sample_index,label` over the sorted test ids when
there is none), writes a temporary file beside the target, re-reads and validates it, and only
then renames it into place: a rejected or crashed write never leaves a file behind. Labels are
written byte for byte as the training labels spell them, with standard CSV quoting.
"""

from __future__ import annotations

import csv
import datetime
import difflib
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import kitlib
from kitlib.data.columns import FLAGS, ID_COLUMNS, LABEL_COLUMNS, find_column
from kitlib.errors import KitError
from kitlib.files import read_csv_strings, replace_atomically

SHOW = 5  # how many offending ids/rows an error message lists


@dataclass(frozen=True)
class WrittenSubmission:
    """What `write_submission` wrote."""

    path: Path
    """The submission CSV."""
    meta_path: Path
    """The JSON record beside it (runs, configs, commits, TTA, the CSV's sha256)."""
    distribution: pd.DataFrame
    """Predicted vs training class counts and shares, one row per class (see `class_distribution`)."""


def _strings(values, what: str) -> list[str]:
    """Plain str values (integers become their decimal text); anything else is a KitError."""
    out = []
    for value in values:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = str(int(value))
        if not isinstance(value, str):
            raise KitError(f"{what} must be strings; got {value!r} ({type(value).__name__}). "
                           + ("Map class indices to names first: classes[i]." if what == "labels" else ""))
        out.append(str(value))
    return out


def _listing(values: Sequence[str]) -> str:
    """The first few values, quoted, and how many more there are."""
    shown = ", ".join(repr(v) for v in list(values)[:SHOW])
    return shown + (f" ... ({len(values)} in all)" if len(values) > SHOW else "")


def _repeats(values) -> list[str]:
    """Values that occur more than once, each listed once, in order of first repeat."""
    series = pd.Series(list(values), dtype=object)
    return series[series.duplicated()].unique().tolist()


def _extension_hint(missing: Sequence[str], extra: Sequence[str], reference: str) -> str:
    """A hint when the two id lists differ only by a file extension ('img_7.png' vs 'img_7')."""
    stem = lambda name: os.path.splitext(name)[0]  # noqa: E731
    if set(map(stem, missing)) & set(map(stem, extra)):
        return f" The ids differ by a file extension: write them exactly as {reference} does."
    return ""


def _template(sample_submission: Path | None, test_ids: Sequence[str], id_column: str | None,
              label_column: str | None) -> tuple[pd.DataFrame, str, str, str]:
    """The expected submission (columns, id order; labels still to fill), its id/label columns and name."""
    test_ids = _strings(test_ids, "test ids")
    duplicated = _repeats(test_ids)
    if duplicated:
        raise KitError(f"the test ids repeat {_listing(duplicated)}: each test image must have one id.")
    if sample_submission is None:
        id_col, label_col = id_column or "sample_index", label_column or "label"
        return (pd.DataFrame({id_col: sorted(test_ids), label_col: ""}), id_col, label_col,
                "the test folder (ids sorted)")
    sample_submission = Path(sample_submission)
    if not sample_submission.is_file():
        raise KitError(f"{sample_submission}: sample submission file not found; pass sample_submission=None "
                       "to write sample_index,label over the sorted test ids.")
    frame, name = read_csv_strings(sample_submission), sample_submission.name
    columns = list(frame.columns)
    id_col = id_column or find_column(frame, None, ID_COLUMNS, "id", sample_submission) or columns[0]
    others = [c for c in columns if c != id_col]
    label_col = label_column or find_column(frame[others], None, LABEL_COLUMNS, "label", sample_submission) or (
        others[0] if others else None)
    for what, column in (("id", id_col), ("label", label_col)):
        if column not in columns:
            raise KitError(f"{sample_submission}: no {what} column {column!r}; its columns are {columns}. "
                           f"Pass {FLAGS[what]} with one of them.")
    dupes = _repeats(frame[id_col])
    if dupes:
        raise KitError(f"{sample_submission}: ids {_listing(dupes)} appear more than once; "
                       "the sample file is damaged, download it again.")
    absent = sorted(set(frame[id_col]) - set(test_ids))
    unlisted = sorted(set(test_ids) - set(frame[id_col]))
    if absent or unlisted:
        raise KitError(
            f"{sample_submission} and the test folder disagree: "
            + (f"{len(absent)} id(s) of {name} have no test image: {_listing(absent)}. " if absent else "")
            + (f"{len(unlisted)} test image(s) are not in {name}: {_listing(unlisted)}. " if unlisted else "")
            + "Check that the test images were unpacked completely and belong to this competition."
            + _extension_hint(absent, unlisted, name))
    return frame, id_col, label_col, name


def _check(frame: pd.DataFrame, template: pd.DataFrame, id_col: str, label_col: str,
           classes: Sequence[str], source: str, reference: str) -> None:
    """Raise KitError unless `frame` has the template's columns, ids and order, full cells, known labels."""
    missing_cols = [c for c in template.columns if c not in frame.columns]
    extra_cols = [c for c in frame.columns if c not in template.columns]
    if missing_cols or extra_cols:
        raise KitError(f"{source}: columns {list(frame.columns)} but {reference} has {list(template.columns)}"
                       + (f"; missing {missing_cols}" if missing_cols else "")
                       + (f"; unexpected {extra_cols}" if extra_cols else "")
                       + ". Write exactly its columns.")
    if list(frame.columns) != list(template.columns):
        raise KitError(f"{source}: columns in order {list(frame.columns)}; {reference} has "
                       f"{list(template.columns)}. Reorder them: frame[{list(template.columns)}].")
    ids = frame[id_col].astype(str)
    dupes = _repeats(ids)
    if dupes:
        raise KitError(f"{source}: {len(dupes)} duplicated id(s): {_listing(dupes)}. "
                       "Keep one row per test image.")
    expected = template[id_col].tolist()
    missing, extra = sorted(set(expected) - set(ids)), sorted(set(ids) - set(expected))
    if missing or extra:
        raise KitError(f"{source}: {len(frame)} rows, {reference} expects {len(expected)}; "
                       + (f"{len(missing)} id(s) missing: {_listing(missing)}; " if missing else "")
                       + (f"{len(extra)} unknown id(s): {_listing(extra)}; " if extra else "")
                       + "predict every test image exactly once."
                       + _extension_hint(missing, extra, reference))
    wrong = np.flatnonzero(ids.to_numpy() != np.asarray(expected, dtype=object))
    if len(wrong):
        row = int(wrong[0])
        raise KitError(f"{source}: {len(wrong)} row(s) out of order; row {row + 1} has id {ids.iloc[row]!r} "
                       f"where {reference} has {expected[row]!r}. Write the rows in {reference}'s order.")
    for column in (id_col, label_col):
        cells = frame[column]
        empty = np.flatnonzero(cells.isna().to_numpy() | (cells.astype(str).str.strip() == "").to_numpy())
        if len(empty):
            raise KitError(f"{source}: {len(empty)} empty {column!r} cell(s), at ids "
                           f"{_listing(ids.iloc[empty].tolist())}. Every row needs a {column}.")
    vocabulary = set(classes)
    labels = frame[label_col].astype(str)
    unknown = labels[~labels.isin(vocabulary)].value_counts()
    if len(unknown):
        first = str(unknown.index[0])
        close = difflib.get_close_matches(first, list(vocabulary), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if all(u.isdigit() for u in unknown.index) and not any(c.isdigit() for c in vocabulary):
            hint = " (these look like class indices: write classes[i])"
        raise KitError(f"{source}: {int(unknown.sum())} row(s) carry {len(unknown)} label(s) not among the "
                       f"{len(vocabulary)} training classes: "
                       + ", ".join(f"{label!r} x{n}" for label, n in unknown.head(SHOW).items())
                       + f"{hint}. Write labels exactly as the training labels spell them.")


def validate_submission(frame: pd.DataFrame, *, classes: Sequence[str], test_ids: Sequence[str],
                        sample_submission: Path | None, id_column: str | None = None,
                        label_column: str | None = None, source: str = "submission") -> None:
    """Raise KitError naming the problem and the fix unless the leaderboard would accept `frame`."""
    template, id_col, label_col, reference = _template(sample_submission, test_ids, id_column, label_column)
    _check(frame, template, id_col, label_col, classes, source, reference)


def class_distribution(labels: Sequence[str], classes: Sequence[str],
                       train_labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per class: predicted count and share, and (with `train_labels`) the training count and share."""
    table = pd.DataFrame(index=pd.Index(list(classes), name="class"))
    table["predicted"] = pd.Series(list(labels)).value_counts().reindex(table.index, fill_value=0)
    table["predicted_share"] = table["predicted"] / max(len(labels), 1)
    if train_labels is not None:
        table["train"] = pd.Series(list(train_labels)).value_counts().reindex(table.index, fill_value=0)
        table["train_share"] = table["train"] / max(len(train_labels), 1)
    return table


def format_distribution(table: pd.DataFrame, limit: int = 30, furthest: int = 10) -> str:
    """The distribution as text: every class up to `limit` classes, else the `furthest` from their shares."""
    never = int((table["predicted"] == 0).sum())
    shown = table
    if len(table) > limit:
        gap = (table["predicted_share"] - table.get("train_share", 1.0 / len(table))).abs()
        shown = table.loc[gap.sort_values(ascending=False).index[:furthest]]
    head = (f"predicted class distribution ({len(table)} classes"
            + (f", the {furthest} furthest from the {'training' if 'train_share' in table else 'even'} shares"
               if len(table) > limit else "")
            + (f"; {never} never predicted" if never else "") + "):\n")
    return head + shown.to_string(float_format=lambda x: f"{x:.3f}")


def _json_default(value):
    """JSON for NumPy scalars and arrays, paths and anything else (as text)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _strict(value):
    """`value` with every NaN or infinite float (NumPy's too) as None: JSON has no NaN, and strict parsers
    (JavaScript's, Go's, `jq`) reject the `NaN` Python writes by default."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_submission(path: str | Path, ids: Sequence[str], labels: Sequence[str], *, classes: Sequence[str],
                     sample_submission: Path | None, test_ids: Sequence[str],
                     train_labels: Sequence[str] | None = None, id_column: str | None = None,
                     label_column: str | None = None, meta: dict | None = None) -> WrittenSubmission:
    """Write `path` (CSV) and `path` with .json, in the sample file's layout, only if the CSV validates.

    `ids`/`labels` are the predictions in any order. `id_column`/`label_column` default to the
    sample file's (an id-like name, else its first column; a label-like name, else the next one),
    or `sample_index`/`label` without a sample file. Columns of the sample file other than these
    two are kept as it writes them. `meta` (runs, configs, git commits, TTA) goes into the JSON.
    Prints and returns the predicted class distribution beside the training one.
    """
    path = Path(path).expanduser()
    ids, labels = _strings(ids, "ids"), _strings(labels, "labels")
    if len(ids) != len(labels):
        raise KitError(f"{len(ids)} ids but {len(labels)} labels: pass one label per predicted id.")
    template, id_col, label_col, reference = _template(sample_submission, test_ids, id_column, label_column)
    predicted = pd.Series(labels, index=ids)
    dupes = _repeats(ids)
    if dupes:
        raise KitError(f"the predictions repeat {len(dupes)} id(s): {_listing(dupes)}. "
                       "Predict each test image once.")
    frame = template.copy()
    frame[label_col] = frame[id_col].map(predicted).fillna("")  # missing ids -> empty, reported below
    missing = template[id_col][~template[id_col].isin(predicted.index)].tolist()
    extra = sorted(set(ids) - set(template[id_col]))
    if missing or extra:
        raise KitError(f"{len(ids)} predictions for the {len(template)} ids of {reference}: "
                       + (f"{len(missing)} id(s) not predicted: {_listing(missing)}; " if missing else "")
                       + (f"{len(extra)} predicted id(s) not in {reference}: {_listing(extra)}; "
                          if extra else "")
                       + "predict every test image exactly once."
                       + _extension_hint(missing, extra, reference))
    _check(frame, template, id_col, label_col, classes, "the predictions", reference)

    distribution = class_distribution(frame[label_col], classes, train_labels)
    info = {"file": path.name, "rows": len(frame), "columns": list(frame.columns),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "kit_version": kitlib.__version__,
            "predicted_counts": {c: int(n) for c, n in distribution["predicted"].items() if n}}
    meta = dict(meta or {})
    if "written" in meta:
        raise KitError("meta has a key 'written', which the kit fills itself; rename it.")

    def write_csv(tmp: Path) -> None:
        frame.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n", encoding="utf-8")
        _check(read_csv_strings(tmp), template, id_col, label_col, classes, f"{path} (as written)", reference)
        info["sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()

    path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = path.with_suffix(".json")
    if meta_path == path:
        raise KitError(f"{path}: name the submission file .csv; the .json beside it is the run record.")
    meta = _strict(meta)
    json.dumps(meta, default=_json_default)  # fail on an unserialisable meta before anything is written
    replace_atomically(path, write_csv)
    replace_atomically(meta_path, lambda tmp: tmp.write_text(
        json.dumps({**meta, "written": info}, indent=2, default=_json_default, allow_nan=False) + "\n",
        encoding="utf-8"))
    print(f"wrote {path} ({len(frame)} rows, columns {list(frame.columns)}) and {meta_path.name}")
    print(format_distribution(distribution))
    return WrittenSubmission(path, meta_path, distribution)
