"""Reading and writing the kit's text files: CSVs read cell by cell as strings, every write atomic.

A crash (a Colab disconnect, Ctrl-C) never leaves a half-written file: writes go to a temporary
file beside the target, which is then renamed over it.

Reading forgives what spreadsheets and downloads do to a CSV (a BOM, Windows-1252 or UTF-16 text,
`;` or tab separators, trailing empty cells) and refuses, in one line naming the file, what is not
a CSV at all: `file_kind` says what a file seems to be from its first bytes (an HTML page left by a
failed download, a Git LFS pointer, an Excel workbook, an image, ...).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from kitlib.errors import KitError

SNIFF_BYTES = 4096  # what file_kind reads
_MAGIC = (  # first bytes -> what the file is
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"Rar!", "a RAR archive"),
    (b"\x93NUMPY", "a NumPy array file"), (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or Office file"),
    (b"SQLite format 3", "an SQLite database"),
)
_HTML = re.compile(rb"(\xef\xbb\xbf)?\s*(<!doctype html|<html|<head|<\?xml[^>]*>\s*<!doctype html)", re.IGNORECASE)


def file_kind(path: str | Path) -> str:
    """What a file seems to be, from its first bytes: 'empty', 'text', 'binary data', or e.g.
    'an HTML page (a failed or blocked download?)', 'a Git LFS pointer ...', 'a PyTorch file', 'a PNG image'.

    The phrase reads after the file's name in an error ("best.pt: an HTML page ..."). Raises
    KitError when the file is missing, a folder or unreadable.
    """
    head = _read(path, SNIFF_BYTES)
    if not head:
        return "empty (0 bytes)"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        # A PyTorch archive's pickled text may hold any path (even ".../kit-smoke-qq3054xl/"): so it is
        # recognized first by its entry names, and an Excel workbook only by its own.
        if b"/data.pkl" in head or b"/version" in head:
            return "a PyTorch file"
        if b"[Content_Types].xml" in head or head[30:33] == b"xl/":
            return "an Excel workbook (.xlsx)"
        return "a ZIP archive"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return "a Python pickle (an old PyTorch file?)"
    if _HTML.match(head):
        return "an HTML page (a failed or blocked download?)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (run `git lfs pull`, or download the file again)"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" not in head:
        return "JSON text" if head.lstrip()[:1] in (b"{", b"[") else "text"
    return "binary data"


def first_sentence(error: BaseException) -> str:
    """An exception's message up to its first full stop (torch's go on for lines), or its type's name."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ", 1)[0].rstrip(".")


def _read(path: str | Path, size: int = -1) -> bytes:
    """The first `size` bytes of a file (all with -1); KitError when it is missing, a folder or unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except FileNotFoundError as error:
        raise KitError(f"{path}: no such file.") from error
    except IsADirectoryError as error:
        raise KitError(f"{path}: a folder, not a file.") from error
    except OSError as error:  # permissions, I/O errors
        raise KitError(f"{path}: cannot be read ({error.strerror or error}).") from error


def _decode(data: bytes, path: Path) -> str:
    """The text of a CSV: UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252 (what Excel writes), warned."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        if len(data) % 2:
            raise KitError(f"{path}: UTF-16 text of an odd number of bytes: it was cut off (an interrupted download "
                           "or copy?). Get the file again.")
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start >= len(data) - 3:  # a character cut in half at the very end
            raise KitError(f"{path}: the file ends in the middle of a character: it was cut off (an interrupted "
                           "download or copy?). Get the file again.") from error
        encoding = "cp1252"
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            encoding, text = "latin-1", data.decode("latin-1")
        warnings.warn(f"{path}: not UTF-8 text; read as {encoding} (what Excel writes). Check accented names, "
                      "or save the file as 'CSV UTF-8'.", stacklevel=3)
        return text


def _delimiter(text: str) -> str:
    """',' unless the header line has no comma and has ';' or a tab (Excel's CSV in many locales)."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    counts = {sep: header.count(sep) for sep in (";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _unique(names: list[str]) -> list[str]:
    """Header names made unique as pandas does ('label', 'label.1'); empty ones become 'Unnamed: i'."""
    out, seen = [], {}
    for i, name in enumerate(names):
        name = name or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def read_csv_strings(path: str | Path) -> pd.DataFrame:
    """A CSV with every cell as the exact string in the file ("NA", "None" stay text); KitError when unreadable.

    Rows keep their order in a fresh RangeIndex. Empty lines and empty trailing cells (spreadsheet
    leftovers) are dropped; a row with more cells than the header, or with fewer, is a KitError
    naming its line (the last line short and unterminated: the file was cut off).
    """
    return read_csv_lines(path)[0]


def read_csv_lines(path: str | Path) -> tuple[pd.DataFrame, list[int]]:
    """`read_csv_strings`'s table and the file line on which each of its rows starts (for messages)."""
    path = Path(path)
    kind = file_kind(path)
    if kind not in ("text", "empty (0 bytes)"):
        raise KitError(f"{path}: {kind}, not a CSV file. "
                       + ("Save it as 'CSV UTF-8' from the spreadsheet." if "Excel" in kind else
                          "Get the right file (download it again if it came from the web)."))
    data = _read(path)
    text = _decode(data, path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    rows, lines, start = [], [], 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as error:  # a NUL byte, or a quote never closed
        raise KitError(f"{path} line {start}: not a readable CSV ({error}); a quote (\") never closed, or the file "
                       "was cut off.") from error
    if not rows:
        raise KitError(f"{path}: the file is empty (not even a header row).")
    header = rows[0]
    while header and not header[-1].strip() and all(len(r) < len(header) or not r[len(header) - 1].strip()
                                                    for r in rows[1:]):
        header = header[:-1]  # an empty trailing column: Excel's leftover
    width, body = len(header), []
    for line, row in zip(lines[1:], rows[1:]):
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            raise KitError(f"{path} line {line}: {len(row)} cells, but the header has {width} "
                           f"({', '.join(header)}). Quote cells that contain the separator.")
        if len(row) < width:
            cut = line == lines[-1] and not text.endswith(("\n", "\r"))
            raise KitError(f"{path} line {line}: {len(row)} of {width} cells"
                           + ("; the file ends there without a line break: it was cut off (an interrupted "
                              "download?). Get the file again." if cut else ". Fill in the missing cells."))
        body.append(row[:width])
    frame = pd.DataFrame(body, columns=_unique(header), dtype=str) if body else \
        pd.DataFrame({name: pd.Series(dtype=str) for name in _unique(header)})
    return frame, lines[1:]


def read_text(path: str | Path, what: str = "text file") -> str:
    """A text file's content (UTF-8, UTF-16 with a BOM, else Windows-1252, warned); KitError when it is no text."""
    path = Path(path)
    kind = file_kind(path)
    if kind not in ("text", "JSON text", "empty (0 bytes)"):
        raise KitError(f"{path}: {kind}, not a {what}. Get the right file (download it again if it came from the web).")
    return _decode(_read(path), path)


def read_json(path: str | Path, what: str = "JSON file") -> dict:
    """A JSON object (a dict) from a file; KitError naming the file for anything else (empty, cut off, not JSON)."""
    path = Path(path)
    text = read_text(path, what)
    if not text.strip():
        raise KitError(f"{path}: the file is empty; expected a {what}.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise KitError(f"{path} line {error.lineno}: not valid JSON ({error.msg}); expected a {what}.") from error
    if not isinstance(value, dict):
        raise KitError(f"{path}: JSON {type(value).__name__}, but a {what} is an object {{\"name\": value, ...}}.")
    return value


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
