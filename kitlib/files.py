"""Reading and writing the kit's text files: CSVs read cell by cell as strings, every write atomic.

A crash (a Colab disconnect, Ctrl-C) never leaves a half-written file: writes go to a temporary
file beside the target, which is then renamed over it.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from kitlib.errors import KitError


def read_csv_strings(path: str | Path) -> pd.DataFrame:
    """A CSV with every cell as the exact string in the file ("NA", "None" stay text); KitError when unreadable."""
    path = Path(path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as error:
        raise KitError(f"{path}: the file is empty (not even a header row).") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: not a readable UTF-8 CSV file ({error}).") from error


def replace_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp) on a temporary file beside `path`, flush it to disk, rename it over `path`.

    The rename is atomic on local disks and on Google Drive's mount: readers see the old file or
    the new one, never a part. On failure the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; these are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a CSV atomically, with standard quoting and '\\n' line ends (labels with commas and quotes survive)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return replace_atomically(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))


def write_table(path: str | Path, table) -> Path:
    """A pandas DataFrame (its columns, no index) through `write_csv`."""
    return write_csv(path, table.columns, table.itertuples(index=False))
