"""``python -m hipposnn.experiments NAME [--smoke | --full]``: the experiment command without the main CLI."""

from __future__ import annotations

import argparse
import sys

from . import add_experiment_parser, run_experiment


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hipposnn.experiments")
    sub = parser.add_subparsers(dest="command")
    add_experiment_parser(sub)
    return run_experiment(parser.parse_args(["experiment", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
