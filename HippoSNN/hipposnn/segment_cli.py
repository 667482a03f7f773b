"""``hipposnn segment``: whole-brain T1 scans to hippocampus label maps, from the command line.

Per input ``NAME`` the output folder receives ``NAME_hippo_labels<ext>`` (always), and on request
``NAME_hippo_prob<ext>`` (``--probabilities``), ``NAME_hippo_{right,left}<mesh ext>`` (``--mesh``) and
``NAME_hippo.json`` (``--json``). ``<ext>`` follows the input (.nii.gz for NIfTI and DICOM, .mgz for
MGZ, .nrrd for NRRD, .mha for MHA/MHD) so that the label map opens over the scan in the user's tools.

Failure policy: every output path of an input is checked before the work starts; all files of one
input are written to temporary names and renamed only when all succeeded, so a failure leaves no
partial output. A failing input does not stop the others; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .argtypes import positive_int, probability
from .errors import HippoSNNError
from .progress import tqdm_progress

EXIT_FAILED = 2
DEMO_T1 = Path(__file__).resolve().parent / "resources" / "demo_t1_icbm2009a_1mm.nii.gz"
DEMO_OUT = "hipposnn_demo"
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd")
_OUT_SUFFIX = {".nii.gz": ".nii.gz", ".nii": ".nii.gz", ".mgz": ".mgz", ".mgh": ".mgz", ".nrrd": ".nrrd",
               ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


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
    p.add_argument("--side", choices=("right", "left", "both"), default="both")
    p.add_argument("--roi", type=_roi, default="auto", help="auto (template registration), crop (input already "
                   "is a hippocampus crop) or X,Y,Z: ROI centre in RAS mm (one side)")
    p.add_argument("--model", choices=("snn", "ann"), default="snn")
    p.add_argument("--checkpoint", default=None, help="custom model file instead of the shipped one")
    p.add_argument("--timesteps", type=positive_int, default=None, help="SNN timesteps (default: the model's, 32)")
    p.add_argument("--coding", choices=("binary", "ternary"), default=None, help="default: the model's")
    p.add_argument("--threshold", type=probability, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--refine", action="store_true", help="recentre the ROI on a first (ANN) prediction first")
    p.add_argument("--probabilities", action="store_true", help="also write the probability map")
    p.add_argument("--mesh", nargs="?", const=".vtk", default=None, metavar="EXT",
                   help="also write surface meshes (.vtk RAS by default; .vtp/.ply RAS, .stl/.obj LPS)")
    p.add_argument("--json", action="store_true", help="also write a JSON summary per input")
    p.add_argument("--png", action="store_true", help="also write a PNG overlay (always on with --demo)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--demo", action="store_true", help="segment the shipped demo T1 (ICBM 2009a template)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _stem(path: Path) -> Tuple[str, str]:
    """(output name stem, output image suffix) for an input file or DICOM folder."""
    name = path.name
    lower = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], _OUT_SUFFIX[suffix]
    if path.is_dir():
        return name, ".nii.gz"
    return path.stem, ".nii.gz"


def _is_dicom_folder(path: Path) -> bool:
    return any(p.is_file() and (p.suffix.lower() in (".dcm", ".ima") or p.suffix == "") for p in path.iterdir())


def expand_inputs(items: Sequence[str]) -> List[Path]:
    """Files as given; a folder of image files becomes its files; any other folder is a DICOM series."""
    out: List[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES)
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


def _settings(args: argparse.Namespace):
    from .inference import SegmentationSettings

    settings = SegmentationSettings(
        side=args.side, roi=args.roi, model=args.model, timesteps=args.timesteps, coding=args.coding,
        threshold=args.threshold, seed=args.seed, device=args.device, checkpoint=args.checkpoint,
        probabilities=args.probabilities, refine=args.refine,
    )
    settings.validate()
    return settings


def _planned(path: Path, out_dir: Path, args: argparse.Namespace) -> Dict[str, Path]:
    stem, ext = _stem(path)
    plan = {"labels": out_dir / f"{stem}_hippo_labels{ext}"}
    if args.probabilities:
        plan["probabilities"] = out_dir / f"{stem}_hippo_prob{ext}"
    if args.mesh:
        sides = ("right", "left") if args.side == "both" else (args.side,)
        for side in sides:
            plan[f"mesh_{side}"] = out_dir / f"{stem}_hippo_{side}{args.mesh_ext}"
    if args.json:
        plan["json"] = out_dir / f"{stem}_hippo.json"
    if args.png:
        plan["png"] = out_dir / f"{stem}_hippo_overlay.png"
    return plan


def _check_plan(plan: Dict[str, Path], inputs: Sequence[Path], overwrite: bool) -> None:
    from .io import check_output_path

    resolved_inputs = {p.resolve() for p in inputs}
    for key, path in plan.items():
        if key == "labels" or key == "probabilities":
            check_output_path(path, inputs, overwrite)
            continue
        if path.resolve() in resolved_inputs:
            raise HippoSNNError(f"Output {path} is also an input: choose another output folder")
        if path.exists() and not overwrite:
            raise HippoSNNError(f"Output {path} exists: pass --overwrite to replace it")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial{os.getpid()}")


def _write_all(plan: Dict[str, Path], image, result, args: argparse.Namespace) -> Dict[str, str]:
    """Write every output under a temporary name, then rename them all; remove everything on failure."""
    from .inference import LABELS
    from .io import save_image

    temps: Dict[str, Path] = {}
    renamed: List[Path] = []
    extra: Dict[str, Any] = {}
    try:
        for key, final in plan.items():
            if key in ("json", "png") or key.startswith("mesh_"):
                continue
            tmp = final.with_name(f".{os.getpid()}.{final.name}")
            data = result.labels if key == "labels" else result.probabilities
            save_image(data, image.affine, tmp, like=image)
            temps[key] = tmp
        if args.mesh:
            from .mesh import surfaces, write_mesh

            meshes = surfaces(result.labels, image.affine, {s: LABELS[s] for s in result.volumes_mm3}, args.mesh_ext)
            extra["meshes"] = {side: check for side, (_, check) in meshes.items()}
            for side, (poly, check) in meshes.items():
                if check["relative_difference"] > 0.15:
                    difference = 100 * check["relative_difference"]
                    result.qc["warnings"].append(f"{side} mesh volume differs from voxels by {difference:.0f} %")
                final = plan[f"mesh_{side}"]
                tmp = final.with_name(f".{os.getpid()}.{final.stem}{final.suffix}")
                write_mesh(poly, tmp)
                temps[f"mesh_{side}"] = tmp
        if args.png:
            from .figures import overlay_png

            final = plan["png"]
            tmp = final.with_name(f".{os.getpid()}.{final.name}")
            overlay_png(image.array, result.labels, image.affine, tmp, title=Path(image.source).name)
            temps["png"] = tmp
        if args.json:
            from .weights import atomic_write_bytes

            summary = result.summary()
            summary.update(extra)
            summary["input"] = str(image.source)
            summary["outputs"] = {k: str(v) for k, v in plan.items()}
            final = plan["json"]
            tmp = final.with_name(f".{os.getpid()}.{final.name}")
            atomic_write_bytes(tmp, json.dumps(summary, indent=1).encode("utf-8"))
            temps["json"] = tmp
        for key, tmp in list(temps.items()):
            os.replace(tmp, plan[key])
            renamed.append(plan[key])
            del temps[key]
    except BaseException as exc:
        for leftover in list(temps.values()) + renamed:
            if leftover.exists():
                leftover.unlink()
        if isinstance(exc, OSError):
            raise HippoSNNError(f"Cannot write the outputs of {Path(image.source).name}: "
                                f"{exc.strerror or exc}") from None
        raise
    return {k: str(v) for k, v in plan.items()}


def _progress(label: str, quiet: bool):
    if quiet:
        return None
    return tqdm_progress(label[:30], leave=False)


def run_segment(args: argparse.Namespace) -> int:
    """Segment every input; print one line per input and a summary table; 0 only if all succeeded."""
    from .inference import segment_image
    from .io import load_image

    args.mesh_ext = None
    if args.mesh:
        from .mesh import check_mesh_suffix

        ext = args.mesh if args.mesh.startswith(".") else f".{args.mesh}"
        args.mesh_ext = check_mesh_suffix(f"x{ext}")
    inputs: List[Path] = expand_inputs(args.inputs)
    if args.demo:
        if not DEMO_T1.is_file():
            raise HippoSNNError(f"Demo T1 missing: {DEMO_T1} (reinstall hipposnn)")
        inputs = [DEMO_T1] + inputs
        args.png = True
        args.json = True
    if not inputs:
        raise HippoSNNError("No input given: pass T1 files or folders, or --demo")
    out_dir = Path(args.output or (DEMO_OUT if args.demo else "")).expanduser()
    if not args.output and not args.demo:
        raise HippoSNNError("No output folder given: pass -o OUT")
    settings = _settings(args)
    if out_dir.exists() and not out_dir.is_dir():
        raise HippoSNNError(f"Output {out_dir} is a file: give a folder")
    if not out_dir.exists():
        if not out_dir.resolve().parent.is_dir():
            raise HippoSNNError(f"Cannot create output folder {out_dir}: its parent folder does not exist")
        try:
            out_dir.mkdir()
        except OSError as exc:
            raise HippoSNNError(f"Cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise HippoSNNError(f"Output folder is not writable: {out_dir}")

    rows: List[Tuple[str, str, str, str, str]] = []
    failed = 0
    for path in inputs:
        start = time.perf_counter()
        bar = None
        try:
            plan = _planned(path, out_dir, args)
            _check_plan(plan, inputs, args.overwrite)
            t0 = time.perf_counter()
            image = load_image(path)
            read_s = time.perf_counter() - t0
            bar = _progress(path.name, args.quiet)
            result = segment_image(image, settings, progress=bar)
            t0 = time.perf_counter()
            _write_all(plan, image, result, args)
            write_s = time.perf_counter() - t0
            total = time.perf_counter() - start
            vols = ", ".join(f"{s} {v:.0f}" for s, v in result.volumes_mm3.items())
            t = result.timings
            print(f"{path.name}: {vols} mm3 | {total:.1f} s (read {read_s:.1f}, registration "
                  f"{t.get('registration', 0) + t.get('refine', 0):.1f}, inference {t.get('inference', 0):.1f}, "
                  f"write {write_s:.1f}) | quality {result.qc['quality']}")
            for warning in result.qc["warnings"]:
                print(f"  warning: {warning}")
            shown = {s: f"{v:.0f}" for s, v in result.volumes_mm3.items()}
            rows.append((path.name, "ok", shown.get("right", "-"), shown.get("left", "-"), result.qc["quality"]))
        except HippoSNNError as exc:
            failed += 1
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"hipposnn: error: {path.name}: {message}", file=sys.stderr)
            rows.append((path.name, "FAILED", "-", "-", message[:60]))
        finally:
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
    if len(inputs) > 1 or failed:
        _print_table(rows)
    if args.demo and not failed:
        print(f"demo outputs in {out_dir}/ (labels, JSON summary and PNG overlay)")
    return EXIT_FAILED if failed else 0


def _print_table(rows: Sequence[Tuple[str, str, str, str, str]]) -> None:
    header = ("input", "status", "right mm3", "left mm3", "quality / reason")
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(5)]
    for row in [header] + list(rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def main(argv: List[str] | None = None) -> int:  # pragma: no cover - convenience for python -m
    from .cli import main as cli_main

    return cli_main(["segment", *(argv or [])])
