"""`AuditConfig`: everything an audit depends on, documented and checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from kitlib.errors import KitError
from kitlib.train.config import TrainConfig

ISSUES = ("blank", "shared_mask", "conflict", "duplicate", "alien", "mislabeled")
"""The issues of suspects.csv; a sample flagged twice is listed under the first."""
SUSPECT_COLUMNS = ["sample_index", "issue", "score", "given_label", "suggested_label", "twin", "group"]
"""suspects.csv: DESIGN.md's five fixed columns, then the other copy of a duplicate or conflict
(`twin`) and the shared-mask group (`group`, the group's first member)."""
CHECK_COLUMNS = ["set", "sample_index", "check", "score", "twin", "group"]
"""checks.csv: what is reported but never dropped (empty and full masks, masks of another size than their image,
`mask_size`; on the test set also shared masks and train/test duplicates, `leak`): `set` is train or test, `twin`
the training copy of a leak."""
DEFAULT_FOLDS = 4
"""K of every audit front-end (the CLI, `all`, notebook 01): 4 fold models, each trained on 3/4 of the data."""


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit depends on; the fold runs record their own TrainConfig."""

    folds: int = DEFAULT_FOLDS
    """K: each sample is scored by the one of K models that did not train on it (K >= 2); 0: the
    quick audit, no models (blank, duplicate, and aliens from thumbnails alone; in seconds)."""
    time_budget: float | None = None
    """Wall-clock seconds for the whole audit (all folds and the scoring); None: `train.epochs` per fold."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, images_dir=None))
    """How each fold model trains (its folds, fold and time budget are set by the audit)."""
    blank_std: float = 0.02
    """Pixel standard deviation (pixels in 0..1) at which an image stops counting as blank; also
    never more than a tenth of the data set's median, so a data set of faint images is not all blank."""
    duplicate_diff: float = 0.02
    """Mean absolute pixel difference (0..1) up to which two images with one hash are the same picture."""
    alien_z: float = 4.5
    """Robust z at which an image counts as alien (foreign): the larger of its drawing statistics' z
    (kitlib.audit.foreign) and its thumbnail's kNN z (averaged with the fold models' feature z when
    there are fold models). On CIFAR-10 (20,000 images) the largest is 4.0, on Tiny ImageNet 4.7."""
    near_similarity: float = 0.7
    """Cosine of grey 16x16 thumbnails from which two images may be near-duplicates (kitlib.audit.duplicates)."""
    near_ratio: float = 0.6
    """Ratio test: 1 - similarity to the twin at most this share of 1 - similarity to the next neighbour."""
    near_detail: float = 0.4
    """Correlation of the aligned high-pass images (edges, texture) that a near-duplicate pair must reach."""
    near_detail_ratio: float = 0.65
    """The ratio test again on that correlation, against the first image's next neighbour."""
    neighbours: int = 10
    """k of the k-nearest-neighbour distances (thumbnails and features)."""
    max_mislabeled: float = 0.1
    """At most this share of the samples is flagged mislabeled, the most certain first: a weak
    model calls many hard samples mislabeled."""
    trust_probs: float = 0.9
    """The out-of-fold probabilities decide which copy of a conflict is wrong only when the fold models
    agree with at least this share of the given labels (else the more atypical copy is): in the
    rehearsal (README: Results) fold models agreeing with 29 % named the planted copy in 26 of 30
    conflicts, the atypical copy in 30."""
    test: bool = True
    """Also check the test set, when the audit is given the competition: its masks and train/test
    duplicates (RUN/checks.csv; nothing there is ever dropped)."""
    seed: int = 0
    """Seeds the folds (the fold runs take theirs from `train.seed`)."""

    def __post_init__(self):
        if self.folds == 1 or self.folds < 0:
            raise KitError(f"folds={self.folds}: the audit needs K >= 2 folds (each sample scored out of fold), "
                           "or 0 for the quick audit without models.")
        if self.time_budget is not None and self.time_budget <= 0:
            raise KitError(f"time_budget={self.time_budget!r}: give a positive number of seconds.")
        for name, low, high in (("blank_std", 0.0, 0.5), ("duplicate_diff", 0.0, 1.0), ("max_mislabeled", 0.0, 1.0), ("trust_probs", 0.0, 1.0),
                                ("near_similarity", -1.0, 1.0), ("near_ratio", 0.0, 1.0), ("near_detail", -1.0, 1.0),
                                ("near_detail_ratio", 0.0, 1.0)):
            if not low <= getattr(self, name) <= high:
                raise KitError(f"{name}={getattr(self, name)!r}: give a value from {low:g} to {high:g}.")
        if self.neighbours < 1:
            raise KitError(f"neighbours={self.neighbours!r}: give at least 1.")
