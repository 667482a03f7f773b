"""The output files of a segmentation run: their names, the checks before any work, and one transaction.

Per input ``NAME`` the output folder receives ``NAME_hippo_labels<ext>`` (always), and on request
``NAME_hippo_prob<ext>`` (probabilities), ``NAME_hippo_{right,left}<mesh ext>`` (meshes),
``NAME_hippo.json`` (summary) and ``NAME_hippo_overlay.png``. ``<ext>`` follows the input (.nii.gz for
NIfTI and DICOM, .mgz for MGZ, .nrrd for NRRD, .mha for MHA/MHD) so that the label map opens over the
scan in the user's tools.

``NAME`` is the input's file (or DICOM folder) name without its extension. Inputs that would share a
``NAME`` (compared case-insensitively: ``a/T1.mgz`` and ``b/T1.mgz``, or ``T1.mgz`` and ``T1.nii.gz``)
never overwrite each other's outputs: each of them is named after its parent folder and its name
(``a_T1``, ``b_T1``); if that still clashes, the input's format is appended (``T1_mgz``, ``T1_niigz``),
and as a last resort its position among the clashing inputs (``T1_2``). The rule depends only on the
inputs given, so the same command always gives the same names. The same file given twice is
segmented once.

Failure policy: every output path of an input is checked before its work starts; all files of one
input are written under temporary names and renamed only when all succeeded
(:class:`~hipposnn.atomicio.OutputGroup`), so a failure leaves no partial output; an output folder
created by the run is removed again when nothing was written into it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .atomicio import OutputGroup
from .errors import HippoSNNError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd")
OUT_SUFFIX = {".nii.gz": ".nii.gz", ".nii": ".nii.gz", ".mgz": ".mgz", ".mgh": ".mgz", ".nrrd": ".nrrd",
              ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


@dataclass
class OutputOptions:
    """Which files to write besides the label map."""

    probabilities: bool = False
    mesh_ext: str | None = None  # ".vtk", ".vtp", ".ply", ".stl", ".obj" or None
    sides: Tuple[str, ...] = ("right", "left")
    json: bool = False
    png: bool = False


def output_stem(path: Path) -> Tuple[str, str, str]:
    """(name stem, output image suffix, input format tag) for an input file or DICOM folder."""
    name = path.name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], OUT_SUFFIX[suffix], suffix.replace(".", "")
    if path.is_dir():
        return name, ".nii.gz", "dicom"
    return path.stem, ".nii.gz", path.suffix.replace(".", "") or "file"


def unique_inputs(inputs: Sequence[Path]) -> List[Path]:
    """The inputs in order, each file once (a file given twice, or through its folder, is segmented once)."""
    seen, out = set(), []
    for path in inputs:
        key = os.path.normcase(str(Path(path).expanduser().resolve()))
        if key not in seen:
            seen.add(key)
            out.append(Path(path))
    return out


def output_names(inputs: Sequence[Path]) -> List[str]:
    """The output name stem of each input, made unique as the module docstring describes."""
    stems = [output_stem(p) for p in inputs]
    names = [s[0] for s in stems]

    def clashing() -> Dict[str, List[int]]:
        groups: Dict[str, List[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.lower(), []).append(i)
        return {k: v for k, v in groups.items() if len(v) > 1}

    for members in clashing().values():
        for i in members:
            parent = Path(inputs[i]).expanduser().resolve().parent.name
            names[i] = f"{parent}_{names[i]}" if parent else names[i]
    for members in clashing().values():
        for i in members:
            names[i] = f"{names[i]}_{stems[i][2]}"
    for members in clashing().values():
        for n, i in enumerate(members[1:], start=2):
            names[i] = f"{names[i]}_{n}"
    return names


def plan_outputs(inputs: Sequence[Path], out_dir: Path, options: OutputOptions) -> List[Dict[str, Path]]:
    """The output paths of every input (same order), with unique names across the inputs."""
    plans = []
    for path, name in zip(inputs, output_names(inputs)):
        ext = output_stem(path)[1]
        plan = {"labels": out_dir / f"{name}_hippo_labels{ext}"}
        if options.probabilities:
            plan["probabilities"] = out_dir / f"{name}_hippo_prob{ext}"
        if options.mesh_ext:
            for side in options.sides:
                plan[f"mesh_{side}"] = out_dir / f"{name}_hippo_{side}{options.mesh_ext}"
        if options.json:
            plan["json"] = out_dir / f"{name}_hippo.json"
        if options.png:
            plan["png"] = out_dir / f"{name}_hippo_overlay.png"
        plans.append(plan)
    seen: Dict[str, Path] = {}
    for plan in plans:  # cannot happen with the names above; a guard against silent overwrites
        for target in plan.values():
            key = str(target).lower()
            if key in seen:
                raise HippoSNNError(f"Two inputs would write the same output {target.name}: rename one input")
            seen[key] = target
    return plans


def check_plan(plan: Dict[str, Path], inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that exist (without ``overwrite``) or would replace an input."""
    from .io import check_output_path

    resolved_inputs = {p.resolve() for p in inputs}
    for key, path in plan.items():
        if key in ("labels", "probabilities"):
            check_output_path(path, inputs, overwrite)
            continue
        if path.resolve() in resolved_inputs:
            raise HippoSNNError(f"Output {path} is also an input: choose another output folder")
        if path.exists() and not overwrite:
            raise HippoSNNError(f"Output {path} exists: pass --overwrite to replace it")


def write_outputs(plan: Dict[str, Path], image, result, options: OutputOptions) -> List[str]:
    """Write every planned output of one input, all or nothing; return the extra (mesh) QC warnings.

    The warnings are also added to the JSON summary's QC warnings; ``result`` itself is not changed.
    """
    from .inference import LABELS
    from .io import save_image
    from .mesh import VOLUME_TOLERANCE

    warnings: List[str] = []
    extra: Dict[str, Any] = {}
    name = Path(image.source).name
    try:
        with OutputGroup() as group:
            group.add(plan["labels"], lambda tmp: save_image(result.labels, None, tmp, like=image, atomic=False))
            if "probabilities" in plan:
                group.add(plan["probabilities"],
                          lambda tmp: save_image(result.probabilities, None, tmp, like=image, atomic=False))
            if options.mesh_ext:
                from .mesh import surfaces, write_mesh

                values = {s: LABELS[s] for s in result.volumes_mm3}
                meshes = surfaces(result.labels, image.affine, values, options.mesh_ext)
                extra["meshes"] = {side: check for side, (_, check) in meshes.items()}
                for side, (poly, check) in meshes.items():
                    if check["relative_difference"] > VOLUME_TOLERANCE:
                        difference = 100 * check["relative_difference"]
                        warnings.append(f"{side} mesh volume differs from voxels by {difference:.0f} %")
                    group.add(plan[f"mesh_{side}"], lambda tmp, poly=poly: write_mesh(poly, tmp, atomic=False))
            if "png" in plan:
                from . import figures

                group.add(plan["png"], lambda tmp: figures.overlay_png(
                    image.array, result.labels, image.affine, tmp, title=name, atomic=False))
            if "json" in plan:
                summary = result.summary()
                summary.update(extra)
                summary["qc"]["warnings"] = list(summary["qc"].get("warnings", [])) + warnings
                summary["input"] = str(image.source)
                summary["outputs"] = {k: str(v) for k, v in plan.items()}
                text = json.dumps(summary, indent=1)
                group.add(plan["json"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
            group.commit()
    except OSError as exc:
        raise HippoSNNError(f"Cannot write the outputs of {name}: {exc.strerror or exc}") from None
    return warnings


def prepare_folder(out_dir: Path) -> bool:
    """Make sure ``out_dir`` is a writable folder (creating it, not its parents); True if it was created."""
    if out_dir.exists() and not out_dir.is_dir():
        raise HippoSNNError(f"Output {out_dir} is a file: give a folder")
    created = False
    if not out_dir.exists():
        if not out_dir.resolve().parent.is_dir():
            raise HippoSNNError(f"Cannot create output folder {out_dir}: its parent folder does not exist")
        try:
            out_dir.mkdir()
        except OSError as exc:
            raise HippoSNNError(f"Cannot create output folder {out_dir}: {exc.strerror or exc}") from None
        created = True
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise HippoSNNError(f"Output folder is not writable: {out_dir}")
    return created


def remove_if_empty(out_dir: Path) -> None:
    """Remove a folder the run created when nothing was written into it (a failed run leaves no trace)."""
    try:
        out_dir.rmdir()  # only succeeds on an empty folder
    except OSError:
        pass


def check_output_file(path: Path, overwrite: bool) -> Path:
    """Refuse, before any work, a single output file that is a folder, exists (without ``overwrite``) or
    cannot be created."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise HippoSNNError(f"Output {out} is a folder: give a file name")
    if out.exists() and not overwrite:
        raise HippoSNNError(f"Output {out} exists: pass --overwrite to replace it")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise HippoSNNError(f"Output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HippoSNNError(f"Output folder is not writable: {folder}")
    return out
