"""The ``hipposnn`` command: argument parsing and user-facing errors only; the work lives elsewhere.

Every user mistake (bad argument, unreadable data, missing model) ends with one line on stderr and
a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import DEFAULT_CODING, __version__
from .argtypes import non_negative_float as _non_negative_float
from .argtypes import non_negative_int as _non_negative_int
from .argtypes import percentile as _percentile
from .argtypes import positive_float as _positive_float
from .argtypes import positive_int as _positive_int
from .argtypes import probability as _probability
from .argtypes import smoothing as _smoothing
from .errors import HippoSNNError
from .options import CLIP_PERCENTILE, INPUT_ENCODINGS, MODEL_CHOICES, SITE_THICK_MM, model_kind
from .progress import close_progress_bars, tqdm_progress

EXIT_USER_ERROR = 2
#: Commands whose process ends with os._exit once they have run to their end (:func:`entry`).
QUICK_EXIT_COMMANDS = ("segment", "bids")


def _add_data(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, type=Path,
                   help="MSD-layout folder (imagesTr/, labelsTr/), or a folder of <case> + <case>_label NIfTI pairs")
    p.add_argument("--fold", type=int, default=None, help="cross-validation fold (default: train on all cases)")
    p.add_argument("--folds", type=_positive_int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation and spikes")


def _add_train(p: argparse.ArgumentParser, lr: float, epochs: int, batch: int) -> None:
    p.add_argument("--out", required=True, type=Path, help="run folder (logs, checkpoints)")
    p.add_argument("--loss", choices=["bce", "dice", "bce_dice"], default="dice")
    p.add_argument("--epochs", type=_positive_int, default=epochs)
    p.add_argument("--batch-size", type=_positive_int, default=batch)
    p.add_argument("--lr", type=_positive_float, default=lr)
    p.add_argument("--coding", choices=["binary", "ternary"], default=DEFAULT_CODING,
                   help=f"input spike coding (default {DEFAULT_CODING}, that of the shipped models)")
    p.add_argument("--augment", action="store_true", help="small random in-plane affine and contrast changes")
    p.add_argument("--site-augment", action="store_true",
                   help="each epoch, new site-like crops: bias field, gamma, 1.5-3 mm resolution, noise, masking")
    p.add_argument("--site-thick-mm", type=_positive_float, default=SITE_THICK_MM,
                   help=f"with --site-augment: thickest slice of the one-axis coarse resolution, in mm (default "
                        f"{SITE_THICK_MM:g}; "
                        "the whole-brain default was trained with 6 to hold on thick-slice scans)")
    p.add_argument("--max-batches", type=_positive_int, default=None, help="stop after this many batches")
    p.add_argument("--eval-every", type=_positive_int, default=None, help="also validate every N batches")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from OUT/last.pt (with its own settings; only --epochs, "
                        "--max-batches, --eval-every, --threads, --device and --frugal-memory may change)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (start over)")


def _add_snn(p: argparse.ArgumentParser, timesteps: int) -> None:
    p.add_argument("--timesteps", type=_positive_int, default=timesteps, help="simulation timesteps T")


def _add_rate_penalty(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate-penalty", type=_non_negative_float, default=0.0, metavar="W",
                   help="add W x the mean firing rate of the hidden layers to the loss (default 0)")
    p.add_argument("--frugal-memory", action="store_true",
                   help="CPU: return freed activations to the system; about half the peak memory of a BPTT step, "
                        "~20%% slower (glibc; see hipposnn.memory)")


def _add_distill(p: argparse.ArgumentParser, default_teacher: str) -> None:
    p.add_argument("--distill", type=_non_negative_float, default=0.0, metavar="W",
                   help="add W x the per-pixel KL divergence from a teacher ANN's answer to the loss (default 0)")
    p.add_argument("--teacher", type=Path, default=None, metavar="ANN.pt",
                   help=f"the ANN to distil from (default: {default_teacher})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hipposnn", description="Spiking U-Net hippocampus segmentation: train, convert, fine-tune, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"hipposnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train-ann", help="stage 1: train the ANN U-Net")
    _add_data(p)
    _add_train(p, lr=1e-3, epochs=30, batch=32)
    p.add_argument("--channels", default="16,32,64,128", help="feature channels per level (comma separated)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--init", type=Path, default=None,
                   help="start from the weights of this ANN file (its architecture replaces --channels)")
    p.add_argument("--quant-levels", type=_non_negative_int, default=None, metavar="L",
                   help="quantised-clip activations with L levels and a learned clip per layer, for conversion "
                        "at T = L with --from-clip (0: ReLU; default: the --init model's own, else ReLU)")
    p.add_argument("--clip-percentile", type=_percentile, default=CLIP_PERCENTILE, metavar="P",
                   help="with --quant-levels (from random weights or a ReLU --init): each layer's clip starts at the "
                        f"P-th percentile of its ReLU activations (default {CLIP_PERCENTILE:g}; the whole-brain "
                        "default's path uses 90)")
    p.add_argument("--clip-lr", type=float, default=None, metavar="R",
                   help="with --quant-levels: each clip learns at R x its start value per step (a relative rate, "
                        "the same in every layer) instead of at --lr, which leaves clips of 1.5-184 where they "
                        "start (default: --lr)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and save a moving average of the weights with this decay per step instead of "
                        "the weights themselves (e.g. 0.998: about the last 500 steps; default 0: off)")
    _add_distill(p, "the --init ANN")

    p = sub.add_parser("convert", help="stage 2: early-stop ANN->SNN conversion (threshold balancing)")
    _add_data(p)
    p.add_argument("--checkpoint", required=True, type=Path, help="ANN model file (e.g. RUN/best.pt)")
    p.add_argument("--out", required=True, type=Path, help="folder for converted.pt")
    p.add_argument("--timesteps", type=_positive_int, default=None,
                   help="balancing timesteps T (default 200); with --from-clip, the T the model runs at "
                        "(default: its quantisation levels L)")
    p.add_argument("--from-clip", action="store_true",
                   help="quantised ANN (--quant-levels): thresholds from the learned clips, membranes start at "
                        "half threshold; no balancing")
    p.add_argument("--reset", choices=["subtract", "zero"], default="subtract",
                   help="neuron reset after a spike: subtract the threshold (default) or set to zero")
    p.add_argument("--input", choices=INPUT_ENCODINGS, default="poisson", dest="input_encoding",
                   help="what the first layer receives: Poisson input spikes (default, the paper's), regular spikes "
                        "at the same rate with a random phase per pixel (no sampling noise), or the image itself as "
                        "a constant current (direct input)")
    p.add_argument("--threshold-scale", type=_positive_float, default=0.7, help="scaling factor of thresholds")
    p.add_argument("--percentile", type=_percentile, default=None,
                   help="balance on this percentile of positive currents instead of the maximum")
    p.add_argument("--slices", type=_positive_int, default=32, help="training slices used for balancing")
    p.add_argument("--coding", choices=["binary", "ternary"], default=DEFAULT_CODING,
                   help=f"input spike coding (default {DEFAULT_CODING}, that of the shipped models)")
    p.add_argument("--output-scaling", choices=["mean", "sum"], default="mean")
    p.add_argument("--device", default="cpu", help="cpu or cuda")

    p = sub.add_parser("finetune", help="stage 3: spike-based fine-tuning (BPTT) of a converted SNN")
    _add_data(p)
    p.add_argument("--checkpoint", required=True, type=Path, help="converted SNN (converted.pt)")
    _add_train(p, lr=1e-4, epochs=10, batch=16)
    _add_snn(p, 32)
    _add_rate_penalty(p)
    _add_distill(p, "the ANN the checkpoint was converted from")

    p = sub.add_parser("train-snn", help="baseline: train the SNN directly from random weights")
    _add_data(p)
    _add_train(p, lr=1e-3, epochs=10, batch=16)
    _add_snn(p, 32)
    _add_rate_penalty(p)
    p.add_argument("--channels", default="16,32,64,128")
    p.add_argument("--dropout", type=float, default=0.1)

    p = sub.add_parser("evaluate", help="3D and 2D Dice of a model on an MSD-layout folder")
    _add_data(p)
    p.add_argument("--checkpoint", type=Path, default=None, help="model file (default: the shipped model)")
    p.add_argument("--model", choices=MODEL_CHOICES, default="snn", help="shipped model (snn: the default SNN)")
    p.add_argument("--timesteps", type=_positive_int, default=None, help="T (default: the model's own)")
    p.add_argument("--coding", choices=["binary", "ternary"], default=None, help="default: the model's own")
    p.add_argument("--threshold", type=_probability, default=0.5, help="output probability threshold")
    p.add_argument("--smooth", type=_smoothing, default=None, metavar="SIGMA",
                   help="readout smoothing at constant volume, as `segment` does (voxels; default: 1 for an SNN, "
                        "0 for an ANN; 0 scores the raw map, as the recipe does)")
    p.add_argument("--split", choices=["all", "test"], default="all",
                   help="score all cases, or only the --fold test cases")
    p.add_argument("--input", choices=INPUT_ENCODINGS, default=None, dest="input_encoding",
                   help="run an SNN on this input instead of the one it was trained with (weights unchanged)")
    p.add_argument("--json", type=Path, default=None, help="write the scores to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("folds", help="write the subject-wise K-fold split to JSON")
    _add_data(p)
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("recipe", help="reference models: cross-validated three-stage training + final models")
    p.add_argument("--config", required=True, type=Path, help="recipe config JSON (configs/reference.json)")
    p.add_argument("--data", required=True, type=Path, help="MSD-layout folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="parallel worker processes")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads per worker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="seconds-long variant for CI")
    p.add_argument("--deadline", type=_positive_float, default=None,
                   help="start no new job after this many seconds (rerun later to finish)")
    p.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                   help="run only the jobs whose folder matches one of these patterns, e.g. 'ternary/*'")

    from .bids_cli import add_bids_parser
    from .experiments import add_experiment_parser
    from .segment_cli import add_segment_parser

    add_segment_parser(sub)
    add_bids_parser(sub)
    add_experiment_parser(sub)

    p = sub.add_parser("crop-stats", help="how many label voxels the centre ROI crop loses")
    _add_data(p)
    return parser


def _channels(text: str) -> tuple:
    try:
        chans = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise HippoSNNError(f"--channels must be comma-separated whole numbers, got {text!r}") from None
    if not chans or any(c < 1 for c in chans):
        raise HippoSNNError("--channels must be positive")
    return chans


def _check_common(args: argparse.Namespace) -> None:
    data = getattr(args, "data", None)
    if data is not None:
        from .data import list_cases

        list_cases(data)  # fails early, with a plain message, on a missing or malformed folder
    fold = getattr(args, "fold", None)
    if fold is not None and not 0 <= fold < args.folds:
        raise HippoSNNError(f"--fold must be between 0 and {args.folds - 1}")
    for flag in ("checkpoint", "init"):
        path = getattr(args, flag, None)
        if path is not None and not Path(path).is_file():
            raise HippoSNNError(f"model file not found: {path} (--{flag})")


def _train_config(args: argparse.Namespace, stage: str):
    from .training import TrainConfig

    return TrainConfig(
        stage=stage, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
        timesteps=getattr(args, "timesteps", 32), coding=args.coding, seed=args.seed, augment=args.augment,
        site_augment=args.site_augment, site_thick_mm=args.site_thick_mm, max_batches=args.max_batches,
        eval_every=args.eval_every,
        threads=args.threads, device=args.device, quant_levels=getattr(args, "quant_levels", None),
        rate_penalty=getattr(args, "rate_penalty", 0.0), frugal_memory=getattr(args, "frugal_memory", False),
        distill=getattr(args, "distill", 0.0), clip_percentile=getattr(args, "clip_percentile", CLIP_PERCENTILE),
        clip_lr=getattr(args, "clip_lr", None), ema=getattr(args, "ema", 0.0),
    )


def _quant_levels(path: Path) -> int:
    """The quantisation levels of the ANN file ``path``, refused in one line when it has none."""
    from .weights import read_payload

    levels = int((read_payload(path).get("spec") or {}).get("quant_levels", 0))
    if levels <= 0:
        raise HippoSNNError(f"{path} has no quantisation levels: --from-clip needs an ANN trained with "
                            "--quant-levels (or convert it by balancing, without --from-clip)")
    return levels


def _run(args: argparse.Namespace) -> int:
    _check_common(args)
    cmd = args.command
    if cmd == "train-ann":
        from .pipeline import train_ann
        from .unet import UNetSpec

        spec = UNetSpec(channels=_channels(args.channels), dropout=args.dropout)
        train_ann(args.data, args.out, _train_config(args, "ann"), spec, args.fold, args.folds, args.resume,
                  progress=tqdm_progress("train-ann"), overwrite=args.overwrite, init=args.init,
                  teacher=args.teacher)
        print(f"ANN written to {args.out / 'best.pt'}")
    elif cmd == "convert":
        from .pipeline import convert_ann

        timesteps = args.timesteps or (_quant_levels(args.checkpoint) if args.from_clip else 200)
        convert_ann(args.checkpoint, args.data, args.out, timesteps, args.threshold_scale, args.percentile,
                    args.coding, args.slices, args.fold, args.folds, args.seed, args.output_scaling,
                    device=args.device, progress=tqdm_progress("convert"), from_clip=args.from_clip,
                    reset=args.reset, input_encoding=args.input_encoding)
    elif cmd in ("finetune", "train-snn"):
        from .pipeline import train_snn
        from .unet import UNetSpec

        spec = UNetSpec(channels=_channels(args.channels), dropout=args.dropout) if cmd == "train-snn" else None
        init = args.checkpoint if cmd == "finetune" else None
        train_snn(args.data, args.out, _train_config(args, "finetune" if init else "direct"), init, spec,
                  args.fold, args.folds, args.resume, progress=tqdm_progress(cmd), overwrite=args.overwrite,
                  teacher=getattr(args, "teacher", None))
        print(f"SNN written to {args.out / 'best.pt'}")
    elif cmd == "evaluate":
        return _evaluate(args)
    elif cmd == "folds":
        from .data import list_cases, make_folds, save_folds

        folds = make_folds([n for n, _, _ in list_cases(args.data)], args.folds, args.seed)
        save_folds(folds, args.out, args.seed)
        print(f"{args.folds} folds written to {args.out}")
    elif cmd == "bids":
        from .bids_cli import run_bids

        return run_bids(args)
    elif cmd == "segment":
        from .segment_cli import run_segment

        return run_segment(args)
    elif cmd == "experiment":
        from .experiments import run_experiment

        return run_experiment(args)
    elif cmd == "recipe":
        from .recipe import load_config, run_recipe, smoke_config

        config = load_config(args.config)
        if args.smoke:
            config = smoke_config(config)
        threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
        run_recipe(config, args.data, args.out, args.jobs, args.device, threads, deadline=args.deadline,
                   only=args.only)
        print(f"recipe finished: {args.out}")
    elif cmd == "crop-stats":
        from .data import crop_loss, load_cases

        print(json.dumps(crop_loss(load_cases(args.data)), indent=1))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .pipeline import evaluate_model, split_names
    from .unet import SpikingUNet
    from .weights import default_model_path, model_from_payload, read_payload

    if args.json is not None:
        from .outputs import check_output_file

        check_output_file(args.json, args.overwrite)  # before the evaluation, not after it
    path = args.checkpoint or default_model_path(args.model, args.coding)
    payload = read_payload(path)
    kind = model_kind(args.model) if args.checkpoint is None else payload.get("kind")
    model = model_from_payload(payload, kind, source=str(path))
    spiking = isinstance(model, SpikingUNet)
    if args.input_encoding is not None:
        if not spiking:
            raise HippoSNNError("--input applies to an SNN; this model is an ANN")
        model.input_encoding = args.input_encoding
    meta: Dict[str, Any] = payload.get("meta", {})
    coding = args.coding or meta.get("coding", "binary")
    timesteps = args.timesteps or int(meta.get("timesteps", 32))
    names: Optional[List[str]] = None
    if args.split == "test":
        if args.fold is None:
            raise HippoSNNError("--split test needs --fold")
        names = split_names(args.data, args.fold, args.folds, args.seed)[2]
    from .readout import readout_sigma

    result = evaluate_model(model, args.data, names, timesteps, coding, args.threshold, args.seed, args.device,
                            progress=tqdm_progress("evaluate"), smooth=readout_sigma(spiking, args.smooth))
    result["settings"]["checkpoint"] = str(path)
    if spiking:
        result["settings"]["input_encoding"] = model.input_encoding
    print(f"mean 3D Dice {result['mean_dice_3d']:.4f} (sd {result['sd_dice_3d']:.4f}, {len(result['cases'])} cases);"
          f" mean 2D Dice {result['mean_dice_2d']:.4f} (sd {result['sd_dice_2d']:.4f})")
    if args.json is not None:
        from .atomicio import atomic_write_text

        if args.json.exists() and not args.overwrite:  # appeared while evaluating
            raise HippoSNNError(f"Output {args.json} exists: pass --overwrite to replace it")
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``hipposnn`` command; returns its exit status (0, :data:`EXIT_USER_ERROR`, ...)."""
    return _main(argv)[0]


def _main(argv: Optional[List[str]]) -> Tuple[int, bool]:
    """The exit status, and whether the process may leave at once (:func:`entry`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USER_ERROR, False
    try:
        code = _run(args)
        close_progress_bars()  # a run stopped early (--max-batches) never brings its bar to 100 %
        return code, args.command in QUICK_EXIT_COMMANDS
    except HippoSNNError as exc:
        close_progress_bars()  # the message gets its own line, not the tail of a progress bar
        print(f"hipposnn: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR, False
    except KeyboardInterrupt:
        close_progress_bars()
        print("hipposnn: interrupted", file=sys.stderr)
        return 130, False


def entry() -> None:
    """The ``hipposnn`` program (console script and ``python -m hipposnn``): :func:`main`, then exit.

    Why the quick exit: a process that has imported torch spends a noticeable part of a second tearing
    its modules down after the work is done, which on a 2 mm scan is what kept the whole command behind
    hippodeep's (docs/segmentation.md, "After the whole command was trimmed"). A ``segment`` or ``bids``
    run that got to its end has written, closed and renamed every output and shut its worker processes
    down, so it flushes the console and the logs and leaves with :func:`os._exit`. Errors, interruptions
    and every other command exit normally.
    """
    code, quick = _main(None)
    if quick:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
