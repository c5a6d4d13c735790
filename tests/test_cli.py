"""The command line: every command answers --help, `all` and `predict` write a valid submission, bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kitlib.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["demo", "eda", "audit", "train", "predict", "all"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and "usage: python -m kitlib" in capsys.readouterr().out


def test_all_then_predict_on_the_demo(demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run's curves go to ./images: keep them out of the repo
    run = tmp_path / "run"
    started = time.perf_counter()
    assert main(["all", str(demo_root), "--out", str(run), "--time-budget", "30", "--model", "resnet_small"]) == 0
    assert 22 < time.perf_counter() - started < 33  # the budget covers the whole command, and is used
    out = capsys.readouterr().out
    assert f"wrote {run / 'submission.csv'}" in out and "; estimated test macro-F1 0." in out
    estimate = json.loads((run / "submission.json").read_text())["estimate"]  # the final model saw every sample
    assert estimate["source"] == "hold-out, then joined" and "297 held out" in estimate["how"]
    assert list(pd.read_csv(run / "metrics.csv")["phase"])[-1] == "joined"
    submission = pd.read_csv(run / "submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(demo_root / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert list(submission["sample_index"]) == list(sample["sample_index"])
    assert set(submission["label"]) <= set(pd.read_csv(demo_root / "train_labels.csv", dtype=str)["label"])
    answers = pd.read_csv(demo_root.parent / "answers.csv", dtype=str)
    assert (submission["label"] == answers["label"]).mean() > 0.5  # it learned the digits in 30 s
    assert main(["predict", str(run), "--data", str(demo_root), "--out", str(tmp_path / "again.csv"), "--tta"]) == 0
    assert len(pd.read_csv(tmp_path / "again.csv")) == 300 and (tmp_path / "again.json").exists()


def test_audit_then_train_without_the_suspects(demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    audit = tmp_path / "audit"
    assert main(["audit", str(demo_root), "--out", str(audit), "--folds", "2", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {audit / 'suspects.csv'}" in out and "--decisions" in out
    assert sorted(p.name for p in audit.iterdir()) == ["checks.csv", "folds", "oof.npz", "scores.csv", "suspects.csv",
                                                       "suspects.png"]
    assert sorted(p.name for p in (audit / "folds").iterdir()) == ["fold0", "fold1"]
    suspects = pd.read_csv(audit / "suspects.csv", dtype=str, keep_default_na=False)
    assert (suspects["issue"] == "blank").sum() == 8  # flat images need no model
    assert main(["train", str(demo_root), "--out", str(tmp_path / "clean"), "--epochs", "1",
                 "--decisions", str(audit / "suspects.csv")]) == 0
    assert f"suspects.csv: dropped {len(suspects)}, relabelled 0 of 1497 samples" in capsys.readouterr().out


def test_all_audits_first(demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    # no budget: the full audit (fold models), then training without what it is sure of; 2-epoch fold
    # models are too weak to back their mislabeled suspects, which are only listed
    assert main(["all", str(demo_root), "--out", str(run), "--epochs", "2", "--audit-folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "of the audit's suspects, predicted with its fold models too" in out
    assert "mislabeled suspects only listed: the fold models agree with" in out
    assert (run / "folds" / "fold1" / "best.pt").exists() and (run / "suspects.csv").exists()
    dropped = pd.read_csv(run / "dropped.csv", dtype=str, keep_default_na=False)
    suspects = pd.read_csv(run / "suspects.csv", dtype=str, keep_default_na=False).set_index("sample_index")
    assert set(suspects.loc[dropped["sample_index"], "issue"]) <= {"blank", "alien", "duplicate", "conflict"}
    record = json.loads((run / "submission.json").read_text())
    assert len(record["runs"]) == 3  # the final model and the two fold models
    # a short budget: the quick audit (no models) finds and drops the 8 blank, 3 duplicated and 4 alien
    # images, and 3 pairs of look-alike digits as near-duplicates (one of each dropped)
    assert main(["all", str(demo_root), "--out", str(tmp_path / "short"), "--time-budget", "20"]) == 0
    out = capsys.readouterr().out
    assert ("audit: 18 suspects of 1497 samples (8 blank, 0 shared_mask, 0 conflict, 6 duplicate, 4 alien, "
            "0 mislabeled)") in out
    assert "dropped.csv: dropped 18, relabelled 0 of 1497 samples" in out
    assert not (tmp_path / "short" / "folds").exists()
    # ... which --audit report only lists
    assert main(["all", str(demo_root), "--out", str(tmp_path / "report"), "--time-budget", "20",
                 "--audit", "report"]) == 0
    out = capsys.readouterr().out
    assert "training on every sample: --audit report only lists the suspects" in out and "dropped.csv" not in out


def test_bad_input_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kitlib", "train", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "run"), "--epochs", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: no such folder. Pass the folder that holds the competition's files."]


def test_epochs_and_budget_are_alternatives(demo_root, tmp_path, capsys):
    assert main(["train", str(demo_root), "--out", str(tmp_path / "r"), "--epochs", "1", "--time-budget", "9"]) == 2
    assert "give epochs or time_budget, not both" in capsys.readouterr().err



def test_a_progress_bar_written_to_a_file_shows_after_30_s_and_redraws_every_30_s(monkeypatch):
    import io

    from kitlib.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    for stream, interval, delay, shown in ((io.StringIO(), 30.0, 30.0, ""), (Terminal(), 0.1, 0.0, "work: 100%")):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(total=3, desc="work") as bar:
            bar.update(3)
        assert (bar.mininterval, bar.delay) == (interval, delay)
        # in a log, a task shorter than 30 s leaves no bar
        assert shown in stream.getvalue() and ("work" in stream.getvalue()) == bool(shown)
