"""Whole-brain evaluation on every labelled set of ../shared/data (docs/segmentation.md, "Evaluation").

One command scores the default pipeline (``segment_image``) on ``wholebrain/`` (5 cases: FreeSurfer
aseg, right 53 / left 17, and colin27 with AAL, 38 / 37) and on every ``external/<set>/`` (each
``<id>/t1.nii.gz`` + ``labels.nii.gz``, label values in ``<set>/labels.json``). Per hemisphere it records
Dice, our volume and the label's (ratio), box coverage of the labelled hippocampus, the distance from
the box centre to the label centroid, the offset of our mask centroid from the label centroid (RAS mm,
plus its signed lateral part: > 0 means our mask sits further from the midline), the QC verdict and
its reasons; per scan eTIV (when the pipeline reports one), the wall time of ``segment_image`` and,
with ``--cli``, of a fresh ``hipposnn segment`` process.

Outputs (``--out``, default docs/results/wholebrain_eval/; TAG = model[_coding]):
``raw_TAG.json`` (every case, machine load, git commit; rewritten atomically after each case, so
``--resume`` continues an interrupted run), ``table_TAG.md`` and ``table_TAG.csv`` (one row per set,
and per protocol where a set mixes them) and a figure (docs/figures/eval_sets_TAG.png by default).

    python tools/eval_sets.py                               # everything, default model (~15 s per scan)
    python tools/eval_sets.py --sets wholebrain --limit 2   # a quick look
    python tools/eval_sets.py --model ann --resume          # continue an interrupted ANN run

The label protocols (aseg, AAL, DLMUSE, LPBA40 manual) are not the MSD protocol the network learnt:
report Dice with the volume ratio and the centroid offsets, and never tune settings on these sets.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from hipposnn.atomicio import atomic_write, atomic_write_text
from hipposnn.options import MODEL_CHOICES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "docs" / "results" / "wholebrain_eval"
DEFAULT_FIGURES = ROOT / "docs" / "figures"
SIDES = ("right", "left")
OUR_LABELS = {"right": 1, "left": 2}
FAIL_DICE = 0.5  # a hemisphere below this Dice is a failure (issue 11)
GOOD_COVERAGE = 0.95

# wholebrain/ case -> (T1 file, label file, right label, left label, protocol); see ../shared/data/README.md
WHOLEBRAIN_CASES = {
    "fst-sub-01": ("T1.mgz", "aseg.mgz", 53, 17, "FreeSurfer aseg"),
    "fst-sub-02": ("T1.mgz", "aseg.mgz", 53, 17, "FreeSurfer aseg"),
    "bert": ("norm.mgz", "aseg.mgz", 53, 17, "FreeSurfer aseg"),
    "niivue-subject": ("norm.mgz", "aparc.a2009s+aseg.mgz", 53, 17, "FreeSurfer aseg"),
    "colin27": ("ch2.nii.gz", "aal.nii.gz", 38, 37, "AAL"),
}


@dataclass
class Case:
    """One labelled scan: ``key`` is ``set/id``."""

    set: str
    id: str
    image: str
    labels: str
    right: int
    left: int
    protocol: str

    @property
    def key(self) -> str:
        return f"{self.set}/{self.id}"


# ------------------------------------------------------------------------------------------------
# Finding the cases
# ------------------------------------------------------------------------------------------------


def available_sets(data: Path) -> List[str]:
    """``wholebrain`` (when present) and every ``external/<set>`` that has a ``labels.json``."""
    sets = []
    if (data / "wholebrain").is_dir():
        sets.append("wholebrain")
    external = data / "external"
    if external.is_dir():
        sets.extend(sorted(p.name for p in external.iterdir() if (p / "labels.json").is_file()))
    return sets


def list_cases(data: Path, sets: Sequence[str] | None = None, limit: int | None = None) -> Dict[str, List[Case]]:
    """The cases of each requested set (all sets by default), the first ``limit`` of each in name order."""
    known = available_sets(data)
    chosen = list(sets) if sets else known
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise SystemExit(f"unknown set(s) {', '.join(unknown)} under {data}: choose from {', '.join(known)}")
    out: Dict[str, List[Case]] = {}
    for name in chosen:
        cases: List[Case] = []
        if name == "wholebrain":
            for cid, (t1, lab, right, left, proto) in WHOLEBRAIN_CASES.items():
                folder = data / "wholebrain" / cid
                if (folder / t1).is_file() and (folder / lab).is_file():
                    cases.append(Case(name, cid, str(folder / t1), str(folder / lab), right, left, proto))
        else:
            root = data / "external" / name
            spec = json.loads((root / "labels.json").read_text())
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                if (folder / "t1.nii.gz").is_file() and (folder / "labels.nii.gz").is_file():
                    cases.append(Case(name, folder.name, str(folder / "t1.nii.gz"), str(folder / "labels.nii.gz"),
                                      int(spec["right"]), int(spec["left"]), str(spec.get("protocol", name))))
        out[name] = cases[:limit] if limit else cases
    return out


# ------------------------------------------------------------------------------------------------
# Scoring (shared with bench/bench_hippodeep.py)
# ------------------------------------------------------------------------------------------------


def load_labels(path: str | Path) -> Tuple[np.ndarray, np.ndarray]:
    """(integer label array in the file's voxel grid, voxel-to-RAS affine)."""
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asarray(img.dataobj)
    while array.ndim > 3:
        array = array[..., 0]
    return np.rint(array).astype(np.int32), np.asarray(img.affine, dtype=np.float64)


def centroid_ras(mask: np.ndarray, affine: np.ndarray) -> Optional[np.ndarray]:
    """RAS mm of the centroid of ``mask`` (None when empty)."""
    ijk = np.argwhere(mask)
    if ijk.size == 0:
        return None
    return affine[:3, :3] @ ijk.mean(axis=0) + affine[:3, 3]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def _r(v: Optional[float], nd: int = 4) -> Optional[float]:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _vec(v: Optional[np.ndarray]) -> Optional[List[float]]:
    return None if v is None else [round(float(x), 2) for x in v]


def score_hemisphere(
    pred: np.ndarray, truth: np.ndarray, other_truth: np.ndarray, affine: np.ndarray
) -> Dict[str, Any]:
    """Dice, volumes and centroid offsets of one predicted hemisphere against its label.

    ``lateral_offset_mm`` is the offset of our centroid along the line from the other hippocampus'
    label centroid to this one's: > 0 means our mask lies further from the midline than the label.
    """
    voxel = float(abs(np.linalg.det(affine[:3, :3])))
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    ours_c, truth_c = centroid_ras(pred, affine), centroid_ras(truth, affine)
    other_c = centroid_ras(other_truth, affine)
    vol, label_vol = float(pred.sum()) * voxel, float(truth.sum()) * voxel
    out: Dict[str, Any] = {
        "dice": _r(_dice(pred, truth)),
        "volume_mm3": round(vol, 1),
        "label_volume_mm3": round(label_vol, 1),
        "volume_ratio": _r(vol / label_vol) if label_vol else None,
        "mask_centroid_ras": _vec(ours_c),
        "label_centroid_ras": _vec(truth_c),
        "centroid_offset_ras": None,
        "centroid_distance_mm": None,
        "lateral_offset_mm": None,
    }
    if ours_c is not None and truth_c is not None:
        offset = ours_c - truth_c
        out["centroid_offset_ras"] = _vec(offset)
        out["centroid_distance_mm"] = _r(float(np.linalg.norm(offset)), 2)
        if other_c is not None and np.linalg.norm(truth_c - other_c) > 0:
            lateral = (truth_c - other_c) / np.linalg.norm(truth_c - other_c)
            out["lateral_offset_mm"] = _r(float(offset @ lateral), 2)
    return out


def failed_hemisphere(truth: np.ndarray, affine: np.ndarray, reason: str) -> Dict[str, Any]:
    """The record of a hemisphere the tool gave nothing for (an error): Dice 0, a failure."""
    voxel = float(abs(np.linalg.det(affine[:3, :3])))
    return {"dice": 0.0, "volume_mm3": 0.0, "label_volume_mm3": round(float(truth.sum()) * voxel, 1),
            "volume_ratio": 0.0, "error": reason}


# ------------------------------------------------------------------------------------------------
# Running HippoSNN on one case
# ------------------------------------------------------------------------------------------------


def load_stats() -> List[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - platforms without getloadavg
        return []


def _side_qc(result: Any, side: str) -> Tuple[str, List[str]]:
    """(quality, reasons) of one side: the per-side verdict where the pipeline gives one, else the overall."""
    qc = result.qc or {}
    per_side = (qc.get("sides") or {}).get(side) or {}
    quality = per_side.get("quality") or qc.get("quality") or "unknown"
    if per_side.get("quality") is not None:
        reasons = per_side.get("reasons") or []
    else:  # no per-side verdict: the overall one, with all its warnings
        reasons = qc.get("warnings") or []
    return str(quality), [str(r) for r in reasons]


def cli_seconds(case: Case, model: str, coding: str | None, threads: int, refine: bool = False,
                checkpoint: str | None = None) -> Tuple[float, int]:
    """Wall time (s) and exit code of a fresh ``hipposnn segment`` process on the case."""
    with tempfile.TemporaryDirectory(prefix="eval_cli_") as tmp:
        cmd = [sys.executable, "-c", "from hipposnn.cli import entry; entry()",
               "segment", case.image, "-o", tmp, "--quiet", "--json", "--model", model]
        if coding:
            cmd += ["--coding", coding]
        if refine:
            cmd.append("--refine")
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=thread_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return round(time.perf_counter() - t0, 2), int(proc.returncode)


def thread_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def evaluate_case(case: Case, model: str = "snn", coding: str | None = None, threads: int = 2,
                  cli: bool = False, refine: bool = False, checkpoint: str | None = None) -> Dict[str, Any]:
    """Segment one case with ``segment_image`` (default settings otherwise) and score both sides.

    ``checkpoint``: a weights file to run instead of ``model``'s shipped one (a candidate model).
    """
    from hipposnn.errors import HippoSNNError
    from hipposnn.inference import SegmentationSettings, roi_coverage, segment_image
    from hipposnn.io import load_image

    truth, label_affine = load_labels(case.labels)
    record: Dict[str, Any] = {"set": case.set, "id": case.id, "protocol": case.protocol, "image": case.image,
                              "labels": case.labels, "load_before": load_stats()}
    t0 = time.perf_counter()
    try:
        image = load_image(case.image)
        if tuple(image.shape) != tuple(truth.shape):
            raise ValueError(f"image {image.shape} and labels {truth.shape} are not on one grid")
        record["shape"] = list(image.shape)
        record["spacing_mm"] = [round(v, 3) for v in image.spacing]
        t1 = time.perf_counter()
        result = segment_image(image, SegmentationSettings(model=model, coding=coding, threads=threads,
                                                                refine=refine, checkpoint=checkpoint))
        record["seconds"] = round(time.perf_counter() - t1, 2)
        record["seconds_with_read"] = round(time.perf_counter() - t0, 2)
    except HippoSNNError as exc:
        record["seconds"] = round(time.perf_counter() - t0, 2)
        record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record["quality"] = "error"
        for side in SIDES:
            value = case.right if side == "right" else case.left
            rec = failed_hemisphere(truth == value, label_affine, record["error"])
            rec.update({"quality": "error", "reasons": [record["error"]]})
            record[side] = rec
        record["load_after"] = load_stats()
        return record
    affine = np.asarray(image.affine, dtype=np.float64)
    summary = result.summary()
    record.update({
        "quality": result.qc.get("quality"),
        "warnings": list(result.qc.get("warnings", [])),
        "registration_metric": _r(result.qc.get("registration_metric")),
        "etiv_mm3": summary.get("etiv_mm3"),
        "timings_s": summary.get("timings_s"),
        "qc": summary.get("qc"),
        "model_sha256": result.model_sha256,
        "settings": {k: summary["settings"].get(k) for k in ("model", "coding_used", "timesteps_used", "threads")},
    })
    for side in SIDES:
        value, other = (case.right, case.left) if side == "right" else (case.left, case.right)
        t = truth == value
        rec = score_hemisphere(result.labels == OUR_LABELS[side], t, truth == other, affine)
        box = next((b for b in result.boxes if b.side == side), None)
        label_c = centroid_ras(t, affine)
        if box is not None:
            centre = np.asarray(box.centre_ras, dtype=np.float64)
            rec["coverage"] = _r(roi_coverage(box, affine, t))
            rec["box_centre_ras"] = _vec(centre)
            if label_c is not None:
                rec["box_offset_ras"] = _vec(centre - label_c)
                rec["box_to_label_mm"] = _r(float(np.linalg.norm(centre - label_c)), 2)
        quality, reasons = _side_qc(result, side)
        rec["quality"], rec["reasons"] = quality, reasons
        record[side] = rec
    if cli:
        record["cli_seconds"], record["cli_exit"] = cli_seconds(case, model, coding, threads, refine, checkpoint)
    record["load_after"] = load_stats()
    return record


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------

COLUMNS = [
    "set", "protocol", "cases", "hemispheres", "dice_mean", "dice_median", "dice_min", "failures",
    "volume_ratio_mean", "volume_ratio_median", "dice_ceiling_from_volume_mean", "coverage_ge_095",
    "box_to_label_mm_median",
    "box_to_label_mm_max", "lateral_offset_mm_mean", "centroid_offset_r_mean", "centroid_offset_a_mean",
    "centroid_offset_s_mean", "qc_good", "qc_poor", "qc_other", "poor_among_failures", "poor_among_ok",
    "seconds_mean", "seconds_median", "cli_seconds_mean", "load1_mean",
]


def _num(values: Iterable[Any]) -> List[float]:
    return [float(v) for v in values if v is not None and np.isfinite(float(v))]


def _stat(fn: Callable[[List[float]], float], values: Iterable[Any], nd: int = 3) -> Optional[float]:
    vals = _num(values)
    return round(float(fn(vals)), nd) if vals else None


def dice_ceiling(volume_ratio: Optional[float]) -> Optional[float]:
    """Highest Dice any mask of our volume could reach against the label (ours inside theirs or the
    reverse): 2 min(r, 1) / (1 + r) for r = our volume / the label's. A protocol that labels more (or less)
    than the one the network learnt caps the Dice there, however well the mask is placed."""
    if volume_ratio is None or not np.isfinite(volume_ratio) or volume_ratio < 0:
        return None
    return 2.0 * min(volume_ratio, 1.0) / (1.0 + volume_ratio)


def summarise_group(name: str, protocol: str, records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One table row from case records (each with ``right`` / ``left`` hemisphere records)."""
    hemis = [r[s] for r in records for s in SIDES if s in r]
    dice = _num(h.get("dice") for h in hemis)
    fails = [h for h in hemis if (h.get("dice") or 0.0) < FAIL_DICE]
    oks = [h for h in hemis if (h.get("dice") or 0.0) >= FAIL_DICE]
    quality = [h.get("quality") for h in hemis]
    cov = _num(h.get("coverage") for h in hemis)
    offsets = [h.get("centroid_offset_ras") for h in hemis if h.get("centroid_offset_ras")]
    row: Dict[str, Any] = {
        "set": name, "protocol": protocol, "cases": len(records), "hemispheres": len(hemis),
        "dice_mean": _stat(np.mean, dice), "dice_median": _stat(np.median, dice), "dice_min": _stat(np.min, dice),
        "failures": len(fails),
        "volume_ratio_mean": _stat(np.mean, (h.get("volume_ratio") for h in hemis)),
        "volume_ratio_median": _stat(np.median, (h.get("volume_ratio") for h in hemis)),
        "dice_ceiling_from_volume_mean": _stat(np.mean, (dice_ceiling(h.get("volume_ratio")) for h in hemis)),
        "coverage_ge_095": round(sum(c >= GOOD_COVERAGE for c in cov) / len(cov), 3) if cov else None,
        "box_to_label_mm_median": _stat(np.median, (h.get("box_to_label_mm") for h in hemis), 1),
        "box_to_label_mm_max": _stat(np.max, (h.get("box_to_label_mm") for h in hemis), 1),
        "lateral_offset_mm_mean": _stat(np.mean, (h.get("lateral_offset_mm") for h in hemis), 2),
        "qc_good": sum(q == "good" for q in quality),
        "qc_poor": sum(q == "poor" for q in quality),
        "qc_other": sum(q not in ("good", "poor") for q in quality),
        "poor_among_failures": sum(h.get("quality") in ("poor", "error") for h in fails),
        "poor_among_ok": sum(h.get("quality") in ("poor", "error") for h in oks),
        "seconds_mean": _stat(np.mean, (r.get("seconds") for r in records), 2),
        "seconds_median": _stat(np.median, (r.get("seconds") for r in records), 2),
        "cli_seconds_mean": _stat(np.mean, (r.get("cli_seconds") for r in records), 2),
        "load1_mean": _stat(np.mean, ((r.get("load_before") or [None])[0] for r in records), 2),
    }
    for axis, label in enumerate("ras"):
        row[f"centroid_offset_{label}_mean"] = _stat(np.mean, (o[axis] for o in offsets), 2)
    return row


def summarise(records: Dict[str, Dict[str, Any]], order: Sequence[str] | None = None) -> List[Dict[str, Any]]:
    """Rows per set, plus one per protocol for a set that mixes protocols (wholebrain: aseg and AAL)."""
    by_set: Dict[str, List[Dict[str, Any]]] = {}
    for rec in records.values():
        by_set.setdefault(rec["set"], []).append(rec)
    names = [s for s in (order or []) if s in by_set] + sorted(s for s in by_set if s not in (order or []))
    rows = []
    for name in names:
        recs = by_set[name]
        protocols = sorted({r["protocol"] for r in recs})
        rows.append(summarise_group(name, " + ".join(protocols), recs))
        if len(protocols) > 1:
            for proto in protocols:
                rows.append(summarise_group(f"{name} [{proto}]", proto, [r for r in recs if r["protocol"] == proto]))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    """The per-set table as Markdown (a reader's selection of the CSV's columns)."""
    head = ("| set | cases | Dice mean / median / min | failures (Dice < 0.5) | volume ratio mean / median "
            "| coverage >= 0.95 | box to label mm median / max | lateral offset mm | QC good / poor "
            "| poor among failures | poor among Dice >= 0.5 | s per scan mean / median (CLI) | load |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ok = r["hemispheres"] - r["failures"]
        cli = f" ({_fmt(r['cli_seconds_mean'])})" if r.get("cli_seconds_mean") is not None else ""
        lines.append(
            f"| {r['set']} | {r['cases']} | {_fmt(r['dice_mean'])} / {_fmt(r['dice_median'])} / {_fmt(r['dice_min'])} "
            f"| {r['failures']} of {r['hemispheres']} "
            f"| {_fmt(r['volume_ratio_mean'])} / {_fmt(r['volume_ratio_median'])} "
            f"| {_fmt(r['coverage_ge_095'])} | {_fmt(r['box_to_label_mm_median'])} / {_fmt(r['box_to_label_mm_max'])} "
            f"| {_fmt(r['lateral_offset_mm_mean'])} | {r['qc_good']} / {r['qc_poor']}"
            f"{' (+' + str(r['qc_other']) + ' other)' if r['qc_other'] else ''} "
            f"| {r['poor_among_failures']} of {r['failures']} | {r['poor_among_ok']} of {ok} "
            f"| {_fmt(r['seconds_mean'])} / {_fmt(r['seconds_median'])}{cli} | {_fmt(r['load1_mean'])} |")
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[Dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Figure
# ------------------------------------------------------------------------------------------------


def plot(records: Dict[str, Dict[str, Any]], path: Path, title: str, order: Sequence[str] | None = None) -> None:
    """Dice per hemisphere per set (box + strip, failures red, QC-poor hollow) and the centroid offsets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_set: Dict[str, List[Dict[str, Any]]] = {}
    for rec in records.values():
        for side in SIDES:
            if side in rec:
                by_set.setdefault(rec["set"], []).append(rec[side])
    names = [s for s in (order or []) if s in by_set] + sorted(s for s in by_set if s not in (order or []))
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    panels = (("dice", "Dice vs the set's labels", (-0.02, 1.0)),
              ("box_to_label_mm", "box centre to label centroid (mm)", None),
              ("lateral_offset_mm", "mask vs label centroid, lateral (mm; > 0: more lateral)", None))
    for ax, (key, label, ylim) in zip(axes, panels):
        data = [[h.get(key) for h in by_set[n]] for n in names]
        clean = [_num(d) for d in data]
        ax.boxplot([c if c else [np.nan] for c in clean], positions=range(len(names)), widths=0.5,
                   showfliers=False, medianprops={"color": "black"})
        for i, hemis in enumerate(by_set[n] for n in names):
            for h in hemis:
                v = h.get(key)
                if v is None or not np.isfinite(float(v)):
                    continue
                fail = (h.get("dice") or 0.0) < FAIL_DICE
                poor = h.get("quality") in ("poor", "error")
                colour = "tab:red" if fail else "tab:blue"
                x = i + rng.uniform(-0.18, 0.18)
                if fail and not poor:  # a failure QC called good
                    ax.scatter(x, float(v), s=28, zorder=3, linewidths=1.2, c=colour, marker="x")
                else:
                    ax.scatter(x, float(v), s=22, zorder=3, linewidths=1.0, edgecolors=colour,
                               facecolors="none" if poor else colour, marker="o")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([f"{n}\n({len(by_set[n]) // 2 if len(by_set[n]) > 1 else len(by_set[n])} scans)"
                            for n in names], fontsize=8)
        ax.set_title(label, fontsize=9)
        if ylim:
            ax.set_ylim(*ylim)
        if key == "dice":
            ax.axhline(FAIL_DICE, color="tab:red", lw=0.8, ls="--")
        if key == "lateral_offset_mm":
            ax.axhline(0.0, color="grey", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].text(0.01, 0.01, "blue: Dice >= 0.5, red: < 0.5; hollow: QC poor; x: failure with QC good",
                 transform=axes[0].transAxes, fontsize=7, va="bottom")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda name: fig.savefig(name, dpi=110))
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Provenance, saving, main
# ------------------------------------------------------------------------------------------------


def git_state(root: Path = ROOT) -> Dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    # dirty_files: uncommitted changes of the package (the run used them, the commit does not hold them)
    return {"commit": run("rev-parse", "HEAD").strip() or None,
            "dirty_files": [line[3:] for line in run("status", "--porcelain", "--", "HippoSNN").splitlines() if line]}


def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_report(tool: str) -> Dict[str, Any]:
    """A probe's JSON report: which tool, the code, when it started and the machine's load then; ``cases`` empty."""
    return {"meta": {"tool": tool, "git": git_state(), "started": now(), "load_start": load_stats()}, "cases": {}}


def finish_report(report: Dict[str, Any], path: Optional[Path]) -> None:
    """Stamp the end time and load into ``report`` and write it to ``path`` (atomically), if given."""
    report["meta"].update({"finished": now(), "load_end": load_stats()})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(report, indent=1) + "\n")


def tag_of(model: str, coding: str | None, refine: bool = False) -> str:
    return model + (f"_{coding}" if coding else "") + ("_refine" if refine else "")


def write_outputs(
    raw: Dict[str, Any], out: Path, tag: str, figure: Optional[Path], order: Sequence[str]
) -> List[Dict[str, Any]]:
    """Raw JSON, Markdown + CSV tables and the figure; returns the table rows."""
    rows = summarise(raw["cases"], order)
    raw["table"] = rows
    atomic_write_text(out / f"raw_{tag}.json", json.dumps(raw, indent=1, default=float) + "\n")
    meta = raw["meta"]
    header = (f"<!-- tools/eval_sets.py {' '.join(meta['argv'])} | commit {meta['git']['commit']} | "
              f"{meta['started']} .. {meta.get('finished', 'running')} | load {meta['load_start']} .. "
              f"{meta.get('load_end')} on {meta['machine']['cpu_count']} cores -->\n")
    atomic_write_text(out / f"table_{tag}.md", header + table_markdown(rows))
    atomic_write_text(out / f"table_{tag}.csv", table_csv(rows))
    if figure is not None and raw["cases"]:
        plot(raw["cases"], figure, f"HippoSNN ({tag}) on the labelled whole-brain sets, commit "
             f"{(meta['git']['commit'] or '?')[:8]}", order)
    return rows


def _worker(args: Tuple[Case, str, Optional[str], int, bool, bool, Optional[str]]) -> Dict[str, Any]:
    return evaluate_case(*args)


def run(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    """Parse ``argv``, evaluate, write the outputs; returns the raw record (importable for tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="reference data folder (../shared/data)")
    parser.add_argument("--sets", nargs="+", default=None, help="default: all (wholebrain and every external set)")
    parser.add_argument("--limit", type=int, default=None, help="first N cases of each set (quick runs)")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="snn")
    parser.add_argument("--coding", choices=("binary", "ternary"), default=None, help="default: the model's")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--figure", type=Path, default=None,
                        help="figure path (default docs/figures/eval_sets_TAG.png, or OUT/ when --out is given)")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="cases in parallel (timings then mean less)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per case (default cores / jobs)")
    parser.add_argument("--cli", action="store_true", help="also time a fresh `hipposnn segment` process per case")
    parser.add_argument("--refine", action="store_true", help="recentre each box on a first ANN prediction "
                        "(segment --refine); outputs tagged _refine")
    parser.add_argument("--resume", action="store_true", help="keep the cases already in the raw JSON")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file to run instead of --model's shipped one (a candidate; give --out too)")
    args = parser.parse_args(argv)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")

    tag = tag_of(args.model, args.coding, args.refine)
    cases = list_cases(args.data, args.sets, args.limit)
    order = list(cases)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    figure = None if args.no_figure else (args.figure or (
        DEFAULT_FIGURES / f"eval_sets_{tag}.png" if args.out.resolve() == DEFAULT_OUT.resolve()
        else args.out / f"eval_sets_{tag}.png"))
    raw_path = args.out / f"raw_{tag}.json"
    raw: Dict[str, Any] = {"meta": {}, "cases": {}}
    if args.resume and raw_path.is_file():
        raw = json.loads(raw_path.read_text())
        previous = raw.get("meta", {}).get("settings", {})
        if previous and (previous.get("model"), previous.get("coding"), previous.get("refine", False),
                         previous.get("checkpoint")) != (args.model, args.coding, args.refine, args.checkpoint):
            raise SystemExit(f"{raw_path} holds model {previous.get('model')} / coding {previous.get('coding')} / "
                             f"refine {previous.get('refine', False)} / checkpoint {previous.get('checkpoint')}")
        raw.setdefault("runs", []).append({k: raw["meta"].get(k) for k in ("started", "finished", "git", "load_start",
                                                                            "load_end", "argv")})
    raw["meta"] = {
        "tool": "tools/eval_sets.py", "argv": list(sys.argv[1:] if argv is None else argv), "started": now(),
        "git": git_state(), "machine": machine(), "load_start": load_stats(),
        "settings": {"model": args.model, "coding": args.coding, "threads": threads, "jobs": args.jobs,
                     "cli": args.cli, "refine": args.refine,
                     "checkpoint": args.checkpoint, "fail_dice": FAIL_DICE, "coverage_good": GOOD_COVERAGE},
        "sets": {name: len(c) for name, c in cases.items()},
        "notes": "seconds: wall time of segment_image (model loading included, reading excluded); "
                 "cli_seconds: a fresh `hipposnn segment --json` process; load: os.getloadavg() before each case",
    }
    todo = [c for name in order for c in cases[name] if c.key not in raw["cases"]]
    skipped = sum(len(c) for c in cases.values()) - len(todo)
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"eval {tag}", unit="scan", file=sys.stderr, dynamic_ncols=True)
    if skipped:
        bar.write(f"resuming: {skipped} case(s) already in {raw_path}")

    def done(rec: Dict[str, Any]) -> None:
        raw["cases"][f"{rec['set']}/{rec['id']}"] = rec
        raw["meta"]["load_end"] = load_stats()
        write_outputs(raw, args.out, tag, None, order)
        d = "/".join(_fmt(rec[s].get("dice")) for s in SIDES)
        bar.set_postfix_str(f"{rec['set']}/{rec['id']} Dice R/L {d} {rec.get('seconds', 0):.1f}s")
        bar.update(1)

    if args.jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            settings = (args.model, args.coding, threads, args.cli, args.refine, args.checkpoint)
            futures = [pool.submit(_worker, (c, *settings)) for c in todo]
            for fut in as_completed(futures):
                done(fut.result())
    else:
        for case in todo:
            done(evaluate_case(case, args.model, args.coding, threads, args.cli, args.refine, args.checkpoint))
    bar.close()
    raw["meta"]["finished"] = now()
    raw["meta"]["load_end"] = load_stats()
    rows = write_outputs(raw, args.out, tag, figure, order)
    print(table_markdown(rows))
    print(f"raw: {raw_path}\ntables: {args.out / f'table_{tag}.md'}, {args.out / f'table_{tag}.csv'}"
          + (f"\nfigure: {figure}" if figure else ""))
    return raw


def main() -> None:
    run()


if __name__ == "__main__":
    main()

