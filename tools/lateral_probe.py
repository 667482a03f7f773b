"""Is the lateral offset of our masks a placement bias or a protocol difference? (issue 11)

Our masks sat ~1.4 mm further from the midline than FreeSurfer's aseg. Two measurements separate the causes:

1. **Box shifts** on the FreeSurfer cases: each auto-placed box is moved medially or laterally by a few mm
   and the mask centroid is measured again. A network that had learnt "the hippocampus sits here in the
   box" would move its mask with the box (slope ~1); a network that segments the anatomy keeps it in
   place (slope ~0), and then the offset is what the network calls hippocampus, not where the box was.
2. **Within its own protocol**: on the held-out MSD validation crops the same signed lateral offset of the
   prediction against the MSD label. Near zero there and ~1 mm against aseg means the labels differ.

Usage: python tools/lateral_probe.py [--model ann|snn] [--shifts -4 -2 0 2 4] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from hipposnn import inference
from hipposnn.data import list_cases as list_crops
from hipposnn.inference import SegmentationSettings, segment_image
from hipposnn.io import load_image, read_volume
from hipposnn.pipeline import split_names

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_sets import centroid_ras, list_cases  # noqa: E402  (the evaluation's cases, label values, centroids)


def freesurfer_cases():
    return [c for c in list_cases(DATA, ["wholebrain"])["wholebrain"] if c.protocol == "FreeSurfer aseg"]


def _lateral_mm(ours: np.ndarray, label: np.ndarray, side: str) -> float:
    """Signed x offset of our centroid from the label's, > 0 = further from the midline (RAS: right is +x)."""
    return float((ours[0] - label[0]) * (1.0 if side == "right" else -1.0))


def box_shifts(model: str, shifts: List[float]) -> List[Dict]:
    rows = []
    original = inference.place_rois
    for case in freesurfer_cases():
        image = load_image(case.image)
        labels, _ = read_volume(case.labels)
        values = {"right": case.right, "left": case.left}
        truth = {side: centroid_ras(labels == value, image.affine) for side, value in values.items()}
        for shift in shifts:

            def shifted(*args, shift=shift, **kwargs):
                boxes = original(*args, **kwargs)
                for box in boxes:  # lateral = +x on the right, -x on the left
                    box.matrix = box.matrix.copy()
                    box.matrix[0, 3] += shift if box.side == "right" else -shift
                return boxes

            inference.place_rois = shifted
            try:
                result = segment_image(image, SegmentationSettings(model=model, twin_check=False, threads=2))
            finally:
                inference.place_rois = original
            for side, value in (("right", 1), ("left", 2)):
                ours = centroid_ras(result.labels == value, image.affine)
                rows.append({"case": case.id, "side": side, "box_shift_lateral_mm": shift,
                             "lateral_offset_mm": round(_lateral_mm(ours, truth[side], side), 3),
                             "volume_mm3": float(result.volumes_mm3[side])})
                print(f"{case.id:15s} {side:5s} shift {shift:+.0f} mm -> lateral offset "
                      f"{rows[-1]['lateral_offset_mm']:+.2f} mm", flush=True)
    return rows


def msd_offsets(model: str, data: Path) -> Dict:
    """Signed lateral offset on MSD validation crops, segmented as a user would (``--roi crop``).

    Axis 0 of an MSD crop runs lateral -> medial (roi.py mirrors the right side to match), so the lateral
    offset of our centroid is the label's axis-0 centroid minus ours (1 mm voxels).
    """
    _, val, _ = split_names(data, None, 5, 0)
    offsets, dice = [], []
    for name, image_path, label_path in list_crops(data):
        if name not in val:
            continue
        image = load_image(image_path)
        label = read_volume(label_path)[0] > 0
        result = segment_image(image, SegmentationSettings(roi="crop", model=model, twin_check=False, threads=2))
        ours = result.labels > 0
        if ours.any() and label.any():
            offsets.append(float(np.argwhere(label).mean(axis=0)[0] - np.argwhere(ours).mean(axis=0)[0]))
            dice.append(2.0 * float((ours & label).sum()) / float(ours.sum() + label.sum()))
    return {"cases": len(offsets), "lateral_offset_mm_mean": float(np.mean(offsets)),
            "lateral_offset_mm_sd": float(np.std(offsets)), "dice_3d_mean": float(np.mean(dice))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("ann", "snn"), default="ann")
    parser.add_argument("--shifts", type=float, nargs="+", default=[-4.0, -2.0, 0.0, 2.0, 4.0])
    parser.add_argument("--data", type=Path, default=DATA / "msd_hippocampus")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    rows = box_shifts(args.model, args.shifts)
    slopes = []
    for case in (c.id for c in freesurfer_cases()):
        for side in ("right", "left"):
            pts = [(r["box_shift_lateral_mm"], r["lateral_offset_mm"]) for r in rows
                   if r["case"] == case and r["side"] == side]
            if len(pts) > 1:
                slopes.append(float(np.polyfit(*zip(*pts), 1)[0]))
    at_zero = [r["lateral_offset_mm"] for r in rows if r["box_shift_lateral_mm"] == 0]
    report = {"model": args.model, "load_start": load, "rows": rows,
              "slope_mask_per_box_mm": {"mean": float(np.mean(slopes)), "min": float(np.min(slopes)),
                                        "max": float(np.max(slopes))},
              "lateral_offset_vs_aseg_mm_mean": float(np.mean(at_zero))}
    if args.data.is_dir():
        report["msd_validation"] = msd_offsets(args.model, args.data)
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
