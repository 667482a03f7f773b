"""``hipposnn bids BIDS_DIR OUTPUT_DIR participant|group``: argument parsing and messages only.

The work lives in :mod:`hipposnn.bids`. Exit codes: 0 every selected scan is done, 1 some scans failed
or (group level) are missing (the table and the messages say which and why), 2 a usage or layout error
(one line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .argtypes import positive_int
from .errors import HippoSNNError
from .segment_cli import add_segmentation_arguments, segmentation_settings

EXIT_SCANS_FAILED = 1


def _roi(text: str) -> str:
    if text not in ("auto", "crop"):
        raise argparse.ArgumentTypeError(f"--roi must be auto or crop for a cohort, got {text!r}")
    return text


def add_bids_parser(sub) -> None:
    """Register ``bids`` (BIDS-Apps convention) on the main parser's subcommands."""
    p = sub.add_parser(
        "bids",
        help="BIDS dataset: segment every T1w (participant), then one volumes table (group); resumable",
        description="Segment the hippocampi of every sub-*/[ses-*/]anat/*_T1w.nii[.gz] of a BIDS dataset into "
                    "BIDS derivatives (participant level; rerun to resume), then gather one table "
                    "OUTPUT_DIR/hipposnn_volumes.tsv (group level). See docs/bids.md.",
    )
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="the BIDS dataset (holds dataset_description.json, sub-*/)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR",
                   help="derivatives folder, typically BIDS_DIR/derivatives/hipposnn")
    p.add_argument("analysis_level", choices=("participant", "group"), help="participant: segment; group: table")
    p.add_argument("--participant-label", "--participant_label", dest="participant_label", nargs="+",
                   metavar="LABEL", help="only these subjects (01 or sub-01)")
    p.add_argument("--session-label", "--session_label", dest="session_label", nargs="+", metavar="LABEL",
                   help="only these sessions (A or ses-A)")
    p.add_argument("--jobs", type=positive_int, default=1, help="scans segmented at once, in worker processes")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads per job (default: cores // jobs, at most 8)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="only the K-th of N deterministic subject subsets (1 <= K <= N), for job arrays")
    p.add_argument("--skip-bids-validation", "--skip_bids_validation", dest="skip_bids_validation",
                   action="store_true", help="do not require BIDS_DIR/dataset_description.json")
    g = p.add_argument_group("segmentation (as in hipposnn segment)")
    add_segmentation_arguments(g, _roi, "auto (template registration) or crop")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _say(text: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(text, file=sys.stderr)


def run_bids(args: argparse.Namespace) -> int:
    from . import bids

    validate = not args.skip_bids_validation
    if args.analysis_level == "group":
        if args.shard:
            raise HippoSNNError("--shard is for the participant level; the group level reads every shard's outputs")
        report = bids.write_group_table(args.bids_dir, args.output_dir, args.participant_label,
                                        args.session_label, validate)
        problems = [r for r in report.rows if r["status"] != "ok"]
        for row in problems:
            print(f"{row['status']}: {row['source']}: {row['error']}", file=sys.stderr)
        combos = {(r["model"], r["coding"], r["timesteps"], r["threshold"], r["model_sha256"])
                  for r in report.rows if r["status"] == "ok"}
        if len(combos) > 1:
            print(f"note: the table mixes {len(combos)} model/settings combinations (see its model, coding, "
                  "timesteps, threshold and model_sha256 columns)", file=sys.stderr)
        print(f"{report.tsv} (and .csv): {len(report.rows)} scan(s), {report.count('ok')} ok, "
              f"{report.count('failed')} failed, {report.count('missing')} missing")
        return 0 if report.ok else EXIT_SCANS_FAILED

    settings = segmentation_settings(args)
    shard = bids.parse_shard(args.shard) if args.shard else None
    bar = None
    if not args.quiet:
        from .progress import tqdm_progress

        bar = tqdm_progress("bids", leave=False)
    try:
        report = bids.run_participants(
            args.bids_dir, args.output_dir, settings, args.participant_label, args.session_label,
            jobs=args.jobs, threads=args.threads, shard=shard, progress=bar, validate=validate, log=_say,
        )
    finally:
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]
    failed = f"{len(report.failed)} failed"
    if report.failed:
        failed += f" (listed above; reasons in {Path(args.output_dir) / bids.LOG_DIR}/)"
    print(f"{report.selected} scan(s): {len(report.done)} segmented, {len(report.skipped)} already complete, "
          f"{failed}, in {report.seconds:.1f} s ({report.jobs} job(s) x {report.threads} thread(s)); "
          f"next: hipposnn bids {args.bids_dir} {args.output_dir} group")
    return 0 if report.ok else EXIT_SCANS_FAILED
