"""What the numbered notebooks share: one set-up call for local, Colab and Kaggle, and their parameters.

    env = setup()                                   # where we run, the competition, runs/ and images/
    config = configure(TrainParams(run="resnet", train=TrainConfig(time_budget=1200)), env)

`setup` detects the platform and prints what it chose. Locally the competition is `data/<only
folder>` and runs and figures go to `runs/` and `images/` at the repo root. On Colab, Drive is
mounted and runs go to MyDrive/kit-runs, so a disconnect loses no checkpoint. On Kaggle the
competition is found under /kaggle/input, outputs go to /kaggle/working, and pretrained weight
files attached as a dataset are linked where torchvision looks for them (no internet needed).
`KIT_DATA` (or `setup(data=...)`) names the competition anywhere; `KIT_SMOKE=1` runs every
notebook in seconds on the demo competition, writing into a fresh temporary folder.

Each notebook has one cell tagged `parameters` holding one of the frozen dataclasses below;
`configure` swaps in its `smoke()` version under KIT_SMOKE, points figures at env.images and
prints it. Notebooks call these and the rest of kitlib; they define no functions themselves.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from kitlib import rundir
from kitlib.audit.config import DEFAULT_FOLDS
from kitlib.data.layouts import detect_layout
from kitlib.errors import KitError
from kitlib.train.config import TrainConfig

KAGGLE_INPUT, KAGGLE_WORKING = Path("/kaggle/input"), Path("/kaggle/working")
COLAB_DRIVE = Path("/content/drive")
DRIVE_RUNS = "kit-runs"  # folder under MyDrive for runs (and images/ inside it)
DRIVE_DATA = "kit-data"  # folder under MyDrive searched for competitions on Colab
SEARCH_DEPTH = 3  # folder levels searched for a competition (/kaggle/input/competitions/<slug> is 2)
# A smoke run: one epoch of a narrow kit net (~3 s on one CPU core for the demo's 1,200 images)
SMOKE_TRAIN = dict(epochs=1, time_budget=None, batch_size=64, model="resnet_small",
                   model_options={"widths": [16, 32, 64], "stem_width": 16})
# ... or of the smallest torchvision net at 64 px, from weights made offline (`fake_offline_weights`)
SMOKE_PRETRAINED = dict(epochs=1, time_budget=None, batch_size=64, model="mobilenet_v3_small",
                        image_size=64, model_options={})


# --------------------------------------------------------------------------------------------- set-up

@dataclass(frozen=True)
class Env:
    """Where a notebook runs and where it reads and writes."""

    where: str
    """'local', 'colab' or 'kaggle'."""
    data: Path
    """The competition folder."""
    runs: Path
    """Run folders go here (one per training run)."""
    images: Path
    """Figures for the report go here."""
    smoke: bool
    """KIT_SMOKE=1: tiny settings on the demo competition, outputs in a temporary folder (gone at exit)."""
    root: Path
    """The working folder: the repo root locally (the notebook's cwd is set to it)."""
    id_column: str | None = None
    """The labels CSV's id column when the kit cannot find it (the CLI's --id-column); None: found by name or value."""
    label_column: str | None = None
    """The labels CSV's label column when the kit cannot find it (the CLI's --label-column)."""

    @property
    def columns(self) -> dict:
        """load_competition's column arguments: load_competition(env.data, **env.columns)."""
        return {"id_column": self.id_column, "label_column": self.label_column}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def detect() -> str:
    """'colab', 'kaggle' or 'local'."""
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "KAGGLE_URL_BASE" in os.environ:
        return "kaggle"
    return "local"


def repo_root(start: Path | None = None) -> Path | None:
    """The kit's checkout holding `start` (default: the cwd): the first parent with pyproject.toml and kitlib/."""
    start = (start or Path.cwd()).resolve()
    return next((p for p in (start, *start.parents) if (p / "pyproject.toml").is_file() and (p / "kitlib").is_dir()),
                None)


def is_competition(folder: Path) -> bool:
    """Whether `folder` looks like one of the layouts kitlib.data reads (checked cheaply, no file is read)."""
    return detect_layout(folder) is not None


def find_competitions(base: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Competition folders at most `depth` levels under `base` (a competition's own subfolders are not searched)."""
    if depth < 1 or not base.is_dir():
        return []
    found = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [folder] if is_competition(folder) else find_competitions(folder, depth - 1)
    return found


def _resolve_data(data: str | Path | None, where: str, smoke: bool, root: Path, drive: Path | None) -> Path:
    """The competition folder: `data`, else the demo under KIT_SMOKE, else KIT_DATA, else the only one found."""
    from kitlib.data.demo import demo_root, resolve

    given = data
    if given is None and not smoke:
        given = os.environ.get("KIT_DATA") or None
    if given is not None:
        path = resolve(given)
        if not path.is_dir():
            raise KitError(f"data {str(given)!r}: no such folder. Pass the competition folder (or 'demo').")
        return path.resolve()
    if smoke:
        return demo_root()
    bases = {"kaggle": [KAGGLE_INPUT], "colab": [root / "data"] + ([drive / DRIVE_DATA] if drive else [])}
    bases = bases.get(where, [root / "data"])
    found = [c for base in bases for c in find_competitions(base)]
    if len(found) == 1:
        return found[0]
    where_to = ", ".join(str(b) for b in bases)
    if not found:
        raise KitError(f"no competition found in {where_to}. Unpack it there (e.g. data/my-challenge/), or set "
                       "KIT_DATA=/path/to/it, or call setup(data='/path/to/it'); setup(data='demo') tries the demo.")
    raise KitError(f"{len(found)} competitions found ({', '.join(str(c) for c in found)}): choose one with "
                   "KIT_DATA=... or setup(data=...).")


def _mount_drive() -> Path:
    """Mount Google Drive (asks for permission once); return MyDrive."""
    from google.colab import drive

    drive.mount(str(COLAB_DRIVE))
    return COLAB_DRIVE / "MyDrive"


def link_offline_weights(base: Path | None = None) -> list[Path]:
    """Link torchvision weight files found under `base` (an attached Kaggle dataset) into TORCH_HOME's cache.

    A file counts when its name is the one torchvision downloads (e.g. mobilenet_v3_small-047dcff4.pth),
    so `pretrained=True` then works without internet. `base` defaults to /kaggle/input. Returns the links made.
    """
    from kitlib import models

    base = base or KAGGLE_INPUT
    wanted = {}
    for name in models.TORCHVISION:
        path = models.cached_weights_path(name)
        wanted[path.name] = path
    linked = []
    for depth in range(1, SEARCH_DEPTH + 2):
        for found in glob.glob(str(base / "/".join(["*"] * depth))):
            target = wanted.get(os.path.basename(found))
            if target is not None and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(found)
                linked.append(target)
    return linked


def _temporary(prefix: str) -> Path:
    """A new temporary folder, deleted when this process (the notebook's kernel) exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def fake_offline_weights(name: str) -> Path:
    """Random weights for torchvision's `name`, saved where its pretrained file would be, in a new temporary TORCH_HOME.

    For smoke tests only: `pretrained=True` then loads them with no download. Returns the file.
    """
    import torch
    from torchvision import models as tvm

    from kitlib import models

    os.environ["TORCH_HOME"] = str(_temporary("kit-torch-home-"))
    path = models.cached_weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tvm.get_model(name, weights=None).state_dict(), path)
    print(f"smoke: random weights stand in for {name}'s pretrained ones ({path})")
    return path


def setup(*, data: str | Path | None = None, drive: bool = True, id_column: str | None = None,
          label_column: str | None = None) -> Env:
    """Detect local / Colab / Kaggle, find the competition, choose where runs and figures go; print the choices.

    `data`: the competition folder ('demo': the demo competition); default KIT_DATA, else the only
    competition in data/ (Kaggle: /kaggle/input; Colab: also MyDrive/kit-data). `drive`: on Colab,
    mount Google Drive and keep runs in MyDrive/kit-runs (False: in the session's disk, lost on disconnect).
    `id_column`/`label_column` (default KIT_ID_COLUMN / KIT_LABEL_COLUMN): the labels CSV's columns
    when their names are the competition's own (image_name, target); kept in env.columns.
    """
    from kitlib.runtime import pick_device, set_threads

    set_threads()  # KIT_THREADS, else every core: pinned once for the whole kernel
    where, smoke = detect(), _flag("KIT_SMOKE")
    root = {"kaggle": KAGGLE_WORKING}.get(where) or repo_root() or Path.cwd()
    mounted = _mount_drive() if where == "colab" and drive and not smoke else None
    found = _resolve_data(data, where, smoke, root, mounted)
    if smoke:  # a fresh folder per notebook, removed when the kernel exits: notebooks never share state
        out = _temporary("kit-smoke-")
        runs, images = out / "runs", out / "images"
    elif mounted is not None:
        runs, images = mounted / DRIVE_RUNS, mounted / DRIVE_RUNS / "images"
    else:
        runs, images = root / "runs", root / "images"
    for folder in (runs, images):
        folder.mkdir(parents=True, exist_ok=True)
    os.chdir(root)  # relative paths (TrainConfig's images_dir, data/...) mean the same as in the README
    if where == "kaggle":
        linked = link_offline_weights()
        print("offline weights linked: " + (", ".join(p.name for p in linked) or "none found in /kaggle/input"))
    device = pick_device()
    columns = {"id_column": id_column, "label_column": label_column}
    if not smoke:  # as KIT_DATA: smoke runs the demo, whose columns are the kit's own
        columns = {key: value or os.environ.get(f"KIT_{key.upper()}") or None for key, value in columns.items()}
    env = Env(where=where, data=found, runs=runs, images=images, smoke=smoke, root=root, **columns)
    print(f"running {where}{' (KIT_SMOKE: tiny settings, demo competition)' if smoke else ''} in {root}\n"
          f"  data:   {found}\n  runs:   {runs}\n  images: {images}\n  device: {device}"
          + ("  <- no GPU: on Colab pick Runtime > Change runtime type > T4 GPU; on Kaggle, Settings > "
             "Accelerator" if device.type == "cpu" and where != "local" else "")
          + "".join(f"\n  {key.replace('_', ' ')}: {value}" for key, value in columns.items() if value))
    return env


# --------------------------------------------------------------------------------------------- parameters

def _smoke_train(train: TrainConfig) -> TrainConfig:
    """The seconds-long version of a training config: 1 epoch, a tiny kit net (or the smallest pretrained one)."""
    from kitlib.models import resnet

    pretrained = train.pretrained or train.weights is not None
    if train.model in resnet.PRESETS or (train.model == "auto" and not pretrained):
        return replace(train, **SMOKE_TRAIN)
    return replace(train, **SMOKE_PRETRAINED, pretrained=pretrained, weights=None)


@dataclass(frozen=True)
class EdaParams:
    """00_eda: exploratory figures of the competition."""

    size: int | None = None
    """Px the figures decode images to (None: their most common size, at most 128)."""
    masks: str = "auto"
    """With masks: 'auto', 'tiles' or 'crop' also draw the tiles of a few slides per class (when auto picks
    tiles); 'ignore': no mask figures (kitlib.data.masks)."""

    def __post_init__(self):
        from kitlib.data.masks import MASK_MODES

        if self.masks not in MASK_MODES:
            raise KitError(f"masks {self.masks!r}: choose one of {', '.join(MASK_MODES)}.")

    def smoke(self) -> EdaParams:
        """The demo is small: nothing to shrink."""
        return self


@dataclass(frozen=True)
class ReviewParams:
    """01_outliers: the audit (K fold models), its suspects and the worst losses, reviewed by hand."""

    run: str = "audit"
    """Folder under env.runs for the audit (suspects.csv, scores.csv, folds/fold0 ...) and the review's
    decisions.csv."""
    folds: int = DEFAULT_FOLDS
    """K: every sample is predicted by the one model of the K that did not train on it (the CLI's default too)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(time_budget=180, augment="none"))
    """The recipe of each fold's model: 3 minutes, no augmentation (it only ranks samples, and every preset
    flips, which breaks digits and text: on the demo 'light' reached 0.40 accuracy where 'none' reached 0.87)."""
    top_k: int = 48
    """How many suspects the grid figure shows, and how many of the worst losses join the review (which
    pages through every suspect)."""

    def smoke(self) -> ReviewParams:
        """2 folds of a tiny net, 12 images per grid."""
        return replace(self, folds=2, train=_smoke_train(self.train), top_k=12)


@dataclass(frozen=True)
class TrainParams:
    """02_train_resnet and 03_train_pretrained: one training run."""

    run: str
    """The run folder's name under env.runs (also names its figures in images/)."""
    train: TrainConfig
    """The recipe (every field documented in kitlib.train.TrainConfig)."""
    decisions: str | None = None
    """The review's decisions.csv from 01_outliers (relative: under env.runs), applied before training; None: none."""
    lr_find_steps: int = 100
    """Batches of the learning-rate range test run before training (at least 3)."""
    resume: bool = True
    """Continue the run from its last.pt when there is one (after a Colab disconnect: re-run all cells)."""

    def __post_init__(self):
        if self.lr_find_steps < 3:
            raise KitError(f"lr_find_steps={self.lr_find_steps}: the range test needs at least 3 batches.")

    def smoke(self) -> TrainParams:
        """One epoch of a tiny net, a 10-batch range test."""
        return replace(self, train=_smoke_train(self.train), lr_find_steps=10)


@dataclass(frozen=True)
class SubmitParams:
    """04_submission: the ensemble's submission and the evaluation reports."""

    runs: tuple[str, ...] = ("resnet", "pretrained")
    """Run folders under env.runs to ensemble (their best.pt; a folder of folds counts as one run)."""
    tta: str = "hflip"
    """Test-time augmentation: none, hflip, flips, and each with '+shifts' (see kitlib.predict.TTA_MODES)."""
    scales: tuple[float, ...] = (1.0,)
    """TTA input-size factors, e.g. (0.875, 1.0, 1.125)."""
    out: str = "submission.csv"
    """The submission's file name under env.runs (its .json record goes beside it)."""
    aggregate: str | None = None
    """How a tile model's tile predictions make an image's: mean, coverage, logit; None: as it was trained.
    (Each run uses masks the way it was trained: its checkpoint records it.)"""

    def __post_init__(self):
        from kitlib.data.tiles import AGGREGATES
        from kitlib.models.infer import tta_views

        tta_views(self.tta, self.scales)  # KitError naming the valid modes, or the valid range of scales
        if self.aggregate is not None and self.aggregate not in AGGREGATES:
            raise KitError(f"aggregate {self.aggregate!r}: choose one of {', '.join(AGGREGATES)}, or None.")

    def smoke(self) -> SubmitParams:
        """Unchanged: missing runs are trained as tiny stand-ins (see trained_runs)."""
        return self


@dataclass(frozen=True)
class LogbookParams:
    """05_logbook: every run compared, and the report's figures."""

    runs: tuple[str, ...] = ("resnet", "pretrained")
    """The runs the report discusses (their curves are shown); the table holds every run under env.runs."""

    def smoke(self) -> LogbookParams:
        """Unchanged: missing runs are trained as tiny stand-ins (see trained_runs)."""
        return self


def _brief(value) -> str:
    """A dataclass as Name(field=value, ...) with only the fields that differ from their defaults."""
    if not hasattr(value, "__dataclass_fields__"):
        return repr(value)
    changed = []
    for f in fields(value):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if getattr(value, f.name) != default:
            changed.append(f"{f.name}={_brief(getattr(value, f.name))}")
    return f"{type(value).__name__}({', '.join(changed)})"


def describe(config) -> str:
    """A notebook's parameters one field a line (nested configs: only what differs from the defaults)."""
    lines = [type(config).__name__]
    lines += [f"  {f.name:<14}= {_brief(getattr(config, f.name))}" for f in fields(config)]
    return "\n".join(lines)


def configure(config, env: Env):
    """The parameters to run with: their smoke() version under KIT_SMOKE, figures into env.images; printed."""
    if env.smoke:
        config = config.smoke()
    train = getattr(config, "train", None)
    if train is not None:
        config = replace(config, train=replace(train, images_dir=str(env.images)))
        if env.smoke and config.train.pretrained:  # smoke's pretrained model is a torchvision one
            fake_offline_weights(config.train.model)
    decisions = getattr(config, "decisions", None)
    if decisions is not None:
        path = env.runs / decisions
        if not path.is_file():
            raise KitError(f"decisions {decisions!r}: {path} not found. Save the review in 01_outliers first, "
                           "or set decisions=None.")
        config = replace(config, decisions=str(path))
    print(describe(config))
    return config


# --------------------------------------------------------------------------------------------- helpers

def training_data(competition, params: TrainParams):
    """The TrainingData `fit` gets for these parameters: decisions applied, split as the recipe says."""
    from kitlib.data.dataset import prepare_for

    return prepare_for(competition, params.train, decisions=params.decisions)


def trained_runs(env: Env, names) -> list[Path]:
    """The run folders `names` under env.runs, each with a best.pt (or fold subfolders with one).

    Under KIT_SMOKE a missing run is trained now as a tiny stand-in, so each notebook runs alone;
    otherwise a missing run is a KitError naming the notebook that trains it.
    """
    from kitlib.train.loop import train

    runs = []
    for name in names:
        run = env.runs / name
        if not rundir.has_model(run):
            if not env.smoke:
                have = sorted(p.parent.name for p in env.runs.glob(f"*/{rundir.BEST}"))
                raise KitError(f"{run}: no best.pt. Train it first (02_train_resnet / 03_train_pretrained with "
                               f"run={name!r}) or list other runs (trained: {', '.join(have) or 'none'}).")
            print(f"smoke: training a tiny stand-in for run {name!r}")
            train(env.data, TrainConfig(**SMOKE_TRAIN, images_dir=str(env.images), progress=False), run)
        runs.append(run)
    return runs


def show(*paths) -> None:
    """Display PNG files in the notebook (paths, or lists of paths)."""
    from IPython.display import Image, display

    for path in paths:
        for item in (path if isinstance(path, (list, tuple)) else [path]):
            display(Image(filename=str(item)))


def figure_index(images: Path) -> str:
    """Markdown lines that embed every PNG under `images` (paste into the report); printed and returned."""
    images = Path(images)
    lines = [f"![{p.stem}](images/{p.relative_to(images).as_posix()})" for p in sorted(images.rglob("*.png"))]
    text = "\n".join(lines) or f"(no figures in {images} yet)"
    print(text)
    return text
