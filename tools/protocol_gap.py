"""How much of the Dice gap to another label protocol is a systematic offset: our masks moved by the set's mean offset.

Why: on whole brains our masks lie ~1.1-1.5 mm further from the midline than aseg's and DLMUSE's labels, while on the
MSD crops they lie +0.09 mm from the MSD labels (docs/segmentation.md, "Is the lateral offset placement or
protocol?"), so the offset is what the MSD protocol calls hippocampus, not a placement error. Issue 11 asks what part
of the remaining gap to hippodeep is protocol. This tool measures one part: per hemisphere, our default mask is moved
by the mean centroid offset (ours minus the label's) of the *other* hemispheres of its set and protocol (leave one
out, so no hemisphere is corrected by its own offset), in a frame mirrored so that +x is lateral on both sides, and
scored again. The Dice it gains is what a protocol's systematic displacement costs; what stays is shape. Beside it,
how the two overlap: the share of our mask inside the label and of the label inside our mask.

    python tools/protocol_gap.py --peer docs/results/hippodeep_bench/all_sets_readout/raw.json \
        --json docs/results/protocol_gap/protocol_gap.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_sets as ev  # noqa: E402

#: +x of RAS points to the subject's right: a right hippocampus' lateral is +x, a left one's -x.
LATERAL_SIGN = {"right": 1.0, "left": -1.0}


def mirrored(offset_ras: Sequence[float], side: str) -> np.ndarray:
    """An RAS offset in the frame whose +x is lateral (away from the midline) for ``side``; its own inverse."""
    return np.asarray(offset_ras, dtype=np.float64) * np.array([LATERAL_SIGN[side], 1.0, 1.0])


def shifted(mask: np.ndarray, affine: np.ndarray, shift_ras: Sequence[float]) -> np.ndarray:
    """``mask`` (voxel grid of ``affine``) moved by ``shift_ras`` mm, linearly interpolated and cut at 0.5."""
    import SimpleITK as sitk

    voxels = np.linalg.solve(np.asarray(affine, dtype=np.float64)[:3, :3], np.asarray(shift_ras, dtype=np.float64))
    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.float32))  # numpy axes (i, j, k) are ITK (z, y, x)
    # the resampled image at point p reads the input at p + offset: moving the mask by v reads it at p - v
    move = sitk.TranslationTransform(3, [float(-v) for v in voxels[::-1]])
    out = sitk.Resample(image, image, move, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out) > 0.5


def segment_case(case: ev.Case) -> List[Dict[str, Any]]:
    """Both hemispheres of ``case``: our default mask, its label, Dice and centroid offset (ours minus label)."""
    from hipposnn.inference import SegmentationSettings, segment_image
    from hipposnn.io import load_image

    truth, _ = ev.load_labels(case.labels)
    image = load_image(case.image)
    affine = np.asarray(image.affine, dtype=np.float64)
    result = segment_image(image, SegmentationSettings())
    rows = []
    for side in ev.SIDES:
        label = truth == (case.right if side == "right" else case.left)
        ours = result.labels == ev.OUR_LABELS[side]
        c_ours, c_label = ev.centroid_ras(ours, affine), ev.centroid_ras(label, affine)
        offset = None if c_ours is None or c_label is None else mirrored(c_ours - c_label, side)
        both = int((ours & label).sum())
        where = {}  # where our extra voxels and the label's missed ones lie, from the label's centroid (mirrored)
        for name, part in (("extra", ours & ~label), ("missed", label & ~ours)):
            c_part = ev.centroid_ras(part, affine)
            where[name] = None if c_part is None or c_label is None else mirrored(c_part - c_label, side)
        rows.append({"key": f"{case.key}/{side}", "group": f"{case.set} [{case.protocol}]", "side": side,
                     "ours": ours, "label": label, "affine": affine, "dice": ev._dice(ours, label),
                     "offset_mirrored_mm": offset,
                     # how our mask and the label overlap: a mask inside a larger label scores high on the first
                     "ours_inside_label": both / max(1, int(ours.sum())),
                     "label_inside_ours": both / max(1, int(label.sum())),
                     "extra_centroid_mirrored_mm": where["extra"], "missed_centroid_mirrored_mm": where["missed"]})
    return rows


def leave_one_out_shifts(rows: Sequence[Dict[str, Any]]) -> List[Optional[np.ndarray]]:
    """Per row, the mean mirrored offset of the other rows of its group (None where there is none)."""
    out = []
    for i, row in enumerate(rows):
        others = [r["offset_mirrored_mm"] for j, r in enumerate(rows)
                  if j != i and r["group"] == row["group"] and r["offset_mirrored_mm"] is not None]
        out.append(np.mean(others, axis=0) if others else None)
    return out


def _mean_vector(vectors: Any) -> Optional[List[float]]:
    present = [v for v in vectors if v is not None]
    return ev._vec(np.mean(present, axis=0)) if present else None


def peer_overlap(raw: Dict[str, Any], group: str, tool: str = "hippodeep") -> Dict[str, Any]:
    """The peer's shares for ``group`` from its Dice d and volume ratio r per hemisphere (exact for binary masks:
    the share of its mask inside the label is d (1 + 1 / r) / 2, of the label inside its mask d (1 + r) / 2)."""
    inside, covered = [], []
    for case in raw["cases"].values():
        if f"{case['set']} [{case['protocol']}]" != group or tool not in case:
            continue
        for side in ev.SIDES:
            rec = case[tool].get(side) or {}
            d, r = rec.get("dice"), rec.get("volume_ratio")
            if d is not None and r:
                inside.append(d * (1 + 1 / r) / 2)
                covered.append(d * (1 + r) / 2)
    return {"tool": tool, "hemispheres": len(inside),
            "inside_label_mean": ev._r(float(np.mean(inside)), 3) if inside else None,
            "label_inside_mean": ev._r(float(np.mean(covered)), 3) if covered else None}


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    parser.add_argument("--sets", nargs="+", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N scans of each set")
    parser.add_argument("--peer", type=Path, default=None, metavar="RAW.json",
                        help="bench/bench_hippodeep.py's raw.json: the peer's overlap shares per group, beside ours")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    peer = json.loads(args.peer.read_text()) if args.peer else None
    report = ev.start_report("tools/protocol_gap.py")
    rows: List[Dict[str, Any]] = []
    for cases in ev.list_cases(args.data, args.sets, limit=args.limit).values():
        for case in cases:
            rows.extend(segment_case(case))
            print(case.key, " ".join(f"{r['side']} {r['dice']:.3f}" for r in rows[-2:]), flush=True)
    for row, shift in zip(rows, leave_one_out_shifts(rows)):
        moved = None
        if shift is not None and row["offset_mirrored_mm"] is not None:
            # our mask lies at +offset from the label: move it back by the others' mean offset
            moved = ev._dice(shifted(row["ours"], row["affine"], -mirrored(shift, row["side"])), row["label"])
        report["cases"][row["key"]] = {
            "group": row["group"], "dice": ev._r(row["dice"]), "dice_moved_by_others_mean_offset": ev._r(moved),
            "ours_inside_label": ev._r(row["ours_inside_label"]), "label_inside_ours": ev._r(row["label_inside_ours"]),
            "extra_centroid_mirrored_mm": ev._vec(row["extra_centroid_mirrored_mm"]),
            "missed_centroid_mirrored_mm": ev._vec(row["missed_centroid_mirrored_mm"]),
            "offset_mirrored_mm": ev._vec(row["offset_mirrored_mm"]),
            "others_mean_offset_mirrored_mm": ev._vec(shift)}
    report["summary"] = {}
    for group in sorted({r["group"] for r in rows}):
        cases = [c for c in report["cases"].values() if c["group"] == group]
        pairs = [(c["dice"], c["dice_moved_by_others_mean_offset"]) for c in cases
                 if c["dice_moved_by_others_mean_offset"] is not None]
        offsets = [c["offset_mirrored_mm"] for c in cases if c["offset_mirrored_mm"] is not None]
        report["summary"][group] = {
            "hemispheres": len(cases),
            "dice_mean": ev._r(float(np.mean([c["dice"] for c in cases])), 3),
            "dice_mean_moved": ev._r(float(np.mean([m for _, m in pairs])), 3) if pairs else None,
            "moved_better": sum(m > d for d, m in pairs), "moved_scored": len(pairs),
            "ours_inside_label_mean": ev._r(float(np.mean([c["ours_inside_label"] for c in cases])), 3),
            "label_inside_ours_mean": ev._r(float(np.mean([c["label_inside_ours"] for c in cases])), 3),
            "offset_mirrored_mm_mean": ev._vec(np.mean(offsets, axis=0)) if offsets else None,
            **{f"{name}_centroid_mirrored_mm_mean": _mean_vector(c[f"{name}_centroid_mirrored_mm"] for c in cases)
               for name in ("extra", "missed")},
        }
        if peer is not None:
            report["summary"][group]["peer"] = peer_overlap(peer, group)
            # the formula on our own rows of the same benchmark: a check against the shares measured from the masks
            report["summary"][group]["peer_formula_on_ours"] = peer_overlap(peer, group, "hipposnn")
    print(json.dumps(report["summary"], indent=1))
    ev.finish_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
