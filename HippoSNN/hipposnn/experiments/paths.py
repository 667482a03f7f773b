"""Default locations the experiments read (no heavy imports: the CLI parser uses them)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"
DEFAULT_RUN = REPO_ROOT / "docs" / "results" / "reference_run"
# the run that completed the cross-validation (fine-tuned fold models scored on their test folds)
DEFAULT_CV_RUN = REPO_ROOT / "docs" / "results" / "cv_run"
# fold checkpoints of the reference run (not committed: pass --checkpoints where you keep them)
DEFAULT_CHECKPOINTS = REPO_ROOT / "runs" / "reference_checkpoints"
