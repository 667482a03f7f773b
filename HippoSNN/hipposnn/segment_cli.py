"""``hipposnn segment``: whole-brain T1 scans to hippocampus label maps, from the command line.

Argument parsing, input discovery and the printed report only. The output files, their names (inputs
with the same name get distinct ones) and the all-or-nothing writing live in :mod:`hipposnn.outputs`;
the segmentation in :mod:`hipposnn.inference`. A failing input does not stop the others; the exit code
is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .argtypes import positive_int, probability, smoothing
from .errors import HippoSNNError
from .options import DEFAULT_SNN, MODEL_CHOICES, WHOLE_BRAIN_SNN, model_kind
from .outputs import (
    IMAGE_SUFFIXES,
    OutputOptions,
    check_plan,
    output_names,
    output_stem,
    plan_outputs,
    prepare_folder,
    remove_if_empty,
    unique_inputs,
    write_outputs,
)
from .progress import tqdm_progress

EXIT_FAILED = 2
DEMO_T1 = Path(__file__).resolve().parent / "resources" / "demo_t1_icbm2009a_1mm.nii.gz"
DEMO_OUT = "hipposnn_demo"


def _roi(text: str) -> object:
    if text in ("auto", "crop"):
        return text
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--roi must be auto, crop or X,Y,Z in RAS mm, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--roi centre needs three numbers X,Y,Z, got {text!r}")
    return values


def add_segmentation_arguments(parser, roi: Callable[[str], object], roi_help: str) -> None:
    """The segmentation flags (side, ROI, model, timesteps, ...), on ``segment`` and on ``bids``.

    One definition, so both commands keep the same names, defaults and checks, and
    :func:`segmentation_settings` reads either. Only ``--roi`` differs: a cohort has no single ROI centre,
    so the caller gives the type and help. ``parser`` may be an argument group.
    """
    parser.add_argument("--side", choices=("right", "left", "both"), default="both")
    parser.add_argument("--roi", type=roi, default="auto", help=roi_help)
    parser.add_argument("--model", choices=MODEL_CHOICES, default="snn",
                        help=f"shipped model: snn (the default SNN: {WHOLE_BRAIN_SNN} on whole-brain scans, "
                             f"{DEFAULT_SNN} with --roi crop), snn-t8 (low latency), snn-t32 (the paper's path) or ann")
    parser.add_argument("--checkpoint", default=None, help="custom model file instead of the shipped one")
    parser.add_argument("--timesteps", type=positive_int, default=None,
                        help="SNN timesteps (default: the model's own, 8 for snn-t8, 32 for snn-t32)")
    parser.add_argument("--coding", choices=("binary", "ternary"), default=None,
                        help="input spike coding (default: binary for the SNNs on whole-brain scans, where "
                             "the site-robust binary models are ahead; ternary for --roi crop and ann; a "
                             "--checkpoint file's own)")
    parser.add_argument("--threshold", type=probability, default=0.5)
    parser.add_argument("--smooth", type=smoothing, default=None, metavar="SIGMA",
                        help="Gaussian over the network's map before thresholding, at constant volume (voxels of "
                             "the 1 mm ROI grid; default 1 for the SNNs, whose T-step readout is coarse, 0 for ann)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--refine", action="store_true", help="recentre the ROI on a first (ANN) prediction first")


def add_segment_parser(sub) -> None:
    """Register ``segment`` and all its flags on the main parser's subcommands."""
    p = sub.add_parser(
        "segment",
        help="segment both hippocampi of T1 scans (files or folders; --demo for the shipped example)",
        description="Segment the hippocampi of whole-brain T1 scans. Outputs are in each input's own geometry.",
    )
    p.add_argument("inputs", nargs="*", help="T1 files (.nii/.nii.gz/.mgz/.nrrd/.mha), DICOM series folders, "
                   "or folders of such files")
    p.add_argument("-o", "--output", default=None, help="output folder (created if missing; default: "
                   f"{DEMO_OUT}/ with --demo)")
    add_segmentation_arguments(p, _roi, "auto (template registration), crop (input already is a hippocampus crop) "
                               "or X,Y,Z: ROI centre in RAS mm (one side)")
    p.add_argument("--probabilities", action="store_true", help="also write the probability map")
    p.add_argument("--mesh", nargs="?", const=".vtk", default=None, metavar="EXT",
                   help="also write surface meshes (.vtk RAS by default; .vtp/.ply RAS, .stl/.obj LPS)")
    p.add_argument("--json", action="store_true", help="also write a JSON summary per input")
    p.add_argument("--png", action="store_true", help="also write a PNG overlay (always on with --demo)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--demo", action="store_true", help="segment the shipped demo T1 (ICBM 2009a template)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _is_dicom_folder(path: Path) -> bool:
    return any(p.is_file() and (p.suffix.lower() in (".dcm", ".ima") or p.suffix == "") for p in path.iterdir())


def expand_inputs(items: Sequence[str]) -> List[Path]:
    """Files as given; a folder of image files becomes its files; any other folder is a DICOM series."""
    out: List[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                           and not p.name.startswith("."))
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            if files:
                out.extend(files)
            elif subdirs and not _is_dicom_folder(path):
                out.extend(subdirs)
            else:
                out.append(path)
        else:
            out.append(path)
    return out


def segmentation_settings(args: argparse.Namespace):
    """Validated settings from the flags of :func:`add_segmentation_arguments` (``--probabilities`` where
    the command has it: ``bids`` writes label maps only)."""
    from .inference import SegmentationSettings

    settings = SegmentationSettings(
        side=args.side, roi=args.roi, model=args.model, timesteps=args.timesteps, coding=args.coding,
        threshold=args.threshold, smooth=args.smooth, seed=args.seed, device=args.device, checkpoint=args.checkpoint,
        probabilities=getattr(args, "probabilities", False), refine=args.refine,
    )
    settings.validate()
    return settings


def _progress(label: str, quiet: bool):
    if quiet:
        return None
    return tqdm_progress(label[:30], leave=False)


def run_segment(args: argparse.Namespace) -> int:
    """Segment every input; print one line per input and a summary table; 0 only if all succeeded."""
    mesh_ext = None
    if args.mesh:
        from .mesh import check_mesh_suffix

        ext = args.mesh if args.mesh.startswith(".") else f".{args.mesh}"
        mesh_ext = check_mesh_suffix(f"x{ext}")
    inputs: List[Path] = expand_inputs(args.inputs)
    if args.demo:
        if not DEMO_T1.is_file():
            raise HippoSNNError(f"Demo T1 missing: {DEMO_T1} (reinstall hipposnn)")
        inputs = [DEMO_T1] + inputs
        args.png = True
        args.json = True
    if not inputs:
        raise HippoSNNError("No input given: pass T1 files or folders, or --demo")
    inputs = unique_inputs(inputs)
    out_dir = Path(args.output or (DEMO_OUT if args.demo else "")).expanduser()
    if not args.output and not args.demo:
        raise HippoSNNError("No output folder given: pass -o OUT")
    settings = segmentation_settings(args)
    options = OutputOptions(probabilities=args.probabilities, mesh_ext=mesh_ext, json=args.json, png=args.png,
                            sides=("right", "left") if args.side == "both" else (args.side,))
    plans = plan_outputs(inputs, out_dir, options)
    shown_names = [path.name for path in inputs]
    for i, (path, name) in enumerate(zip(inputs, output_names(inputs))):
        if name != output_stem(path)[0]:
            shown_names[i] = str(path)
            print(f"note: several inputs are named like {path.name}: the outputs of {path} are named {name}_hippo_*")
    if model_kind(settings.model) == "snn" and not str(settings.device).startswith("cuda"):
        from .native import kernels

        kernels()  # decided now: a notice about compiling the C++ kernels comes before the progress bars
    created = prepare_folder(out_dir)
    try:
        failed = _segment_all(inputs, shown_names, plans, out_dir, settings, options, args)
    finally:
        if created:
            remove_if_empty(out_dir)
    if args.demo and not failed:
        print(f"demo outputs in {out_dir}/ (labels, JSON summary and PNG overlay)")
    return EXIT_FAILED if failed else 0


def _segment_all(inputs, shown_names, plans, out_dir, settings, options, args) -> int:
    """Segment the inputs one after the other; print a line each (and a table); return how many failed."""
    from .inference import segment_image
    from .io import load_image

    rows: List[Tuple[str, str, str, str, str]] = []
    failed = 0
    for path, shown, plan in zip(inputs, shown_names, plans):
        start = time.perf_counter()
        bar = None
        try:
            check_plan(plan, inputs, args.overwrite)
            t0 = time.perf_counter()
            image = load_image(path)
            read_s = time.perf_counter() - t0
            bar = _progress(path.name, args.quiet)
            result = segment_image(image, settings, progress=bar)
            t0 = time.perf_counter()
            mesh_warnings = write_outputs(plan, image, result, options)
            write_s = time.perf_counter() - t0
            total = time.perf_counter() - start
            vols = ", ".join(f"{s} {v:.0f}" for s, v in result.volumes_mm3.items())
            t = result.timings
            print(f"{shown}: {vols} mm3 | {total:.1f} s (read {read_s:.1f}, registration "
                  f"{t.get('registration', 0) + t.get('refine', 0):.1f}, inference {t.get('inference', 0):.1f}, "
                  f"write {write_s:.1f}){_volume_context(result)} | quality {result.qc['quality']}")
            for warning in _warning_lines(result.qc) + mesh_warnings:
                print(f"  warning: {warning}")
            volumes = {s: f"{v:.0f}" for s, v in result.volumes_mm3.items()}
            rows.append((shown, "ok", volumes.get("right", "-"), volumes.get("left", "-"), _quality_cell(result.qc)))
        except HippoSNNError as exc:
            failed += 1
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"hipposnn: error: {shown}: {message}", file=sys.stderr)
            rows.append((shown, "FAILED", "-", "-", message[:60]))
        finally:
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
    if len(inputs) > 1 or failed:
        _print_table(rows)
    return failed


def _volume_context(result: Any) -> str:
    """' | eTIV 1.52 L, asymmetry -0.03' when known (auto ROI, both sides)."""
    parts = []
    if result.etiv_mm3:
        parts.append(f"eTIV {result.etiv_mm3 / 1e6:.2f} L")
    if result.asymmetry_index is not None:
        parts.append(f"asymmetry {result.asymmetry_index:+.2f}")
    return f" | {', '.join(parts)}" if parts else ""


def _warning_lines(qc: Dict[str, Any]) -> List[str]:
    """One line per poor side with its reasons, then the warnings no side claims (e.g. template scaling)."""
    lines, claimed = [], set()
    for side, info in qc.get("sides", {}).items():
        if info.get("quality") == "poor":
            lines.append(f"{side} hippocampus is poor: {'; '.join(info.get('reasons', [])) or 'see the JSON'}")
            claimed.update(info.get("reasons", []))
            claimed.update(w for w in qc.get("warnings", []) if w.startswith(f"{side} "))
    return lines + [w for w in qc.get("warnings", []) if w not in claimed]


def _quality_cell(qc: Dict[str, Any]) -> str:
    sides = qc.get("sides", {})
    if not sides:
        return str(qc.get("quality", "-"))
    return " / ".join(f"{side[0].upper()} {info.get('quality', '-')}" for side, info in sides.items())


def _print_table(rows: Sequence[Tuple[str, str, str, str, str]]) -> None:
    header = ("input", "status", "right mm3", "left mm3", "quality (R / L) or reason")
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(5)]
    for row in [header] + list(rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())

