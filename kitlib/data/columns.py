"""The labels CSV's columns and cells: found by name or by value, cleaned of what the eye cannot see.

    frame = clean_cells(frame, path, lines)                   # stripped, zero-width characters removed, warned
    id_col = find_id_column(frame, None, resolve, path, folder)  # by name, else the column whose values name files
    labels = unify_labels(frame[label_col], lines, path)      # 'cat' and 'cat ' are one class; 'Cat' is reported

Competition CSVs come exported from databases, edited in Excel and typed by hand: a label "cat "
with a trailing space, an id with a zero-width space pasted from a web page, a header " label", a
competition's own column names (`image_name`, `target`). Each is found here and said once, in a
warning that names the lines, so no class ever differs from another only by what is invisible.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from kitlib.errors import KitError

# Column names the kit recognises, compared by `name_key` (case, spaces and punctuation aside), in order of preference.
ID_COLUMNS = ("sample_index", "id", "image_id", "image", "image_name", "filename", "file_name", "file", "img",
              "img_id", "img_name", "name", "fname", "path", "image_path", "file_path", "filepath", "image_file")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "class_id", "target", "category",
                 "species", "diagnosis", "breed")
FLAGS = {"id": "--id-column NAME (id_column= in Python, setup(id_column=) in the notebooks)",
         "label": "--label-column NAME (label_column= in Python, setup(label_column=) in the notebooks)"}
# zero-width spaces and joiners, word joiner, BOM, soft hyphen, direction marks and embeddings
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
SHOW = 5  # cells a warning lists


def clean(text: str) -> str:
    """`text` without invisible characters (anywhere) and without surrounding whitespace (NBSP, tabs included)."""
    return _INVISIBLE.sub("", text).strip()


def name_key(name: str) -> str:
    """How column names are compared: 'Image Name', 'image_name' and ' IMAGE-NAME' are all 'imagename'."""
    return re.sub(r"[\W_]+", "", clean(name).casefold())


def _listing(items: Sequence[str]) -> str:
    return ", ".join(items[:SHOW]) + (f" ... ({len(items)} in all)" if len(items) > SHOW else "")


def clean_cells(frame: pd.DataFrame, path: Path, lines: Sequence[int]) -> pd.DataFrame:
    """Header names and every cell `clean`ed; one warning naming the cells that changed (by file line)."""
    header = [f"header {c!r}" for c in frame.columns if clean(c) != c]
    names = [clean(c) for c in frame.columns]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        raise KitError(f"{path}: {len(twins)} column name(s) appear twice once spaces are removed: "
                       f"{', '.join(map(repr, twins))}. Keep one column of each name.")
    out = frame.rename(columns=clean)
    cells = []  # (line, column position, text)
    for j, (raw, column) in enumerate(zip(frame.columns, out.columns)):
        values = frame[raw].astype(str)
        cleaned = values.map(clean)
        cells += [(lines[i], j, f"line {lines[i]} {column} {values.iloc[i]!r}")
                  for i in (values != cleaned).to_numpy().nonzero()[0]]
        out[column] = cleaned
    changed = header + [text for *_, text in sorted(cells)]
    if changed:
        warnings.warn(f"{path}: {len(changed)} cell(s) had surrounding whitespace or invisible characters, "
                      f"removed: {_listing(changed)}", stacklevel=3)
    return out


def _groups(names, key) -> list[list[str]]:
    """The names that share a key, for every key shared by more than one name."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(key(name), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def unify_labels(labels: pd.Series, lines: Sequence[int], path: Path) -> pd.Series:
    """Labels that differ only in inner whitespace ('Triple  negative') take the commonest spelling (warned);
    labels that differ only in case ('Cat', 'cat') stay apart and are reported: they may be one class."""
    labels = labels.astype(str)
    counts = labels.value_counts()  # commonest first
    spelling = {name: group[0] for group in _groups(counts.index, lambda n: " ".join(n.split()))
                for name in group[1:]}
    if spelling:
        moved = labels.isin(list(spelling)).to_numpy().nonzero()[0]
        warnings.warn(f"{path}: {len(moved)} label(s) differ from a commoner one only in whitespace and are read as "
                      "it: " + _listing([f"line {lines[i]} {labels.iloc[i]!r} -> {spelling[labels.iloc[i]]!r}"
                                         for i in moved]), stacklevel=3)
        labels = labels.map(lambda n: spelling.get(n, n))
        counts = labels.value_counts()
    alike = _groups(counts.index, str.casefold)
    if alike:
        warnings.warn(f"{path}: labels that differ only in case are separate classes: "
                      + "; ".join(" vs ".join(f"{n!r} ({counts[n]} rows)" for n in group) for group in alike[:SHOW])
                      + ". If they are one class, relabel one spelling in a decisions.csv (train --decisions).",
                      stacklevel=3)
    return labels


def find_column(frame: pd.DataFrame, wanted: str | None, options: Sequence[str], what: str,
                path: Path) -> str | None:
    """The column named `wanted` (KitError when absent), else the first of `options` by `name_key`; else None."""
    keys = {name_key(c): c for c in reversed(list(frame.columns))}  # the first column wins a tie
    if wanted is not None:
        if wanted in frame.columns:
            return wanted
        if name_key(wanted) not in keys:
            raise KitError(f"{path}: no column {wanted!r} (given as the {what} column); found columns: "
                           f"{', '.join(map(str, frame.columns))}.")
        return keys[name_key(wanted)]
    return next((keys[name_key(o)] for o in options if name_key(o) in keys), None)


def find_id_column(frame: pd.DataFrame, wanted: str | None, resolve: Callable[[str], object], path: Path,
                   folder: Path) -> str:
    """The id column: `wanted`, else a known name, else the column whose values name the most image files.

    `resolve(value)` gives the image a cell names, or None. A column chosen by its values is said
    in a warning; none naming at least half the rows' files is a KitError naming the option.
    """
    found = find_column(frame, wanted, ID_COLUMNS, "id", path)
    if found is not None:
        return found
    hits = {c: len({resolve(v) for v in frame[c]} - {None}) for c in frame.columns}
    best = max(hits, key=hits.get) if hits else None
    if best is not None and hits[best] >= max(1, len(frame) / 2):
        warnings.warn(f"{path}: id column {best!r} (its values name {hits[best]} of the {len(frame)} rows' image "
                      f"files in {folder.name}/); pass {FLAGS['id']} to choose another", stacklevel=3)
        return best
    raise KitError(f"{path}: no id column (looked for {', '.join(ID_COLUMNS)}, and for values that name the files "
                   f"in {folder}); found columns: {', '.join(map(str, frame.columns))}. Pass {FLAGS['id']}.")


def find_label_column(frame: pd.DataFrame, wanted: str | None, id_column: str, path: Path) -> str:
    """The label column: `wanted`, else a known name, else the only column besides the id; else a KitError."""
    found = find_column(frame, wanted, LABEL_COLUMNS, "label", path)
    others = [c for c in frame.columns if c != id_column]
    if found is None and len(others) == 1:
        found = others[0]
    if found is None or found == id_column:
        raise KitError(f"{path}: no label column (looked for {', '.join(LABEL_COLUMNS)}); found columns: "
                       f"{', '.join(map(str, frame.columns))}. Pass {FLAGS['label']}.")
    return found
