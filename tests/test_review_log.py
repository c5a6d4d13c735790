"""kitlib.audit.decisions: the review's log and its compaction into decisions.csv (append, fold, crashes, two sessions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kitlib.audit import decisions
from kitlib.audit.decisions import compact, log_path, read_decisions, read_log, record
from kitlib.data import apply_decisions
from kitlib.errors import KitError
from kitlib.files import read_csv_strings

ROOT = Path(__file__).resolve().parents[1]
HEADER = "sample_index,action,new_label\n"


def test_record_appends_to_the_log_and_compacts_into_the_csv(tmp_path):
    out = tmp_path / "run" / "decisions.csv"
    record(out, [("s1", "relabel", 'd "quoted"'), ("s2", "drop", "")], compact_now=False)
    assert log_path(out) == tmp_path / "run" / "decisions.csv.log"
    assert log_path(out).read_text(encoding="utf-8") == (
        '{"sample_index": "s1", "action": "relabel", "new_label": "d \\"quoted\\""}\n'
        '{"sample_index": "s2", "action": "drop", "new_label": ""}\n')
    assert not out.exists()
    assert read_log(out) == [("s1", "relabel", 'd "quoted"'), ("s2", "drop", "")]
    assert read_decisions(out).values.tolist() == [["s1", "relabel", 'd "quoted"'], ["s2", "drop", ""]]

    table = compact(out)
    assert out.read_text(encoding="utf-8") == HEADER + 's1,relabel,"d ""quoted"""\ns2,drop,\n'
    assert log_path(out).read_bytes() == b"" and table.values.tolist() == read_decisions(out).values.tolist()
    record(out, [("s3", "keep", "ignored: only a relabel keeps its label")])  # compacts at once by default
    assert out.read_text(encoding="utf-8") == HEADER + 's1,relabel,"d ""quoted"""\ns2,drop,\ns3,keep,\n'
    assert log_path(out).read_bytes() == b""


def test_compaction_keeps_each_samples_first_place_and_latest_decision(tmp_path):
    out = tmp_path / "decisions.csv"
    out.write_text(HEADER + "s1,drop,\ns2,keep,\ns1,keep,\n", encoding="utf-8")  # written by hand, s1 twice
    record(out, [("s3", "relabel", "b, c"), ("s2", "drop", ""), ("s3", "relabel", "a")], compact_now=False)
    compact(out)
    assert out.read_text(encoding="utf-8") == HEADER + "s1,keep,\ns2,drop,\ns3,relabel,a\n"
    samples = pd.DataFrame({"sample_index": ["s1", "s2", "s3", "s4"], "label": ["a", "a", "b, c", "a"]})
    applied = apply_decisions(samples, out, ["a", "b, c"])  # what train --decisions reads
    assert applied.to_dict("list") == {"sample_index": ["s1", "s3", "s4"], "label": ["a", "a", "a"]}


def test_a_torn_last_line_is_ignored_then_cut_off(tmp_path):
    out = tmp_path / "decisions.csv"
    record(out, [("s1", "drop", ""), ("s2", "keep", "")], compact_now=False)
    complete = log_path(out).read_bytes()
    with open(log_path(out), "ab") as log:  # the kernel died in the middle of the third write
        log.write(b'{"sample_index": "s3", "act')
    assert read_log(out) == [("s1", "drop", ""), ("s2", "keep", "")]
    assert read_decisions(out)["sample_index"].tolist() == ["s1", "s2"]

    record(out, [("s4", "drop", "")], compact_now=False)  # the next append cuts the torn line off first
    assert log_path(out).read_bytes() == complete + b'{"sample_index": "s4", "action": "drop", "new_label": ""}\n'
    with open(log_path(out), "ab") as log:
        log.write(b'{"sample_index": "s5", "action": "drop", "new_la')
    compact(out)  # and a compaction folds the complete lines and empties the log, torn line and all
    assert out.read_text(encoding="utf-8") == HEADER + "s1,drop,\ns2,keep,\ns4,drop,\n"
    assert log_path(out).read_bytes() == b""


def test_a_damaged_line_inside_the_log_is_named(tmp_path):
    out = tmp_path / "decisions.csv"
    log_path(out).write_bytes(b'{"sample_index": "s1", "action": "drop", "new_label": ""}\nnot json\n')
    with pytest.raises(KitError, match=r"decisions.csv.log line 2: not a decision \(b'not json'"):
        read_decisions(out)
    log_path(out).write_bytes(b'{"sample_index": "s1", "action": "purge", "new_label": ""}\n')
    with pytest.raises(KitError, match=r"line 1: action 'purge' for 's1': choose one of drop, keep, relabel"):
        compact(out)
    with pytest.raises(KitError, match=r"relabel of 's1' needs the new label"):
        record(out, [("s1", "relabel", "")])
    out.write_text("sample_index,decision\ns1,drop\n", encoding="utf-8")
    with pytest.raises(KitError, match=r"columns \['sample_index', 'decision'\]; expected sample_index,action"):
        read_decisions(out)


def test_a_crash_during_compaction_leaves_both_files_readable(tmp_path, monkeypatch):
    out = tmp_path / "decisions.csv"
    record(out, [("s1", "drop", "")])
    before = out.read_text(encoding="utf-8")
    record(out, [("s2", "keep", "")], compact_now=False)

    def dies(*_):  # the rename that would publish the new CSV never happens
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        compact(out)
    monkeypatch.undo()
    assert out.read_text(encoding="utf-8") == before  # the old CSV, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decisions.csv", "decisions.csv.log"]  # no temp file
    assert read_log(out) == [("s2", "keep", "")]

    real = decisions.write_csv

    def written_then_dies(*args):  # the CSV is replaced, the kernel dies before the log is emptied
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(decisions, "write_csv", written_then_dies)
    with pytest.raises(KeyboardInterrupt):
        compact(out)
    monkeypatch.undo()
    assert out.read_text(encoding="utf-8") == HEADER + "s1,drop,\ns2,keep,\n"
    assert read_log(out) == [("s2", "keep", "")]  # folded again next time: the same result
    compact(out)
    assert out.read_text(encoding="utf-8") == HEADER + "s1,drop,\ns2,keep,\n" and read_log(out) == []


WRITER = """
import sys
from kitlib.audit.decisions import record
for i in range(100000):
    record(sys.argv[1], [(f"s{i}", "relabel", "a label, with a comma " + "x" * 200)])
    print(i, flush=True)
"""


def test_a_killed_writer_loses_no_acknowledged_decision(tmp_path):
    out = tmp_path / "decisions.csv"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        acknowledged = [int(writer.stdout.readline()) for _ in range(40)]  # each printed after its record()
    finally:
        writer.send_signal(signal.SIGKILL)  # anywhere: mid-append, mid-compaction, between the two
        writer.wait(timeout=30)
    assert acknowledged == list(range(40))
    table = read_decisions(out)  # both files readable; nothing acknowledged is missing, nothing is torn
    count = len(table)
    assert count >= 40 and table["sample_index"].tolist() == [f"s{i}" for i in range(count)]
    assert set(table["action"]) == {"relabel"} and set(table["new_label"]) == {"a label, with a comma " + "x" * 200}
    compact(out)
    assert len(read_csv_strings(out)) == count and log_path(out).read_bytes() == b""


def test_two_sessions_writing_one_file_add_up(tmp_path):
    out = tmp_path / "decisions.csv"
    # two kernels, each with its own idea of the file, interleaving: neither overwrites the other
    record(out, [("a1", "drop", "")])
    record(out, [("b1", "keep", "")])
    record(out, [("a2", "relabel", "x")], compact_now=False)
    record(out, [("b2", "drop", "")])
    record(out, [("a1", "keep", "")])
    assert out.read_text(encoding="utf-8") == HEADER + "a1,keep,\nb1,keep,\na2,relabel,x\nb2,drop,\n"

    # and two processes at once (the log's lock): a child writes p0..p29 while this process writes q0..q29
    script = ("import sys\nfrom kitlib.audit.decisions import record\nprint('ready', flush=True)\n"
              "for i in range(30): record(sys.argv[1], [(f'p{i}', 'drop', '')])\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline() == "ready\n"
        for i in range(30):
            record(out, [(f"q{i}", "drop", "")])
    finally:
        assert child.wait(timeout=60) == 0
    names = read_csv_strings(out)["sample_index"].tolist()
    assert sorted(n for n in names if n[0] in "pq") == sorted([f"p{i}" for i in range(30)] + [f"q{i}" for i in range(30)])
    assert len(names) == 4 + 60 and log_path(out).read_bytes() == b""
