"""The audit stage: find the training samples that would poison training, before training on them.

    result = audit(competition, AuditConfig(folds=4, time_budget=600), "runs/audit")
    result.suspects          # RUN/suspects.csv: sample_index, issue, score, given_label, suggested_label

config.py holds AuditConfig; pixels.py the issues pixels show without a model (blank, duplicate,
thumbnail aliens); oof.py the K fold models that score every sample out of fold; labels.py
confident learning on their probabilities; scores.py puts it together (`audit`); grid.py draws
captioned grids; review.py is the review by hand (top losses, the widget, decisions.csv).
"""

from kitlib.audit.config import DEFAULT_FOLDS, ISSUES, SUSPECT_COLUMNS, AuditConfig  # noqa: F401
from kitlib.audit.labels import label_issues  # noqa: F401
from kitlib.audit.oof import features_and_probs, fold_data, out_of_fold  # noqa: F401
from kitlib.audit.pixels import (alien_issue, blank_issue, blank_scores, difference_hashes,  # noqa: F401
                                 duplicate_issue, knn_distance, pixel_z, robust_z, thumbnails)
from kitlib.audit.scores import AuditResult, audit, score_table, suspects_from  # noqa: F401
