"""Competition -> what `fit` trains on: decoded pixels once in memory, targets, the split as index lists.

    data = prepare_for(load_competition("data/my-challenge"), TrainConfig())   # as a training config says
    data = prepare(competition, size=64, val_fraction=0.2)                       # or with explicit values

The whole labelled set is decoded once (kitlib.data.cache) and held as one uint8 tensor; training
and validation are index lists into it, so no subset is ever copied. Review decisions (drop, keep,
relabel) and audit suspects are applied here, after the split (so they move no other sample), with
every id checked. Every front-end (the CLI, `all`, the notebooks, the audit) prepares data here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kitlib import models
from kitlib.data.cache import common_size, decode_table
from kitlib.data.columns import clean_cells
from kitlib.data.layouts import Competition, load_competition
from kitlib.data.masks import choose_masks
from kitlib.data.splits import holdout, stratified_folds
from kitlib.data.tiles import TileSpec, Tiles, cut_tiles
from kitlib.errors import KitError
from kitlib.files import read_csv_lines
from kitlib.runtime import pick_device

ACTIONS = ("drop", "keep", "relabel")
AUTO_DECODE_CAP = {"cpu": 64, "mps": 128, "cuda": 128}
"""Longest side (px) of the default decode size per device type. On a 2-core CPU the kit's ResNet
trains at ~280 img/s at 64 px, but a 256 px mobilenet_v3_small at ~60 img/s: a short budget on
large images would otherwise see a few epochs of a net that learns slowly from scratch."""


@dataclass(frozen=True)
class TrainingData:
    """Decoded pixels, targets and the train / validation split of one competition."""

    classes: list[str]
    """Class names; a target is a position in this list."""
    ids: list[str]
    """sample_index of every row of `images`."""
    images: torch.Tensor
    """(N, 3, h, w) uint8, every labelled sample that survived the decisions."""
    masks: torch.Tensor | None
    """(N, 1, h, w) uint8 or None."""
    targets: torch.Tensor
    """(N,) int64 class indices."""
    train_index: torch.Tensor
    """(N_train,) int64 rows of `images` to train on."""
    val_index: torch.Tensor
    """(N_val,) int64 rows to validate on (empty when training on everything)."""
    fit: str
    """How images were brought to their size: 'squash', 'pad' or 'crop'."""
    tiles: Tiles | None = None
    """The tiles cut at native resolution inside the masks (masks 'tiles' or 'crop'): what the model
    trains on and predicts from, image by image; None: the model sees the whole `images`."""
    mask_mode: str = "ignore"
    """How masks are used: ignore, tiles, crop, or channel (the mask as a 4th input channel)."""
    mask_reason: str = ""
    """Why (masks='auto' says what it saw)."""
    stretched_masks: dict[str, str] = field(default_factory=dict)
    """{sample_index: "208x208 onto 250x180"}: masks of another size than their image, stretched onto it
    (kitlib.data.cache); the audit lists them in checks.csv (mask_size)."""

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the decoded images."""
        return tuple(self.images.shape[-2:])

    def class_counts(self) -> np.ndarray:
        """(K,) training examples per class: samples, or the tiles of the training samples."""
        rows = self.train_index
        if self.tiles is not None:
            rows = self.tiles.tile_sample[self.tiles.tiles_of(rows)]
        return np.bincount(self.targets[rows].numpy(), minlength=len(self.classes))


def apply_decisions(samples: pd.DataFrame, path: str | Path, classes: list[str]) -> pd.DataFrame:
    """Samples after a review's decisions.csv (drop / keep / relabel) or an audit's suspects.csv (drop all).

    Cells are read cleaned (kitlib.data.columns.clean). A class that would lose its last training
    sample is never dropped silently: a suspects.csv keeps that class's samples (rarity is no
    defect), a decisions.csv (a person's choice) drops them with a warning.
    """
    path = Path(path)
    table, lines = read_csv_lines(path)
    table = clean_cells(table, path, lines)
    known = set(samples["sample_index"])
    suspects = "issue" in table.columns and "action" not in table.columns
    if suspects:  # suspects.csv: drop every flagged row
        if "sample_index" not in table.columns:
            raise KitError(f"{path}: needs a sample_index column; found {', '.join(table.columns)}.")
        table = pd.DataFrame({"sample_index": table["sample_index"], "action": "drop", "new_label": ""})
    missing = [c for c in ("sample_index", "action") if c not in table.columns]
    if missing:
        raise KitError(f"{path}: needs columns sample_index,action,new_label; found {', '.join(table.columns)}.")
    if "new_label" not in table.columns:
        table = table.assign(new_label="")
    for line, sample, action, new_label in zip(lines, table["sample_index"], table["action"], table["new_label"]):
        if sample not in known:
            raise KitError(f"{path} line {line}: sample {sample!r} is not in the training set.")
        if action not in ACTIONS:
            raise KitError(f"{path} line {line}: action {action!r}: choose one of {', '.join(ACTIONS)}.")
        if action == "relabel" and new_label not in classes:
            raise KitError(f"{path} line {line}: new_label {new_label!r} is not a "
                           "class of this competition (labels must match exactly).")
    actions = dict(zip(table["sample_index"], table["action"]))  # a later row overrides an earlier one
    new_labels = dict(zip(table["sample_index"], table["new_label"]))
    action = samples["sample_index"].map(lambda sample: actions.get(sample, "keep"))
    samples = samples.copy()
    relabel = action == "relabel"
    samples.loc[relabel, "label"] = samples.loc[relabel, "sample_index"].map(new_labels)
    emptied = sorted(set(samples["label"]) - set(samples.loc[action != "drop", "label"]))
    if emptied and suspects:
        spared = (action == "drop") & samples["label"].isin(emptied)
        action = action.mask(spared, "keep")
        warnings.warn(f"{path.name}: kept the {int(spared.sum())} flagged sample(s) of class(es) "
                      f"{', '.join(map(repr, emptied[:5]))}: dropping them would leave the class no training sample "
                      "(a rare class is no defect). Drop them in a decisions.csv if they really are wrong.",
                      stacklevel=2)
    elif emptied:
        warnings.warn(f"{path.name} leaves class(es) {', '.join(map(repr, emptied[:5]))} without any training sample: "
                      "the model cannot learn them and will hardly ever predict them. Mark a sample 'keep' to "
                      "keep a class.", stacklevel=2)
    kept = samples[action != "drop"].reset_index(drop=True)
    print(f"{path.name}: dropped {int((action == 'drop').sum())}, relabelled {int(relabel.sum())} "
          f"of {len(samples)} samples")
    return kept


def with_decisions(data: TrainingData, competition: Competition, decisions: str | Path) -> TrainingData:
    """`data` after a decisions.csv or suspects.csv (apply_decisions), without decoding again: the kept rows of
    its pixels, masks and tiles, relabelled targets, each kept sample on its side of the split (as `prepare`
    with `decisions` would give). `data` must be `competition`'s samples as prepared without decisions
    (ValueError otherwise)."""
    samples = competition.samples
    if data.ids != list(samples["sample_index"]):
        raise ValueError("with_decisions needs the TrainingData of the competition's samples, prepared without "
                         "decisions")
    kept = apply_decisions(samples, decisions, competition.classes)
    keep = samples["sample_index"].isin(kept["sample_index"]).to_numpy()
    rows = torch.from_numpy(np.flatnonzero(keep))
    is_val = np.zeros(len(keep), dtype=bool)
    is_val[data.val_index.numpy()] = True
    return replace(data, ids=list(kept["sample_index"]), images=data.images[rows],
                   masks=None if data.masks is None else data.masks[rows],
                   targets=torch.from_numpy(_targets(kept, competition.classes)), **_index_lists(is_val[keep]),
                   tiles=None if data.tiles is None else data.tiles.subset(rows))


def _targets(samples: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """(N,) int64: each sample's label as a position in `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    return samples["label"].map(index).to_numpy(dtype=np.int64, copy=True)


def _index_lists(is_val: np.ndarray) -> dict[str, torch.Tensor]:
    """TrainingData's train_index and val_index from a boolean validation mask."""
    return {"train_index": torch.from_numpy(np.flatnonzero(~is_val)),
            "val_index": torch.from_numpy(np.flatnonzero(is_val))}


def prepare(competition: Competition, *, size: int | tuple[int, int] | None = None, fit: str = "squash",
            val_fraction: float = 0.2, folds: int | None = None, fold: int = 0, seed: int = 0,
            group_column: str | None = None, decisions: str | Path | None = None,
            tiles: TileSpec | None = None, mask_mode: str = "ignore", mask_reason: str = "",
            progress: bool = True) -> TrainingData:
    """Decode the labelled samples and split them (the layout's own validation split, else stratified).

    `folds`/`fold` pick fold `fold` of stratified K folds as validation; `val_fraction=0` trains on
    everything (no validation); `group_column` keeps a group's samples on one side. `tiles`: also cut
    the samples' tiles (kitlib.data.tiles); the split is per sample, so one image's tiles are never
    on both sides.
    """
    samples = competition.samples
    if group_column is not None and group_column not in samples.columns:
        raise KitError(f"group_column {group_column!r} is not a column of the labels; found "
                       f"{', '.join(samples.columns)}.")
    targets = _targets(samples, competition.classes)
    groups = samples[group_column].to_numpy() if group_column else None
    # split before the decisions: dropping suspects removes them from their side of the split but
    # moves no other sample, so runs with and without decisions validate on the same samples
    is_val = _split(samples, targets, groups, val_fraction, folds, fold, seed)
    if decisions is not None:
        kept = apply_decisions(samples, decisions, competition.classes)
        is_val = is_val[samples["sample_index"].isin(kept["sample_index"]).to_numpy()]
        samples = kept
        targets = _targets(samples, competition.classes)
    # slides: the tiles first, whose reading at native resolution also decodes each image at `size` on the way
    small = None if tiles is None or size is None else ((size, size) if isinstance(size, int) else tuple(size), fit)
    cut, ready = (None, {}) if tiles is None else cut_tiles(samples["image"], samples["mask"], tiles, thumbnail=small,
                                                           progress=progress)
    decoded = decode_table(samples, size=size, fit=fit, progress=progress, ready=ready)
    return TrainingData(
        classes=list(competition.classes), ids=list(samples["sample_index"]),
        images=decoded.images, masks=decoded.masks, targets=torch.from_numpy(targets), **_index_lists(is_val),
        fit=fit, tiles=cut, mask_mode=mask_mode, mask_reason=mask_reason,
        stretched_masks={samples["sample_index"].iloc[r]: how for r, how in decoded.stretched.items()})


def _split(samples, targets, groups, val_fraction, folds, fold, seed) -> np.ndarray:
    """Boolean validation mask."""
    if folds:
        if not 0 <= fold < folds:
            raise KitError(f"fold={fold}: choose a fold from 0 to {folds - 1}.")
        return stratified_folds(targets, folds, seed=seed, groups=groups) == fold
    given = (samples["split"] == "val").to_numpy()
    if given.any():  # the layout ships a validation split (Tiny ImageNet's val/): use it as is
        return given
    if val_fraction == 0:
        return np.zeros(len(samples), dtype=bool)
    return holdout(targets, val_fraction, seed=seed, groups=groups)


# --------------------------------------------------------------------------------------------- as a config says

def training_size(config, common: tuple[int, int], device_type: str) -> int:
    """The side (px) the model sees: `config.image_size`, else the pretrained weights' size, else AUTO_DECODE_CAP."""
    if config.image_size:
        return config.image_size
    if config.pretrained or config.weights is not None:
        model = config.model if config.model != "auto" else models.default_name(max(common), device_type, True)
        return models.input_size(model, True)
    return AUTO_DECODE_CAP.get(device_type, 64)


def decode_size(config, common: tuple[int, int], device_type: str) -> tuple[int, int]:
    """(H, W) to decode images to: `config.decode_size`, else their most `common` (H, W) shrunk to the training size.

    `config` is a kitlib.train.TrainConfig; see training_size. The aspect ratio is kept.
    """
    if config.decode_size:
        return config.decode_size, config.decode_size
    scale = min(1.0, training_size(config, common, device_type) / max(common))
    return max(1, round(common[0] * scale)), max(1, round(common[1] * scale))


def tile_spec(config, mode: str, size: int) -> TileSpec:
    """The TileSpec of a TrainConfig for mask mode 'tiles' or 'crop' and a tile side of `size` px."""
    return TileSpec(mode=mode, size=size, scale=config.tile_scale, coverage=config.tile_coverage,
                    min_area=config.tile_min_area, per_image=config.tiles_per_image)


def prepare_for(competition: Competition | str | Path, config, *, decisions: str | Path | None = None,
                split: bool = True) -> TrainingData:
    """The TrainingData a kitlib.train.TrainConfig asks for: decoded at its size, decisions applied, split as it says.

    `competition`: a Competition or its folder. `split=False`: every labelled sample in training and
    none in validation, whatever the config or the layout says (what the audit scores).
    """
    if not isinstance(competition, Competition):
        competition = load_competition(competition)
    device_type = pick_device(config.device).type
    common = common_size(competition.samples["image"])
    side = training_size(config, common, device_type)
    mode, reason = choose_masks(config.masks, competition, side)
    if config.masks == "auto" or mode != "ignore":
        print(f"masks: {mode}: {reason}")
    size = config.decode_size or decode_size(config, common, device_type)
    if not config.decode_size and size != common:
        print(f"decoding at {size[1]}x{size[0]} px (the most common size is {common[1]}x{common[0]})"
              + (" for the audit and the figures; the model sees the tiles" if mode in ("tiles", "crop") else "")
              + "; set decode_size (--decode-size) to choose")
    if not split:
        competition = replace(competition, samples=competition.samples.assign(split="train"))
    return prepare(competition, size=size, fit=config.fit, val_fraction=config.val_fraction if split else 0.0,
                   folds=config.folds if split else None, fold=config.fold, seed=config.seed,
                   decisions=decisions, progress=config.progress,
                   tiles=tile_spec(config, mode, side) if mode in ("tiles", "crop") else None,
                   mask_mode=mode, mask_reason=reason)
