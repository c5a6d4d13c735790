"""The audit stage: find the training samples that would poison training, before training on them.

    result = audit(competition, AuditConfig(folds=4, time_budget=600), "runs/audit")
    result.suspects          # RUN/suspects.csv: sample_index, issue, score, given_label, suggested_label, twin, group

config.py holds AuditConfig; pixels.py blank images, exact copies and thumbnails; masks.py shared,
empty and full masks; duplicates.py near-duplicates (stains, crops, flips); foreign.py images from
outside the task; oof.py the K fold models that score every sample out of fold; labels.py
cleanlab's confident learning on their probabilities; scores.py puts it together (`audit`);
grid.py draws captioned grids; review.py is the review by hand (top losses, the widget, decisions.csv).
"""

from kitlib.audit.config import (CHECK_COLUMNS, DEFAULT_FOLDS, ISSUES, SUSPECT_COLUMNS,  # noqa: F401
                                 AuditConfig)
from kitlib.audit.duplicates import detail, near_pairs, nearest, structure  # noqa: F401
from kitlib.audit.foreign import foreign_z, image_statistics, robust_distance, statistics_z  # noqa: F401
from kitlib.audit.labels import cleanlab_issues, label_issues, label_posterior, margin_issues  # noqa: F401
from kitlib.audit.masks import mask_checks, mask_hashes  # noqa: F401
from kitlib.audit.oof import features_and_probs, fold_data, out_of_fold  # noqa: F401
from kitlib.audit.pixels import (blank_issue, blank_scores, difference_hashes, duplicate_issue,  # noqa: F401
                                 knn_distance, pixel_z, robust_z, thumbnails)
from kitlib.audit.scores import AuditResult, audit, score_table, suspects_from  # noqa: F401
