"""``hipposnn segment``: whole-brain segmentation from the command line (being built; see issue 4)."""

from __future__ import annotations

import argparse

from .errors import HippoSNNError


def add_segment_parser(sub) -> None:
    p = sub.add_parser("segment", help="segment both hippocampi of T1 scans")
    p.add_argument("inputs", nargs="*")


def run_segment(args: argparse.Namespace) -> int:
    raise HippoSNNError("segment is not available yet")
