"""Stress evaluation: the whole-brain pipeline on labelled scans made harder in controlled ways (issue 11).

Issue 11 asks for localisation and segmentation that hold "whatever the input: ... 1-3 mm voxels, any
orientation or storage order, bias field". ``tools/eval_sets.py`` measures the scans as they come; this tool
takes a subset of them and changes one thing at a time, in the image *and* its labels alike, so that every
change is scored against the same anatomy:

- ``storage_order``: voxel axes permuted and one flipped, the affine rewritten to match (the same image in
  world space: the result should not change beyond interpolation);
- ``pitch_20``: the head pitched 20 degrees (nose down) about the left-right axis through the volume
  centre (the affine rotated; the data untouched);
- ``thick_axial_3mm`` / ``thick_axial_5mm``: slices 3 or 5 mm thick along the voxel axis closest to
  superior-inferior (Gaussian slice profile whose FWHM is the new thickness, then linear resampling);
- ``iso_3mm``: 3 mm voxels in all three axes (same blur model);
- ``bias_field``: a smooth multiplicative field, x0.73 .. x1.62 from corner to corner of the volume;
- ``noise``: Rician noise, sigma 4 % of the 99th percentile of the non-zero voxels;
- ``vertex_cut``: the top 20 % of the head's superior-inferior extent cropped away (a small field of view).

Labels follow the image: resampled per hippocampus as a linear-interpolated indicator thresholded at 0.5 (so
a 5 mm grid's label is that grid's best estimate of the same structure), permuted and cropped with it. The
pipeline runs with default settings (``segment_image``) and is scored by ``tools/eval_sets.py``'s functions.

Outputs (``--out``, default docs/results/stress/): ``raw.json`` (every case and condition, git commit and
machine load; rewritten atomically after each run, so ``--resume`` continues), ``table.md`` / ``table.csv``
(per condition and set: mean, paired change against the unchanged scan, minimum, failures, coverage, QC) and
a figure (``--figure``, default docs/figures/stress_eval.png).

    python tools/eval_stress.py                           # 4 FreeSurfer + 8 IXI + 4 LPBA40 scans, 9 conditions
    python tools/eval_stress.py --conditions none thick_axial_5mm --limit 2 --out /tmp/stress
    python tools/eval_stress.py --report --before docs/results/stress/before_94f6f2d/raw.json   # figure with a before
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_sets as ev  # noqa: E402  (tools/eval_sets.py: case lists, scoring, machine state)
from hipposnn.atomicio import atomic_write_text  # noqa: E402

DEFAULT_OUT = ev.ROOT / "docs" / "results" / "stress"
DEFAULT_FIGURE = ev.DEFAULT_FIGURES / "stress_eval.png"
DEFAULT_LIMITS = {"wholebrain": 4, "ixi_nichart": 8, "lpba40": 4}
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

Volume = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image (i, j, k), label map, voxel-to-RAS affine


# ------------------------------------------------------------------------------------------------
# Geometry helpers
# ------------------------------------------------------------------------------------------------


def axis_along(affine: np.ndarray, ras_axis: int) -> int:
    """Index of the voxel axis whose direction is closest to world axis ``ras_axis`` (0 R, 1 A, 2 S)."""
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(cols[ras_axis])))


def resample_to_spacing(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                        values: Sequence[int]) -> Volume:
    """The same field of view on a grid of ``spacing`` (mm per voxel axis), with a thick-slice blur.

    The image is blurred with a Gaussian whose FWHM makes up the difference between the old and the new voxel
    size (sqrt(new^2 - old^2) per axis: a slice profile as wide as the new voxel) and resampled linearly; each
    label in ``values`` is resampled as an indicator and thresholded at 0.5.
    """
    import SimpleITK as sitk
    from hipposnn.io import from_sitk, to_sitk

    img = to_sitk(image.astype(np.float32), affine)
    old = np.asarray(img.GetSpacing(), dtype=np.float64)
    new = np.asarray(spacing, dtype=np.float64)
    sigma = np.sqrt(np.clip(new ** 2 - old ** 2, 0.0, None)) * FWHM_TO_SIGMA
    if np.any(sigma > 0):
        img = sitk.DiscreteGaussian(img, variance=[float(max(s, 1e-3) ** 2) for s in sigma],
                                    maximumKernelWidth=64, maximumError=0.01, useImageSpacing=True)
    size = [int(np.ceil(n * o / s)) for n, o, s in zip(img.GetSize(), old, new)]
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    origin = np.asarray(img.GetOrigin()) + direction @ ((new - old) / 2.0)

    def resample(src: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
        return from_sitk(sitk.Resample(src, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), new.tolist(),
                                       direction.ravel().tolist(), 0.0, sitk.sitkFloat32))

    new_image, new_affine = resample(img)
    new_labels = np.zeros(new_image.shape, dtype=np.int16)
    for value in values:
        indicator, _ = resample(to_sitk((labels == value).astype(np.float32), affine))
        new_labels[indicator >= 0.5] = value
    return new_image, new_labels, new_affine


# ------------------------------------------------------------------------------------------------
# The conditions
# ------------------------------------------------------------------------------------------------


def _none(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, values: Sequence[int], seed: int) -> Volume:
    return image, labels, affine


def _storage_order(image, labels, affine, values, seed) -> Volume:
    # new[a, b, c] = old[b, c, n - 1 - a]: axes cycled and the new first axis reversed.
    n = image.shape[2]

    def reorder(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.flip(np.transpose(a, (2, 0, 1)), axis=0))

    new_to_old = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, n - 1], [0, 0, 0, 1]], dtype=np.float64)
    return reorder(image), reorder(labels), affine @ new_to_old


def _pitch(degrees: float) -> Callable[..., Volume]:
    def apply(image, labels, affine, values, seed) -> Volume:
        theta = np.deg2rad(degrees)
        rot = np.eye(4)
        rot[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
        centre = affine[:3, :3] @ ((np.asarray(image.shape) - 1) / 2.0) + affine[:3, 3]
        shift, back = np.eye(4), np.eye(4)
        shift[:3, 3], back[:3, 3] = -centre, centre
        return image, labels, back @ rot @ shift @ affine
    return apply


def _thick(ras_axis: Optional[int], mm: float) -> Callable[..., Volume]:
    def apply(image, labels, affine, values, seed) -> Volume:
        spacing = np.linalg.norm(affine[:3, :3], axis=0).astype(np.float64)
        if ras_axis is None:
            spacing = np.maximum(spacing, mm)
        else:
            axis = axis_along(affine, ras_axis)
            spacing[axis] = max(spacing[axis], mm)
        return resample_to_spacing(image, labels, affine, spacing, values)
    return apply


def _unit_grid(shape: Sequence[int]) -> List[np.ndarray]:
    return np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)


def _bias_field(image, labels, affine, values, seed) -> Volume:
    u, v, w = _unit_grid(image.shape)
    log_field = 0.3 * (0.8 * u - 0.5 * v * w + 0.4 * w * w - 0.1)
    return image.astype(np.float32) * np.exp(log_field).astype(np.float32), labels, affine


def _bright(data: np.ndarray) -> float:
    """The 99th percentile of the non-zero voxels (0 for an empty image): the scale noise and head are set by."""
    positive = data[data > 0]
    return float(np.percentile(positive, 99)) if positive.size else 0.0


def _noise(image, labels, affine, values, seed) -> Volume:
    rng = np.random.default_rng(seed)
    data = image.astype(np.float32)
    sigma = 0.04 * _bright(data)
    noisy = np.sqrt((data + rng.normal(0.0, sigma, data.shape)) ** 2 + rng.normal(0.0, sigma, data.shape) ** 2)
    return noisy.astype(np.float32), labels, affine


def _vertex_cut(image, labels, affine, values, seed) -> Volume:
    axis = axis_along(affine, 2)
    up = np.sign(affine[2, axis])  # +1 when the index grows superiorly
    data = image.astype(np.float32)
    head = data > 0.1 * _bright(data)
    other = tuple(a for a in range(3) if a != axis)
    rows = np.flatnonzero(head.any(axis=other))
    if rows.size == 0:
        return image, labels, affine
    cut = int(round(0.2 * (rows[-1] - rows[0] + 1)))
    keep = slice(0, rows[-1] + 1 - cut) if up > 0 else slice(rows[0] + cut, image.shape[axis])
    index = [slice(None)] * 3
    index[axis] = keep
    new_affine = affine.copy()
    start = np.zeros(3)
    start[axis] = keep.start or 0
    new_affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return np.ascontiguousarray(image[tuple(index)]), np.ascontiguousarray(labels[tuple(index)]), new_affine


CONDITIONS: Dict[str, Tuple[Callable[..., Volume], str]] = {
    "none": (_none, "the scan as it comes"),
    "storage_order": (_storage_order, "voxel axes permuted and one flipped, affine rewritten (same world image)"),
    "pitch_20": (_pitch(20.0), "head pitched 20 degrees about the left-right axis (affine rotated)"),
    "thick_axial_3mm": (_thick(2, 3.0), "3 mm slices along the axis closest to S (slice-profile blur)"),
    "thick_axial_5mm": (_thick(2, 5.0), "5 mm slices along the axis closest to S (slice-profile blur)"),
    "iso_3mm": (_thick(None, 3.0), "3 mm voxels on every axis (blur as for thick slices)"),
    "bias_field": (_bias_field, "smooth multiplicative field, x0.73 .. x1.62 corner to corner"),
    "noise": (_noise, "Rician noise, sigma 4 % of the 99th percentile of non-zero voxels"),
    "vertex_cut": (_vertex_cut, "top 20 % of the head's S extent cropped away"),
}


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def perturbed_case(case: ev.Case, condition: str, folder: Path) -> Tuple[ev.Case, Dict[str, Any]]:
    """Write the case's image and labels under ``condition`` into ``folder``; the new case and a note."""
    import nibabel as nib
    from hipposnn.io import read_volume

    image, affine = read_volume(case.image)
    labels, label_affine = ev.load_labels(case.labels)
    if not np.allclose(affine, label_affine, atol=1e-3):
        raise SystemExit(f"{case.key}: image and labels have different affines")
    values = (case.right, case.left)
    labels = np.where(np.isin(labels, values), labels, 0).astype(np.int16)
    seed = zlib.crc32(f"{case.key}/{condition}".encode())
    fn = CONDITIONS[condition][0]
    new_image, new_labels, new_affine = fn(np.asarray(image), labels, affine, values, seed)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(new_image, dtype=np.float32), new_affine), str(folder / "t1.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(new_labels, dtype=np.int16), new_affine), str(folder / "labels.nii.gz"))
    note = {"shape": list(new_image.shape),
            "spacing_mm": [round(float(s), 3) for s in np.linalg.norm(new_affine[:3, :3], axis=0)]}
    return ev.Case(case.set, case.id, str(folder / "t1.nii.gz"), str(folder / "labels.nii.gz"),
                   case.right, case.left, case.protocol), note


def summarise(runs: Dict[str, Dict[str, Any]], conditions: Sequence[str], sets: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per condition and set; the change in Dice is paired with the same hemispheres unchanged."""
    rows = []
    for condition in conditions:
        for name in sets:
            recs = {k: r for k, r in runs.get(condition, {}).items() if r["set"] == name}
            if not recs:
                continue
            row = ev.summarise_group(name, " + ".join(sorted({r["protocol"] for r in recs.values()})),
                                     list(recs.values()))
            base = runs.get("none", {})
            deltas = [r[s]["dice"] - base[k][s]["dice"] for k, r in recs.items() if k in base for s in ev.SIDES
                      if r[s].get("dice") is not None and base[k][s].get("dice") is not None]
            row["condition"] = condition
            row["dice_change_mean"] = round(float(np.mean(deltas)), 3) if deltas else None
            row["dice_change_min"] = round(float(np.min(deltas)), 3) if deltas else None
            row["errors"] = sum("error" in r for r in recs.values())
            rows.append(row)
    return rows


TABLE_COLUMNS = [("condition", "condition"), ("set", "set"), ("hemispheres", "hemispheres"),
                 ("dice_mean", "Dice mean"), ("dice_change_mean", "change vs unchanged"),
                 ("dice_change_min", "worst change"), ("dice_min", "Dice min"), ("failures", "Dice < 0.5"),
                 ("coverage_ge_095", "coverage >= 0.95"), ("volume_ratio_mean", "volume ratio"),
                 ("poor_among_failures", "failures flagged poor"), ("poor_among_ok", "good results flagged poor"),
                 ("errors", "errors"), ("seconds_mean", "s per scan")]


def table_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    head = "| " + " | ".join(t for _, t in TABLE_COLUMNS) + " |\n|" + "---|" * len(TABLE_COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(ev._fmt(r.get(k)) for k, _ in TABLE_COLUMNS) + " |\n" for r in rows)


def table_csv(rows: Sequence[Dict[str, Any]]) -> str:
    return ev.table_csv(rows, [k for k, _ in TABLE_COLUMNS])


def plot(runs: Dict[str, Dict[str, Any]], conditions: Sequence[str], sets: Sequence[str], path: Path,
         title: str, before: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
    """Dice per hemisphere by condition, one panel per set; failures in red, QC-poor hollow.

    ``before``: the runs of an earlier evaluation (another model or code) drawn behind, in grey, so that
    what changed is seen per condition.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sets), 1, figsize=(1.1 * len(conditions) + 2.5, 2.6 * len(sets)), squeeze=False)
    for ax, name in zip(axes[:, 0], sets):
        for x, condition in enumerate(conditions):
            recs = [r for r in runs.get(condition, {}).values() if r["set"] == name]
            hemis = [r[s] for r in recs for s in ev.SIDES]
            dice = np.array([h.get("dice") or 0.0 for h in hemis])
            if not dice.size:
                continue
            old = [r[s].get("dice") or 0.0 for r in (before or {}).get(condition, {}).values() if r["set"] == name
                   for s in ev.SIDES]
            if old:
                ax.scatter(x - 0.12 + np.linspace(-0.12, 0.12, len(old)), old, s=9, c="0.65", marker="x", zorder=2)
                ax.hlines(np.mean(old), x - 0.35, x + 0.35, colors="0.55", lw=1.2, ls="--", zorder=2)
            poor = np.array([h.get("quality") in ("poor", "error") for h in hemis])
            jitter = x + np.linspace(-0.25, 0.25, dice.size)
            colour = np.where(dice < ev.FAIL_DICE, "tab:red", "tab:blue")
            ax.scatter(jitter[~poor], dice[~poor], s=12, c=colour[~poor], zorder=3)
            ax.scatter(jitter[poor], dice[poor], s=18, facecolors="none", edgecolors=colour[poor], zorder=3)
            ax.hlines(dice.mean(), x - 0.35, x + 0.35, colors="k", lw=1.5, zorder=4)
        ax.axhline(ev.FAIL_DICE, color="tab:red", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"{name}\nDice")
        ax.set_xticks(range(len(conditions)))
        ax.set_xticklabels(conditions, rotation=20, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(raw: Dict[str, Any], out: Path, figure: Optional[Path],
                  before: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    conditions, sets = raw["meta"]["conditions"], raw["meta"]["set_order"]
    rows = summarise(raw["runs"], conditions, sets)
    raw["table"] = rows
    atomic_write_text(out / "raw.json", json.dumps(raw, indent=1, default=float) + "\n")
    meta = raw["meta"]
    header = (f"<!-- tools/eval_stress.py {' '.join(meta['argv'])} | commit {meta['git']['commit']} | "
              f"{meta['started']} .. {meta.get('finished', 'running')} | load {meta['load_start']} .. "
              f"{meta.get('load_end')} on {meta['machine']['cpu_count']} cores -->\n")
    atomic_write_text(out / "table.md", header + table_markdown(rows))
    atomic_write_text(out / "table.csv", table_csv(rows))
    if figure is not None and raw["runs"]:
        title = (f"HippoSNN ({meta['settings']['model']}) on scans made harder, commit "
                 f"{(meta['git']['commit'] or '?')[:8]}")
        if before is not None:
            title += f"; grey x and dashed mean: commit {(before['meta']['git']['commit'] or '?')[:8]}"
        plot(raw["runs"], conditions, sets, figure, title, before["runs"] if before is not None else None)
    return rows


def run(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    """Parse ``argv``, run every (case, condition), write the outputs; returns the raw record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA, help="reference data folder (../shared/data)")
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_LIMITS), help="sets to draw scans from")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N scans of each set (default: 4 FreeSurfer-aseg, 8 IXI, 4 LPBA40)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--model", choices=ev.MODEL_CHOICES, default="snn")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file to run instead of --model's shipped one (a candidate; give --out too)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--figure", type=Path, default=None, help=f"default {DEFAULT_FIGURE} (or OUT/ with --out)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in OUT/raw.json")
    parser.add_argument("--before", type=Path, default=None,
                        help="raw.json of an earlier run, drawn behind in grey in the figure")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables and figure from OUT/raw.json")
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text()) if args.before else None
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")

    available = ev.list_cases(args.data, args.sets)
    cases: Dict[str, List[ev.Case]] = {}
    for name, found in available.items():
        if name == "wholebrain":  # the aseg cases: colin27's AAL label is another structure's protocol
            found = [c for c in found if c.protocol == "FreeSurfer aseg"]
        cases[name] = found[: args.limit or DEFAULT_LIMITS.get(name, 4)]
    conditions = ["none"] + [c for c in args.conditions if c != "none"]
    figure = args.figure or (DEFAULT_FIGURE if args.out.resolve() == DEFAULT_OUT.resolve()
                             else args.out / "stress_eval.png")
    raw_path = args.out / "raw.json"
    if args.report:
        if not raw_path.is_file():
            parser.error(f"--report: {raw_path} not found")
        raw = json.loads(raw_path.read_text())
        rows = write_outputs(raw, args.out, figure, before)
        print(table_markdown(rows))
        return raw
    raw: Dict[str, Any] = {"runs": {}}
    if args.resume and raw_path.is_file():
        raw = json.loads(raw_path.read_text())
        held = raw["meta"]["settings"]
        if (held["model"], held.get("checkpoint")) != (args.model, args.checkpoint):
            raise SystemExit(f"{raw_path} holds model {held['model']} / checkpoint {held.get('checkpoint')}")
    raw["meta"] = {
        "tool": "tools/eval_stress.py", "argv": list(sys.argv[1:] if argv is None else argv), "started": ev.now(),
        "git": ev.git_state(), "machine": ev.machine(), "load_start": ev.load_stats(),
        "settings": {"model": args.model, "checkpoint": args.checkpoint, "threads": args.threads},
        "conditions": conditions,
        "descriptions": {c: CONDITIONS[c][1] for c in conditions},
        "set_order": list(cases), "cases": {name: [c.id for c in cs] for name, cs in cases.items()},
    }
    todo = [(cond, case) for cond in conditions for name in cases for case in cases[name]
            if case.key not in raw["runs"].get(cond, {})]
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="stress", unit="run", file=sys.stderr, dynamic_ncols=True)
    with tempfile.TemporaryDirectory(prefix="hipposnn_stress_") as tmp:
        for cond, case in todo:
            folder = Path(tmp) / cond / case.set / case.id
            changed, note = perturbed_case(case, cond, folder)
            rec = ev.evaluate_case(changed, args.model, None, args.threads, checkpoint=args.checkpoint)
            # the record names the unchanged files (the changed ones lived in a temporary folder)
            rec.update({"condition": cond, "image": case.image, "labels": case.labels,
                        **{f"input_{k}": v for k, v in note.items()}})
            raw["runs"].setdefault(cond, {})[case.key] = rec
            raw["meta"]["load_end"] = ev.load_stats()
            write_outputs(raw, args.out, None)
            for path in folder.iterdir():
                path.unlink()
            d = "/".join(ev._fmt(rec[s].get("dice")) for s in ev.SIDES)
            bar.set_postfix_str(f"{cond} {case.key} Dice R/L {d}")
            bar.update(1)
    bar.close()
    raw["meta"]["finished"] = ev.now()
    raw["meta"]["load_end"] = ev.load_stats()
    rows = write_outputs(raw, args.out, figure, before)
    print(table_markdown(rows))
    print(f"raw: {raw_path}\ntables: {args.out / 'table.md'}, {args.out / 'table.csv'}\nfigure: {figure}")
    return raw


if __name__ == "__main__":
    run()
