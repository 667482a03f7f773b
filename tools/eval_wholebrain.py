"""Score the whole-brain pipeline on the labelled cases of ../shared/data/wholebrain (docs/segmentation.md).

For each case and model (SNN, ANN; default settings otherwise): ROI coverage of the labelled
hippocampus, Dice against the labels, volumes (ours and the labels'), registration metric. The labels
follow FreeSurfer aseg (right 53, left 17) or AAL (right 38, left 37), not the MSD protocol the
network learnt, so they are a development reference only.

Usage: python tools/eval_wholebrain.py [WHOLEBRAIN_DIR] [--coding binary|ternary] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from hipposnn.atomicio import atomic_write_text
from hipposnn.inference import SegmentationSettings, roi_coverage, segment_image
from hipposnn.io import load_image
from hipposnn.metrics import dice

ROOT = Path(__file__).resolve().parents[1]
# case -> (T1 file, label file, right label, left label)
CASES = {
    "fst-sub-01": ("T1.mgz", "aseg.mgz", 53, 17),
    "fst-sub-02": ("T1.mgz", "aseg.mgz", 53, 17),
    "bert": ("norm.mgz", "aseg.mgz", 53, 17),
    "niivue-subject": ("norm.mgz", "aparc.a2009s+aseg.mgz", 53, 17),
    "colin27": ("ch2.nii.gz", "aal.nii.gz", 38, 37),
}


def evaluate_case(folder: Path, t1: str, label_file: str, right: int, left: int, coding: str | None) -> dict:
    image = load_image(folder / t1)
    labels = np.asarray(nib.load(str(folder / label_file)).dataobj)
    voxel_mm3 = float(abs(np.linalg.det(image.affine[:3, :3])))
    out: dict = {}
    for model in ("snn", "ann"):
        result = segment_image(image, SegmentationSettings(model=model, coding=coding))
        row = {"registration_metric": result.qc.get("registration_metric"), "timings_s": result.timings}
        for side, value, ours in (("right", right, 1), ("left", left, 2)):
            truth = labels == value
            box = next(b for b in result.boxes if b.side == side)
            row[side] = {
                "coverage": roi_coverage(box, image.affine, truth),
                "dice": float(dice(result.labels == ours, truth)),
                "volume_mm3": float(result.volumes_mm3[side]),
                "label_volume_mm3": float(truth.sum()) * voxel_mm3,
            }
        out[model] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT.parent / "shared" / "data" / "wholebrain")
    parser.add_argument("--coding", choices=("binary", "ternary"), default=None, help="default: the shipped default")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    print("| case | coverage R / L | Dice SNN R / L | Dice ANN R / L | volume R / L (ours, mm^3) "
          "| volume R / L (labels) | registration metric |")
    print("|---|---|---|---|---|---|---|")
    for name, (t1, label_file, right, left) in CASES.items():
        folder = args.root / name
        if not folder.is_dir():
            print(f"(skipped {name}: {folder} not found)")
            continue
        r = results[name] = evaluate_case(folder, t1, label_file, right, left, args.coding)
        s, a = r["snn"], r["ann"]
        print(f"| {name} | {s['right']['coverage']:.3f} / {s['left']['coverage']:.3f} "
              f"| {s['right']['dice']:.3f} / {s['left']['dice']:.3f} "
              f"| {a['right']['dice']:.3f} / {a['left']['dice']:.3f} "
              f"| {s['right']['volume_mm3']:.0f} / {s['left']['volume_mm3']:.0f} "
              f"| {s['right']['label_volume_mm3']:.0f} / {s['left']['label_volume_mm3']:.0f} "
              f"| {s['registration_metric']:.2f} |", flush=True)
    if results:
        for model in ("snn", "ann"):
            for proto, names in (("aseg", [n for n in results if n != "colin27"]), ("all", list(results))):
                dice = [results[n][model][side]["dice"] for n in names for side in ("right", "left")]
                print(f"mean Dice {model.upper()} ({proto}, {len(dice)} hippocampi): {np.mean(dice):.3f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
