"""Progress bars: tqdm.auto's, thinned out when they are written to a log file rather than shown.

    for batch in progress_bar(batches, desc="epoch 1", unit="batch"):   # as tqdm(...)

In a terminal or a notebook a bar redraws ten times a second, as tqdm's do. Written to a file (`python -m
kitlib all ... > run.log 2>&1`, a Kaggle commit, a CI log) every redraw is more text in the log: there a
bar first shows after LOG_INTERVAL seconds (tqdm's delay), then redraws at most every LOG_INTERVAL seconds
(its mininterval); a shorter task leaves no bar in the log, only the kit's own summary line.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0
"""Seconds before a bar first shows, and between its redraws, when it goes to a file."""


def progress_bar(*args, **kwargs) -> tqdm:
    """tqdm.auto.tqdm(*args, **kwargs); unless shown (a terminal, a notebook), delay and mininterval LOG_INTERVAL."""
    if not shown():
        kwargs.setdefault("delay", LOG_INTERVAL)
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(*args, **kwargs)


def shown() -> bool:
    """Whether bars are seen as they redraw: stderr is a terminal, or this is a notebook's kernel."""
    isatty = getattr(sys.stderr, "isatty", None)
    return "ipykernel" in sys.modules or bool(isatty and isatty())
