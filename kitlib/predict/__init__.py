"""The prediction stage: ensembles with test-time augmentation, the validated submission, the evaluation report.

    runs = load_runs(["runs/a", "runs/b"])                    # ensemble.py
    predict_submission(runs, competition, "runs/submission.csv", tta="hflip")
    evaluate_run("runs/a", out_dir="images/a_report")          # report.py

ensemble.py predicts (TTA views, folds, runs averaged); submission.py writes and checks the CSV
against the sample submission; report.py scores predictions per class against the random baseline.
"""

from kitlib.models.infer import TTA_MODES, tta_views  # noqa: F401
from kitlib.predict.ensemble import Run, check_classes, load_runs, predict_probs, predict_submission  # noqa: F401
from kitlib.predict.report import Report, evaluate, evaluate_ensemble, evaluate_oof, evaluate_run  # noqa: F401
from kitlib.predict.submission import WrittenSubmission, validate_submission, write_submission  # noqa: F401
