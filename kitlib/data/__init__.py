"""The data stage: competition folders read and checked, decoded once into memory, split, ready for `fit`.

    competition = load_competition("data/my-challenge")   # layouts.py: any of the three layouts
    data = prepare_for(competition, TrainConfig())        # dataset.py: decoded (cache.py), split (splits.py)

Beside them: demo.py writes the embedded demo competition, eda.py draws the exploratory figures.
"""

from kitlib.data.dataset import TrainingData, apply_decisions, prepare, prepare_for  # noqa: F401
from kitlib.data.layouts import COLUMNS, Competition, detect_layout, load_competition  # noqa: F401
