"""argparse value types shared by the ``hipposnn`` subcommands: a bad value is a one-line usage error."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def probability(text: str) -> float:
    value = positive_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a value between 0 and 1, got {value}")
    return value


def percentile(text: str) -> float:
    value = positive_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"a percentile is at most 100, got {value}")
    return value
