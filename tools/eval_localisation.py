"""Localisation only: box centre vs labelled hippocampus centroid, and box coverage, on every labelled set.

Runs just the ROI placement (registration, ~2 s a scan) of ``hipposnn.roi`` on ../shared/data/wholebrain and
../shared/data/external, so a change to the registration can be judged on all 55 scans in minutes.
Writes a raw JSON (one row per scan: per side the distance in mm, the offset vector in RAS, the coverage,
the registration's quality) and prints per-set summaries.

Usage: python tools/eval_localisation.py [--sets wholebrain ixi_nichart lpba40] [--json OUT.json]
Before/after of issue 11 (docs/results/localisation/):
  python tools/eval_localisation.py --json docs/results/localisation/after.json
  git worktree add /tmp/old8cb 8cbf740 && PYTHONPATH=/tmp/old8cb/HippoSNN \
      python tools/eval_localisation.py --json docs/results/localisation/before_8cbf740.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from hipposnn import roi
from hipposnn.inference import AUTO_ROI_SHAPE, roi_coverage
from hipposnn.io import load_image

try:
    from hipposnn.io import read_volume
except ImportError:  # older code (the "before" measurement at commit 8cbf740): same array as stored
    import nibabel

    def read_volume(path):
        image = nibabel.load(str(path))
        return np.asarray(image.dataobj), image.affine

# The case list repeats tools/eval_sets.py's on purpose: this script also runs against the package of older
# commits (the "before" measurement), which eval_sets' imports (hipposnn.atomicio, ...) do not exist in.
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WHOLEBRAIN = {"fst-sub-01": ("T1.mgz", "aseg.mgz", 53, 17), "fst-sub-02": ("T1.mgz", "aseg.mgz", 53, 17),
              "bert": ("norm.mgz", "aseg.mgz", 53, 17),
              "niivue-subject": ("norm.mgz", "aparc.a2009s+aseg.mgz", 53, 17),
              "colin27": ("ch2.nii.gz", "aal.nii.gz", 38, 37)}


def cases(sets):
    for name in sets:
        if name == "wholebrain":
            for case, (t1, lab, right, left) in WHOLEBRAIN.items():
                folder = DATA / "wholebrain" / case
                if folder.is_dir():
                    yield name, case, folder / t1, folder / lab, {"right": right, "left": left}
            continue
        root = DATA / "external" / name
        if not root.is_dir():
            continue
        values = json.loads((root / "labels.json").read_text())
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            yield name, folder.name, folder / "t1.nii.gz", folder / "labels.nii.gz", values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["wholebrain", "ixi_nichart", "lpba40"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for set_name, case, t1, lab, values in cases(args.sets):
        image = load_image(t1)
        labels, _ = read_volume(lab)
        start = time.perf_counter()
        registration = roi.register_to_template(image)
        boxes = roi.place_rois(image, "both", "auto", AUTO_ROI_SHAPE, registration)
        row = {"set": set_name, "case": case, "seconds": time.perf_counter() - start, "load": os.getloadavg()[0],
               "global_det": float(np.linalg.det(registration.global_matrix[:3, :3])),
               "local_det": {side: float(np.linalg.det(m[:3, :3])) for side, m in registration.local_matrices.items()},
               "global_metric": float(registration.metric)}
        for box in boxes:
            truth = labels == values[box.side]
            centroid = image.affine[:3, :3] @ np.argwhere(truth).mean(axis=0) + image.affine[:3, 3]
            offset = box.centre_ras - centroid
            quality = (getattr(box, "qc", None) or {}).get("quality")
            row[box.side] = {"distance_mm": float(np.linalg.norm(offset)), "offset_ras_mm": offset.round(2).tolist(),
                             "coverage": roi_coverage(box, image.affine, truth), "quality": quality}
        rows.append(row)
        print(f"{set_name:12s} {case:16s} R {row['right']['distance_mm']:5.1f} mm cov {row['right']['coverage']:.2f}"
              f"  L {row['left']['distance_mm']:5.1f} mm cov {row['left']['coverage']:.2f}", flush=True)
    for set_name in args.sets:
        sides = [r[s] for r in rows if r["set"] == set_name for s in ("right", "left")]
        if not sides:
            continue
        d = np.array([s["distance_mm"] for s in sides])
        c = np.array([s["coverage"] for s in sides])
        print(f"{set_name}: {len(d)} hemispheres, distance mean {d.mean():.1f} max {d.max():.1f} mm, > 15 mm: "
              f"{int((d > 15).sum())}, coverage >= 0.95: {(c >= 0.95).mean():.3f}")
    if args.json:
        args.json.write_text(json.dumps({"commit_note": "see git log for the code version", "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
