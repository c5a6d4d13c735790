"""How a competition's masks are used: ignored, cut into tiles or crops, or given to the model as a channel.

    mode, reason = choose_masks("auto", competition, training_size=64)
    # 'tiles', "690 of 690 training images have a mask and their median longer side (512 px) is 8.0x ..."

'auto' picks tiles when most training images have a mask and the images are much larger than the
training size (squashing them would lose what the mask marks), else ignore. The choice and its
reason are printed and recorded in the run's config.json.
"""

from __future__ import annotations

import numpy as np

from kitlib.data.images import image_size
from kitlib.data.layouts import Competition
from kitlib.errors import KitError

MASK_MODES = ("auto", "ignore", "crop", "tiles", "channel")
AUTO_TILES_RATIO = 2.5
"""masks='auto' cuts tiles when the median longer side of the images is more than this many times the
training size: squashed whole, their structures would shrink by more than that factor (a 64 px
structure of a 512 px slide becomes 8 px at 64 px), while tiles keep them at native resolution."""
SIZE_SAMPLE = 200  # images whose headers are read to measure the sizes


def mask_share(competition: Competition) -> float:
    """Share of the labelled images that have a mask file beside them."""
    masks = competition.samples["mask"]
    return float(masks.notna().mean()) if len(masks) else 0.0


def median_side(competition: Competition) -> int:
    """Median longer side (px, as displayed) of up to SIZE_SAMPLE labelled images spread over the table."""
    paths = list(competition.samples["image"])
    step = max(1, len(paths) // SIZE_SAMPLE)
    return int(np.median([max(image_size(p)) for p in paths[::step]]))


def choose_masks(mode: str, competition: Competition, training_size: int) -> tuple[str, str]:
    """(mode, reason): the mask mode to train with ('ignore', 'crop', 'tiles' or 'channel') and why.

    KitError for an unknown mode, or for a mode that needs masks on a competition without any.
    """
    if mode not in MASK_MODES:
        raise KitError(f"masks {mode!r}: choose one of {', '.join(MASK_MODES)}.")
    share = mask_share(competition)
    with_masks = int(competition.samples["mask"].notna().sum())
    if mode not in ("auto", "ignore") and with_masks == 0:
        raise KitError(f"--masks {mode}: no training image of {competition.root} has a mask file (mask_XXXX.png "
                       "beside img_XXXX.png, or XXXX_mask.png): use --masks ignore.")
    if mode != "auto":
        return mode, f"--masks {mode} was asked for"
    if share < 0.5:
        return "ignore", (f"{with_masks} of {len(competition.samples)} training images have a mask: whole images "
                          "are used (--masks tiles cuts tiles inside the masks anyway)")
    side = median_side(competition)
    ratio = side / training_size
    if ratio > AUTO_TILES_RATIO:
        return "tiles", (f"{with_masks} of {len(competition.samples)} training images have a mask and their median "
                         f"longer side ({side} px) is {ratio:.1f}x the training size ({training_size} px): tiles of "
                         f"{training_size} px are cut at native resolution inside the masks (--masks ignore trains "
                         "on whole images)")
    return "ignore", (f"the images' median longer side ({side} px) is only {ratio:.1f}x the largest training size "
                      f"({training_size} px): whole images are used (--masks tiles cuts tiles inside the masks)")
