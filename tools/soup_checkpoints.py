"""Average the weights of models fine-tuned from the same conversion ("model soup"), one file or a whole CV run.

Why: two fine-tunings of the low-latency default's conversion that score alike on the crops score 0.824 and 0.808 on
IXI (docs/models.md), and averaging fine-tuned weights is a known way to keep what they share and lose what
each picked up by chance. ``hipposnn.averaging.average_payloads`` does the averaging and refuses models that differ
in anything but their weights (thresholds, clips, architecture).

    python tools/soup_checkpoints.py --checkpoints A/best.pt B/best.pt --out runs/soup/best.pt
    python tools/soup_checkpoints.py --runs runs/cv_a runs/cv_b --coding binary --out runs/cv_soup
        # per fold: OUT/<coding>/fold_k/finetune_T8/best.pt (the mean of the runs' best.pt) with the first run's
        # result.json (its test crops) beside it and its ann folder linked, as tools/probe_readout_smoothing.py
        # --run reads a CV run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HippoSNN"))

from hipposnn.averaging import average_payloads  # noqa: E402
from hipposnn.errors import HippoSNNError  # noqa: E402
from hipposnn.weights import atomic_torch_save, read_payload  # noqa: E402


def soup(paths: Sequence[Path], out: Path) -> None:
    """Write the mean of ``paths``' weights to ``out``."""
    payload = average_payloads([read_payload(p) for p in paths], [str(p) for p in paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, out)


def soup_runs(runs: Sequence[Path], coding: str, stage: str, out: Path) -> List[Path]:
    """Per fold of the first run, the soup of every run's ``stage/best.pt``; the folds' folders written."""
    first = runs[0] / coding
    folds = sorted(p for p in first.glob("fold_*") if (p / stage / "best.pt").is_file())
    if not folds:
        raise HippoSNNError(f"{first}: no fold_*/{stage}/best.pt")
    written = []
    for fold in folds:
        target = out / coding / fold.name
        soup([run / coding / fold.name / stage / "best.pt" for run in runs], target / stage / "best.pt")
        shutil.copy(fold / stage / "result.json", target / stage / "result.json")
        ann = target / "ann"
        if not ann.exists():
            os.symlink((fold / "ann").resolve(), ann)
        written.append(target)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--checkpoints", type=Path, nargs="+", metavar="FILE")
    group.add_argument("--runs", type=Path, nargs="+", metavar="RUN")
    ap.add_argument("--coding", default="binary")
    ap.add_argument("--stage", default="finetune_T8")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        if args.checkpoints:
            soup(args.checkpoints, args.out)
            print(f"wrote {args.out}")
        else:
            for folder in soup_runs(args.runs, args.coding, args.stage, args.out):
                print(f"wrote {folder / args.stage / 'best.pt'}")
    except HippoSNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
