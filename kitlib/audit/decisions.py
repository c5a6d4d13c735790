"""decisions.csv and its log: every review decision on disk the moment it is made, compacted into the CSV.

    record("runs/audit/decisions.csv", [("img_0007.png", "relabel", "two (a pair)")])  # appended, then compacted
    read_decisions("runs/audit/decisions.csv")       # the CSV with any decision still in the log folded in

decisions.csv (`sample_index,action,new_label`, DESIGN.md) is what `train --decisions` applies. Beside
it, decisions.csv.log holds the decisions not yet folded into it: one JSON object a line
(`{"sample_index": ..., "action": ..., "new_label": ...}`), each appended with one write and fsynced
before the click returns. Compaction folds the log into the CSV (a sample's latest decision wins, in
the place of its first), replaces the CSV atomically (kitlib.files.replace_atomically), then empties
the log. So a kernel that dies at any moment leaves both files readable:
- mid-append: only the log's last line can be torn (no newline yet); reading ignores it and the next
  append cuts it off. That one click was never acknowledged;
- mid-compaction: the CSV is the old one or the new one, never a part; the log still holds every
  line, which the next compaction (any review opening the file) folds in again, with the same result.
Appends and compactions hold an exclusive lock on the log (flock; none on Windows or on a file system
without locks), so reviews in two kernels writing the same decisions.csv add up instead of
overwriting each other.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from kitlib.data.dataset import ACTIONS
from kitlib.errors import KitError
from kitlib.files import read_csv_strings, write_csv

HEADER = ["sample_index", "action", "new_label"]
LOG_SUFFIX = ".log"

try:  # POSIX (Linux, macOS, Colab, Kaggle); on Windows the files are written unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def log_path(csv_path: str | Path) -> Path:
    """The log beside a decisions CSV: decisions.csv -> decisions.csv.log."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name + LOG_SUFFIX)


def check(sample: str, action: str, new_label: str, where: str) -> tuple[str, str, str]:
    """One decision as (sample_index, action, new_label), new_label '' unless relabel; KitError naming `where`."""
    if not isinstance(sample, str) or not sample:
        raise KitError(f"{where}: sample_index {sample!r} must be a non-empty string.")
    if action not in ACTIONS:
        raise KitError(f"{where}: action {action!r} for {sample!r}: choose one of {', '.join(ACTIONS)}.")
    new_label = new_label if action == "relabel" else ""
    if not isinstance(new_label, str) or (action == "relabel" and not new_label):
        raise KitError(f"{where}: relabel of {sample!r} needs the new label (a class name), got {new_label!r}.")
    return sample, action, new_label


@contextlib.contextmanager
def _locked_log(csv_path: Path) -> Iterator:
    """The log opened for reading and appending (created if missing), held under an exclusive lock."""
    path = log_path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as log:
        if fcntl is not None:
            try:
                fcntl.flock(log.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            except OSError:  # a file system without locks (some network mounts): one session at a time there
                pass
        yield log


def _complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The newline-terminated lines of the log's bytes, and the length they take (a torn tail is left out)."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def _parse(lines: list[bytes], path: Path) -> list[tuple[str, str, str]]:
    """Log lines -> decisions; KitError naming the line for one that is not a decision (a torn line is never here)."""
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
            found.append(check(entry["sample_index"], entry["action"], entry.get("new_label", ""),
                               f"{path} line {number}"))
        except (ValueError, KeyError, TypeError) as error:
            raise KitError(f"{path} line {number}: not a decision ({line[:80]!r}: {error}). Delete that line; "
                           "the decisions in decisions.csv are not affected.") from error
    return found


def read_log(csv_path: str | Path) -> list[tuple[str, str, str]]:
    """The decisions in the log not yet compacted, oldest first (a torn last line is ignored); [] when none."""
    path = log_path(csv_path)
    if not path.is_file():
        return []
    return _parse(_complete_lines(path.read_bytes())[0], path)


def _read_csv(csv_path: Path) -> pd.DataFrame:
    """decisions.csv as strings (empty table when missing); KitError when its columns are not the contract's."""
    if not csv_path.is_file():
        return pd.DataFrame(columns=HEADER, dtype=object)
    table = read_csv_strings(csv_path)
    if list(table.columns) != HEADER:
        raise KitError(f"{csv_path}: columns {list(table.columns)}; expected {','.join(HEADER)}.")
    return table.fillna("")


def _fold(table: pd.DataFrame, entries: Iterable[tuple[str, str, str]]) -> pd.DataFrame:
    """The CSV's rows, then the log's: one row per sample, its latest decision in the place of its first."""
    rows = {}
    for sample, action, new_label in [*table.itertuples(index=False, name=None), *entries]:
        rows[sample] = (action, new_label)  # a dict keeps the place a key first took
    return pd.DataFrame([(s, a, n) for s, (a, n) in rows.items()], columns=HEADER, dtype=object)


def read_decisions(csv_path: str | Path) -> pd.DataFrame:
    """Every decision (sample_index, action, new_label): the CSV with the log folded in; empty when neither exists.

    Reads only: what the next compaction would write. Raises KitError for a CSV without the
    contract's columns or a log line that is not a decision.
    """
    csv_path = Path(csv_path)
    return _fold(_read_csv(csv_path), read_log(csv_path))


def record(csv_path: str | Path, decisions: Iterable[tuple[str, str, str]], *, compact_now: bool = True) -> None:
    """Append decisions (sample_index, action, new_label) to the log with one write, fsynced; then compact.

    A torn last line left by a crash is cut off first. `compact_now=False` leaves them in the log
    (a later `compact` or `read_decisions` sees them). KitError for an invalid decision.
    """
    csv_path = Path(csv_path)
    rows = [check(*d, where=str(csv_path)) for d in decisions]
    if not rows:
        return
    text = "".join(json.dumps(dict(zip(HEADER, row)), ensure_ascii=False) + "\n" for row in rows)
    with _locked_log(csv_path) as log:
        log.seek(0)
        data = log.read()  # small: the decisions since the last compaction
        end = _complete_lines(data)[1]
        if end < len(data):  # a torn line from a crash: never acknowledged, cut it off
            log.truncate(end)
        log.write(text.encode("utf-8"))  # "a" mode: at the end, in one write
        log.flush()
        os.fsync(log.fileno())
    if compact_now:
        compact(csv_path)


def compact(csv_path: str | Path) -> pd.DataFrame:
    """Fold the log into decisions.csv (written atomically), then empty the log; return the decisions.

    Nothing is written when the log holds no decision. Safe to call at any time, from any process.
    """
    csv_path = Path(csv_path)
    with _locked_log(csv_path) as log:
        log.seek(0)
        lines, _ = _complete_lines(log.read())
        entries = _parse(lines, log_path(csv_path))
        table = _fold(_read_csv(csv_path), entries)
        if entries:
            write_csv(csv_path, HEADER, table.itertuples(index=False, name=None))
        if log.tell():  # the log's lines are in the CSV now (or it held only a torn line): empty it
            log.truncate(0)
            log.flush()
            os.fsync(log.fileno())
    return table


def summary(table: pd.DataFrame) -> str:
    """'3 drop, 1 relabel' for a decisions table, in ACTIONS order ('none' when empty)."""
    counts = table["action"].value_counts()
    return ", ".join(f"{int(counts[a])} {a}" for a in ACTIONS if a in counts) or "none"
