"""One command per item of the paper: ``hipposnn experiment NAME [--smoke | --full] [--out DIR]``.

Why a registry: the CLI, the tests and ``docs/REPRODUCTION.md`` all need the same list of experiments
with the same modes, so it lives here once. Every experiment writes ``NAME.csv``, ``exp_NAME.png``
and ``NAME.json`` (its summary: mode, settings, provenance notes, seconds) into ``--out``.

The CLI wires this package in through :func:`add_experiment_parser` and :func:`run_experiment`;
``python -m hipposnn.experiments NAME`` works without it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .paths import DEFAULT_CHECKPOINTS, DEFAULT_CV_RUN, DEFAULT_DATA, DEFAULT_RUN

if TYPE_CHECKING:
    from .common import Context

# torch and the experiment code load only when an experiment runs, so `hipposnn --help` stays quick
Runner = Callable[["Context"], Dict[str, Any]]


def _segmentation(name: str) -> Runner:
    def run(ctx: Context) -> Dict[str, Any]:
        from . import segmentation

        return getattr(segmentation, name)(ctx)

    return run


def _cifar(ctx: Context) -> Dict[str, Any]:
    from . import cifar

    return cifar.table4(ctx)


EXPERIMENTS: Dict[str, Dict[str, Any]] = {
    "table1": {"run": _segmentation("table1"), "what": "ANN / converted / fine-tuned SNN x BCE, Dice, BCE-Dice"},
    "fig3": {"run": _segmentation("fig3"), "what": "one slice: input, truth, converted and fine-tuned outputs"},
    "fig4": {"run": _segmentation("fig4"), "what": "per-layer firing rates and thresholds before/after fine-tuning"},
    "table2": {"run": _segmentation("table2"), "what": "converted-SNN Dice for output thresholds 0.10-0.60"},
    "fig6a": {"run": _segmentation("fig6a"), "what": "converted-SNN Dice vs timesteps for threshold scales"},
    "fig6b": {"run": _segmentation("fig6b"), "what": "2D Dice vs batches, fine-tuning vs direct (and Table 3)"},
    "table4": {"run": _cifar, "what": "CIFAR-10 VGG-5, binary vs ternary: ANN, converted, fine-tuned accuracy"},
    "table5": {"run": _segmentation("table5"), "what": "segmentation, binary vs ternary coding"},
}
NAMES: List[str] = list(EXPERIMENTS)


def add_experiment_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``experiment`` sub-command to an argparse sub-parser collection and return it."""
    p = sub.add_parser(
        "experiment",
        help="reproduce one table or figure of the paper (writes CSV + PNG)",
        description="Reproduce a table or figure of Yue et al. 2023. Default: a reduced CPU setting; "
        "--smoke: seconds on synthetic data; --full: the paper's setting (GPU).",
    )
    p.add_argument("name", choices=NAMES + ["all"], help="which experiment ('all' runs every one in turn)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="seconds-long run on tiny synthetic data (CI)")
    mode.add_argument("--full", action="store_true", help="the paper's full setting (GPU recommended)")
    p.add_argument("--out", default="hipposnn_experiments", help="output folder (default: %(default)s)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MSD-layout hippocampus folder")
    p.add_argument("--reference-run", default=str(DEFAULT_RUN), help="recipe run whose results are reused")
    p.add_argument("--cv-run", default=str(DEFAULT_CV_RUN), help="CV run folder whose fine-tuned fold scores to reuse")
    p.add_argument("--checkpoints", default=str(DEFAULT_CHECKPOINTS), help="fold checkpoints of the reference run")
    p.add_argument("--cifar", default=None, help="CIFAR-10 JPEG archive (table4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    return p


def run_experiment(args: argparse.Namespace) -> int:
    """Run the experiment(s) named in ``args``; returns the process exit code."""
    mode = "smoke" if args.smoke else "full" if args.full else "reduced"
    names = NAMES if args.name == "all" else [args.name]
    for name in names:
        summary = run_one(
            name, mode, Path(args.out), data=args.data, run_dir=args.reference_run, cv_run=args.cv_run,
            checkpoints=args.checkpoints, device=args.device, seed=args.seed, cifar=getattr(args, "cifar", None),
        )
        print(f"{name} ({mode}): {summary['seconds']:.0f} s -> {args.out}/{name}.csv, exp_{name}.png")
    return 0


def run_one(name: str, mode: str = "reduced", out: Path = Path("hipposnn_experiments"), *,
            data: Optional[str] = None, run_dir: Optional[str] = None, cv_run: Optional[str] = None,
            checkpoints: Optional[str] = None, device: str = "cpu", seed: int = 0, cifar: Optional[str] = None,
            log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run one experiment in ``mode`` and write its CSV, PNG and summary JSON into ``out``."""
    from .common import MODES, Context, set_threads, write_json

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(NAMES)}")

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    set_threads()
    kwargs: Dict[str, Any] = {"device": device, "seed": seed, "log": log}
    for key, value in (("data", data), ("run_dir", run_dir), ("cv_run", cv_run), ("checkpoints", checkpoints)):
        if value is not None:
            kwargs[key] = Path(value)
    ctx = Context(name, mode, Path(out), **kwargs)
    if cifar is not None:
        ctx.settings["cifar_archive"] = cifar
    t0 = time.time()
    result = EXPERIMENTS[name]["run"](ctx)
    seconds = time.time() - t0
    summary = {"experiment": name, "what": EXPERIMENTS[name]["what"], "mode": mode, "seconds": round(seconds, 1),
               "settings": ctx.settings, "notes": ctx.notes, "data": str(ctx.data), "result": result}
    write_json(ctx.out / f"{name}.json", summary)
    return summary


__all__ = ["EXPERIMENTS", "NAMES", "add_experiment_parser", "run_experiment", "run_one"]
