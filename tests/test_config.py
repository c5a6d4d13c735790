"""Configs check every option when they are built: a typo fails at once, with the valid values, not hours later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kitlib.audit import AuditConfig
from kitlib.errors import KitError
from kitlib.notebook import SubmitParams
from kitlib.pipeline import AllConfig
from kitlib.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("field,value,expected", [
    ("schedule", "cosin", "schedule (--schedule) 'cosin': choose one of onecycle, cosine, triangular2, plateau, constant."),
    ("precision", "fp8", "precision (--precision) 'fp8': choose one of auto, bf16, fp16, fp32."),
    ("augment", "heavy", "augment (--augment) 'heavy': choose one of adaptive, none, light, medium, strong, auto."),
    ("strength", "up", "strength 'up': choose one of auto, constant, ramp, phases."),
    ("fit", "stretch", "fit 'stretch': choose one of squash, pad, crop."),
    ("norm", "batchnorm", "norm 'batchnorm': choose one of auto, batch, group, layer, instance."),
    ("device", "gpu", "device 'gpu': choose one of auto, cpu, cuda, cuda:N, mps."),
    ("val_fraction", 1.5, "val_fraction (--val-fraction)=1.5: give a value from 0 to 0.99."),
    ("epochs", 0, "epochs (--epochs)=0: give a whole number of at least 1."),
    ("ema", 1.0, "ema=1.0: give a decay between 0 and 1 (e.g. 0.99), or None for no EMA."),
])
def test_train_config_rejects_bad_values_when_built(field, value, expected):
    with pytest.raises(KitError) as error:
        TrainConfig(**{field: value})
    assert str(error.value) == expected


def test_unknown_model_lists_the_registry():
    with pytest.raises(KitError, match=r"^model \(--model\) 'resnet9': choose one of auto, resnet_small, "):
        TrainConfig(model="resnet9")


def test_other_configs_check_their_options_too():
    with pytest.raises(KitError, match=r"^audit 'always': choose one of auto, full, quick, report, none\.$"):
        AllConfig(audit="always")
    with pytest.raises(KitError, match="give the budget of `all` as AllConfig.time_budget"):
        AllConfig(train=TrainConfig(time_budget=60))
    with pytest.raises(KitError, match=r"^folds=1: the audit needs K >= 2 folds"):
        AuditConfig(folds=1)
    modes = r"none, hflip, flips, shifts, hflip\+shifts, flips\+shifts"
    with pytest.raises(KitError, match=rf"^tta='mirror': choose one of {modes}\.$"):
        SubmitParams(tta="mirror")


def test_a_bad_option_on_the_command_line_exits_2_before_any_work(tmp_path):
    # the data folder does not even exist: the option is checked first
    done = subprocess.run([sys.executable, "-m", "kitlib", "train", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "run"), "--schedule", "cosin", "--epochs", "1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: schedule (--schedule) 'cosin': choose one of onecycle, cosine, triangular2, plateau, constant."]
