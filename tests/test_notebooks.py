"""The numbered notebooks as committed (thin, stripped, one parameters cell) and kitlib.notebook's set-up.

Running them is nbmake's job (`pytest --nbmake notebooks/`, in smoke mode via notebooks/conftest.py);
here they are read, never executed.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
from builders import csv_competition, imagefolder_competition

from kitlib import models, notebook
from kitlib.errors import KitError
from kitlib.notebook import Env, ReviewParams, TrainParams, configure, describe
from kitlib.train import TrainConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["00_eda.ipynb", "01_outliers.ipynb", "02_train_resnet.ipynb", "03_train_pretrained.ipynb",
            "04_submission.ipynb", "05_logbook.ipynb"]
PARAMS = {"EdaParams", "ReviewParams", "TrainParams", "SubmitParams", "LogbookParams"}


# --------------------------------------------------------------------------------------------- the files

def _python(source: str) -> ast.Module:
    """A code cell as Python: IPython's magics (%pip ...) turned into calls first."""
    from IPython.core.inputtransformer2 import TransformerManager

    return ast.parse(TransformerManager().transform_cell(source))


def _parameters_problem(source: str) -> str | None:
    """Why a parameters cell is not one `config = <XParams>(...)` assignment, or None."""
    body = _python(source).body
    if len(body) != 1 or not isinstance(body[0], ast.Assign) or not isinstance(body[0].value, ast.Call):
        return "the parameters cell must hold exactly one assignment: config = <Params>(...)"
    target, call = body[0].targets[0], body[0].value
    name = getattr(call.func, "id", None)
    if getattr(target, "id", None) != "config" or name not in PARAMS:
        return f"the parameters cell must assign config = one of {sorted(PARAMS)}"
    return None


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Everything that breaks the notebook rules (empty when the notebook is fine)."""
    found = []
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        found.append(f"kernel {kernel!r}, not 'python3'")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        if cell.get("outputs") or cell.get("execution_count") is not None:
            found.append(f"code cell {i} holds outputs (strip them before committing)")
        for node in ast.walk(_python(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                found.append(f"code cell {i} defines {type(node).__name__} (move it into kitlib)")
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        found.append(f"{len(tagged)} cells tagged 'parameters' (need exactly one)")
    else:
        problem = _parameters_problem(code[tagged[0]].source)
        if problem:
            found.append(problem)
        if not any("configure(config, env)" in c.source for c in code[tagged[0] + 1:]):
            found.append("no cell after the parameters calls configure(config, env)")
    if not code or "notebook.setup()" not in code[0].source:
        found.append("the first code cell does not call notebook.setup()")
    return found


def test_the_six_notebooks_exist():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_follows_the_rules(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert problems(nb) == []


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_has_no_absolute_paths_but_kaggles_and_colabs(name):
    text = "".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells)
    text = text.replace("/content/drive", "")  # Colab's fixed Drive mount point, like /kaggle/input
    for prefix in ("/home/", "/root/", "/work/", "/tmp/", "/content/", "C:\\"):
        assert prefix not in text


def _good_notebook() -> nbformat.NotebookNode:
    setup = nbformat.v4.new_code_cell("%pip install -q x\nfrom kitlib import notebook\nenv = notebook.setup()")
    params = nbformat.v4.new_code_cell("config = TrainParams(run='r', train=TrainConfig())  # a comment")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[setup, params, nbformat.v4.new_code_cell("config = configure(config, env)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_the_rules_catch_each_violation():
    assert problems(_good_notebook()) == []
    nb = _good_notebook()
    nb.metadata["kernelspec"]["name"] = "conda-env-kit"
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells.append(nbformat.v4.new_code_cell("def f(x):\n    return x\nclass A:\n    pass\ng = lambda x: x"))
    assert problems(nb) == [
        "kernel 'conda-env-kit', not 'python3'",
        "code cell 2 holds outputs (strip them before committing)",
        "code cell 3 defines FunctionDef (move it into kitlib)",
        "code cell 3 defines ClassDef (move it into kitlib)",
        "code cell 3 defines Lambda (move it into kitlib)",
    ]
    nb = _good_notebook()
    nb.cells[1].metadata["tags"] = []
    assert problems(nb) == ["0 cells tagged 'parameters' (need exactly one)"]
    nb = _good_notebook()
    nb.cells[1].source = "config = dict(epochs=3)\nprint(config)"
    assert problems(nb) == ["the parameters cell must hold exactly one assignment: config = <Params>(...)"]


def test_every_params_class_is_a_frozen_documented_dataclass():
    for name in PARAMS:
        cls = getattr(notebook, name)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        instance = cls(run="r", train=TrainConfig()) if name == "TrainParams" else cls()
        assert type(instance.smoke()) is cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            instance.x = 1


# --------------------------------------------------------------------------------------------- setup()

@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No platform, smoke or data variables; torch threads left as the suite pinned them."""
    for var in ("KIT_SMOKE", "KIT_DATA", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setenv("KIT_THREADS", str(torch.get_num_threads()))
    monkeypatch.chdir(tmp_path)  # setup() changes the cwd; monkeypatch restores it
    return monkeypatch


def _repo(root: Path) -> Path:
    """A checkout's shape: pyproject.toml, kitlib/, notebooks/ (the cwd of a notebook)."""
    (root / "kitlib").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'kitlib'\n")
    return root


def test_setup_local_finds_the_only_competition_in_data(clean_env, tmp_path):
    root = _repo(tmp_path / "kit")
    competition = csv_competition(root / "data" / "my-challenge")
    (root / "data" / "README.md").write_text("unpack here")
    clean_env.chdir(root / "notebooks")
    env = notebook.setup()
    assert env == Env(where="local", data=competition, runs=root / "runs", images=root / "images", smoke=False,
                      root=root)
    assert Path.cwd() == root and (root / "runs").is_dir() and (root / "images").is_dir()


def test_setup_names_every_candidate_or_says_where_to_put_one(clean_env, tmp_path):
    root = _repo(tmp_path / "kit")
    clean_env.chdir(root)
    with pytest.raises(KitError, match=r"no competition found in .*/kit/data\. Unpack it there"):
        notebook.setup()
    csv_competition(root / "data" / "a")
    imagefolder_competition(root / "data" / "b")
    with pytest.raises(KitError, match=r"2 competitions found \(.*/data/a, .*/data/b\): choose one with KIT_DATA"):
        notebook.setup()
    clean_env.setenv("KIT_DATA", str(root / "data" / "b"))
    assert notebook.setup().data == root / "data" / "b"
    assert notebook.setup(data=root / "data" / "a").data == root / "data" / "a"


def test_setup_on_kaggle_finds_nested_competition_and_links_offline_weights(clean_env, tmp_path):
    inputs, working = tmp_path / "input", tmp_path / "working"
    competition = csv_competition(inputs / "competitions" / "an2dl-challenge")
    weights = inputs / "my-weights" / "mobilenet_v3_small-047dcff4.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    working.mkdir()
    clean_env.setattr(notebook, "KAGGLE_INPUT", inputs)
    clean_env.setattr(notebook, "KAGGLE_WORKING", working)
    clean_env.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    clean_env.setenv("TORCH_HOME", str(tmp_path / "torch"))
    env = notebook.setup()
    assert (env.where, env.data, env.runs, env.images) == ("kaggle", competition, working / "runs", working / "images")
    assert Path.cwd() == working
    link = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert link.is_symlink() and link.read_bytes() == b"weights"


def test_setup_on_colab_keeps_runs_on_drive(clean_env, tmp_path):
    drive = tmp_path / "drive" / "MyDrive"
    competition = csv_competition(drive / "kit-data" / "challenge")
    clean_env.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    clean_env.setattr(notebook, "_mount_drive", lambda: drive)
    env = notebook.setup()
    assert (env.where, env.data, env.runs, env.images) == (
        "colab", competition, drive / "kit-runs", drive / "kit-runs" / "images")


def test_setup_smoke_uses_the_demo_and_a_fresh_folder_each_time(clean_env, tmp_path):
    import kitlib.data.demo

    demo = csv_competition(tmp_path / "demo" / "competition")
    clean_env.setattr(kitlib.data.demo, "demo_root", lambda: demo)
    clean_env.setenv("KIT_SMOKE", "1")
    clean_env.setenv("KIT_DATA", str(tmp_path / "ignored"))
    first, second = notebook.setup(), notebook.setup()
    assert first.smoke and first.data == demo and second.data == demo
    assert first.runs != second.runs and first.runs.parent.name.startswith("kit-smoke-")
    assert first.images == first.runs.parent / "images"


# --------------------------------------------------------------------------------------------- parameters

def _env(tmp_path: Path, smoke: bool) -> Env:
    return Env(where="local", data=tmp_path / "data", runs=tmp_path / "runs", images=tmp_path / "images",
               smoke=smoke, root=tmp_path)


def test_describe_shows_nested_configs_by_what_differs():
    assert describe(TrainParams(run="resnet", train=TrainConfig(epochs=3, augment="strong"))) == (
        "TrainParams\n"
        "  run           = 'resnet'\n"
        "  train         = TrainConfig(epochs=3, augment='strong')\n"
        "  decisions     = None\n"
        "  lr_find_steps = 100\n"
        "  resume        = True")


def test_smoke_versions_are_tiny():
    review = ReviewParams().smoke()
    assert (review.folds, review.top_k) == (2, 12)
    assert review.train == TrainConfig(model="resnet_small", epochs=1, batch_size=64, augment="none",
                                       model_options={"widths": [16, 32, 64], "stem_width": 16})


def test_configure_smoke_makes_pretrained_weights_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "unused"))  # restored after the test
    monkeypatch.setenv("KIT_OFFLINE", "1")  # a download attempt would fail loudly
    params = TrainParams(run="pretrained", train=TrainConfig(model="efficientnet_b0", pretrained=True,
                                                             time_budget=1800, batch_size=32))
    config = configure(params, _env(tmp_path, smoke=True))
    assert config.train == TrainConfig(model="mobilenet_v3_small", pretrained=True, image_size=64, epochs=1,
                                       batch_size=64, images_dir=str(tmp_path / "images"))
    assert config.lr_find_steps == 10
    saved = models.cached_weights_path("mobilenet_v3_small")
    assert saved.parent.parent.parent.name.startswith("kit-torch-home-")
    model = models.create("mobilenet_v3_small", 10, pretrained=True)
    state = torch.load(saved, weights_only=True)
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])
    assert "TrainParams\n  run           = 'pretrained'\n" in capsys.readouterr().out


def test_configure_resolves_decisions_under_runs(tmp_path):
    env = _env(tmp_path, smoke=False)
    params = TrainParams(run="r", train=TrainConfig(epochs=2), decisions="audit/decisions.csv")
    with pytest.raises(KitError, match=r"decisions 'audit/decisions.csv': .*runs/audit/decisions.csv not found"):
        configure(params, env)
    (tmp_path / "runs" / "audit").mkdir(parents=True)
    (tmp_path / "runs" / "audit" / "decisions.csv").write_text("sample_index,action,new_label\n")
    config = configure(params, env)
    assert config.decisions == str(tmp_path / "runs" / "audit" / "decisions.csv")
    assert config.train == TrainConfig(epochs=2, images_dir=str(tmp_path / "images"))


def test_training_data_applies_the_decisions(tmp_path):
    from kitlib.data import load_competition

    competition = load_competition(csv_competition(tmp_path / "comp"))
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("sample_index,action,new_label\nimg_0001.png,drop,\nimg_0002.png,relabel,HER2(+)\n")
    params = TrainParams(run="r", train=TrainConfig(val_fraction=0, progress=False), decisions=str(decisions))
    data = notebook.training_data(competition, params)
    assert len(data.ids) == 7 and "img_0001.png" not in data.ids
    assert data.classes[int(data.targets[data.ids.index("img_0002.png")])] == "HER2(+)"


def test_trained_runs_names_the_notebook_to_run_first(tmp_path):
    env = _env(tmp_path, smoke=False)
    (env.runs / "resnet").mkdir(parents=True)
    (env.runs / "resnet" / "best.pt").write_bytes(b"")
    assert notebook.trained_runs(env, ["resnet"]) == [env.runs / "resnet"]
    with pytest.raises(KitError, match=r"pretrained: no best.pt. Train it first .* \(trained: resnet\)"):
        notebook.trained_runs(env, ["resnet", "pretrained"])


def test_figure_index_lists_every_png_as_markdown(tmp_path, capsys):
    (tmp_path / "resnet_report").mkdir()
    for name in ("eda_samples.png", "resnet_report/confusion.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    expected = "![eda_samples](images/eda_samples.png)\n![confusion](images/resnet_report/confusion.png)"
    assert notebook.figure_index(tmp_path) == expected
    assert capsys.readouterr().out == expected + "\n"


def test_notebook_json_is_stripped_and_valid_nbformat_4():
    for name in EXPECTED:
        raw = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
        assert (raw["nbformat"], raw["metadata"]["kernelspec"]["name"]) == (4, "python3")
