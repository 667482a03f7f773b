"""argparse value types shared by the ``hipposnn`` subcommands: a bad value is a one-line usage error."""

from __future__ import annotations

import argparse
import math

from .errors import HippoSNNError
from .options import validate_threshold


def _number(text: str, cast, allow_zero: bool):
    """``cast(text)`` that must be finite and positive (or zero when ``allow_zero``); else a usage error."""
    try:
        value = cast(text)
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise argparse.ArgumentTypeError(f"expected {'0 or ' if allow_zero else ''}a positive number, got {value}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, allow_zero=False)


def positive_float(text: str) -> float:
    return _number(text, float, allow_zero=False)


def probability(text: str) -> float:
    """An output threshold: the rule of :func:`hipposnn.options.validate_threshold` (shared with Slicer)."""
    try:
        return validate_threshold(text)
    except HippoSNNError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def percentile(text: str) -> float:
    value = positive_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"a percentile is at most 100, got {value}")
    return value


def non_negative_int(text: str) -> int:
    return _number(text, int, allow_zero=True)


def non_negative_float(text: str) -> float:
    return _number(text, float, allow_zero=True)


def smoothing(text: str) -> float:
    """A readout smoothing sigma in voxels: the rule of :func:`hipposnn.readout.check_sigma`."""
    from .readout import check_sigma  # here: parsing the command line stays free of numpy

    try:
        return check_sigma(text)
    except HippoSNNError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
