"""How much of the Dice gap to another label protocol is a systematic offset: our masks moved by the set's mean offset.

Why: on whole brains our masks lie ~1.1-1.5 mm further from the midline than aseg's and DLMUSE's labels, while on the
MSD crops they lie +0.09 mm from the MSD labels (docs/segmentation.md, "Is the lateral offset placement or
protocol?"), so the offset is what the MSD protocol calls hippocampus, not a placement error. Issue 11 asks what part
of the remaining gap to hippodeep is protocol. This tool measures one part: per hemisphere, our default mask is moved
by the mean centroid offset (ours minus the label's) of the *other* hemispheres of its set and protocol (leave one
out, so no hemisphere is corrected by its own offset), in a frame mirrored so that +x is lateral on both sides, and
scored again; then by the lateral part of that offset alone. The Dice it gains is what a protocol's systematic
displacement costs; what stays is shape. Beside it, how the two overlap: the share of our mask inside the label and
of the label inside our mask, and where the voxels we add and miss lie.

    python tools/protocol_gap.py --peer docs/results/hippodeep_bench/all_sets_readout/raw.json \
        --json docs/results/protocol_gap/protocol_gap.json
    python tools/protocol_gap.py --redraw docs/results/protocol_gap/protocol_gap.json \
        --figure docs/figures/protocol_gap.png           # the figure, from that run
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


#: Grid (mm) on which masks are moved: fine enough that a move is whole fine voxels, so nothing is interpolated.
FINE_MM = 0.25


def shifted_dice(ours: np.ndarray, label: np.ndarray, affine: np.ndarray, shift_ras: Sequence[float]) -> float:
    """Dice of ``ours`` moved by ``shift_ras`` mm against ``label`` (both in the voxel grid of ``affine``).

    Why not resample: a move by half a 2 mm voxel, interpolated and cut at 0.5, erodes the mask by a voxel on each
    side of that axis. Here both masks are cut to their common box, split into voxels of about :data:`FINE_MM`
    (each voxel repeated, no interpolation) and ours is moved by whole fine voxels (the move rounded to them).
    """
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    voxels = np.linalg.solve(linear, np.asarray(shift_ras, dtype=np.float64))
    spacing = np.linalg.norm(linear, axis=0)
    factor = np.maximum(1, np.ceil(spacing / FINE_MM)).astype(int)
    where = np.argwhere(ours | label)
    if where.size == 0:
        return 1.0
    box = tuple(slice(a, b + 1) for a, b in zip(where.min(axis=0), where.max(axis=0)))
    a, b = ours[box], label[box]
    for axis, f in enumerate(factor):
        a, b = np.repeat(a, f, axis=axis), np.repeat(b, f, axis=axis)
    # room for the move on every side, so that nothing rolls round
    pad = [(int(m * f),) * 2 for m, f in zip(np.ceil(np.abs(voxels)).astype(int) + 1, factor)]
    a, b = np.pad(a, pad), np.pad(b, pad)
    a = np.roll(a, tuple(int(round(v * f)) for v, f in zip(voxels, factor)), axis=(0, 1, 2))
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


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


def summarise(cases: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One group's summary from its cases' records (as ``main`` writes them to the report)."""
    out: Dict[str, Any] = {"hemispheres": len(cases),
                           "dice_mean": ev._r(float(np.mean([c["dice"] for c in cases])), 3)}
    for suffix, name in (("", "moved"), ("_lateral_only", "moved_lateral_only")):
        pairs = [(c["dice"], c[f"dice_moved_by_others_mean_offset{suffix}"]) for c in cases
                 if c[f"dice_moved_by_others_mean_offset{suffix}"] is not None]
        out[f"dice_mean_{name}"] = ev._r(float(np.mean([m for _, m in pairs])), 3) if pairs else None
        out[f"{name}_better"] = sum(m > d for d, m in pairs)
        if not suffix:
            out["moved_scored"] = len(pairs)
    offsets = [c["offset_mirrored_mm"] for c in cases if c["offset_mirrored_mm"] is not None]
    out.update({
        "ours_inside_label_mean": ev._r(float(np.mean([c["ours_inside_label"] for c in cases])), 3),
        "label_inside_ours_mean": ev._r(float(np.mean([c["label_inside_ours"] for c in cases])), 3),
        "offset_mirrored_mm_mean": ev._vec(np.mean(offsets, axis=0)) if offsets else None,
        **{f"{name}_centroid_mirrored_mm_mean": _mean_vector(c[f"{name}_centroid_mirrored_mm"] for c in cases)
           for name in ("extra", "missed")},
    })
    return out


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


def plot(summary: Dict[str, Dict[str, Any]], path: Path) -> None:
    """Per protocol: how our masks and hippodeep's overlap the labels, and what moving ours does to its Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in sorted(summary) if (summary[g].get("peer") or {}).get("hemispheres")]
    x = np.arange(len(groups))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    bars = (("ours_inside_label_mean", ("peer", "inside_label_mean"), "mask inside the label"),
            ("label_inside_ours_mean", ("peer", "label_inside_mean"), "label inside the mask"))
    for k, (ours, (peer, key), what) in enumerate(bars):
        left.bar(x + (2 * k - 1.5) * 0.2, [summary[g][ours] for g in groups], 0.2, label=f"HippoSNN: {what}",
                 color=("tab:blue", "tab:cyan")[k])
        left.bar(x + (2 * k - 0.5) * 0.2, [summary[g][peer][key] for g in groups], 0.2,
                 label=f"hippodeep: {what}", color=("tab:orange", "gold")[k])
    left.set_xticks(x)
    left.set_xticklabels([g.replace(" [", "\n[") for g in groups], fontsize=8)
    left.set_ylim(0, 1.25)
    left.set_title("overlap with the set's labels (share)", fontsize=10)
    left.legend(fontsize=7, loc="upper center", ncol=2)
    moves = (("dice_mean", "as segmented"), ("dice_mean_moved", "moved by the others' mean offset"),
             ("dice_mean_moved_lateral_only", "moved by its lateral part"))
    for k, (key, what) in enumerate(moves):
        right.bar(x + (k - 1) * 0.25, [summary[g].get(key) or 0.0 for g in groups], 0.25, label=what)
    right.set_xticks(x)
    right.set_xticklabels([g.replace(" [", "\n[") for g in groups], fontsize=8)
    right.set_ylim(0, 1.15)
    right.set_title("HippoSNN Dice, and after moving its masks (leave one out)", fontsize=10)
    right.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    parser.add_argument("--sets", nargs="+", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N scans of each set")
    parser.add_argument("--peer", type=Path, default=None, metavar="RAW.json",
                        help="bench/bench_hippodeep.py's raw.json: the peer's overlap shares per group, beside ours")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="draw the summary (needs --peer)")
    parser.add_argument("--redraw", type=Path, default=None, metavar="JSON",
                        help="only draw --figure from an earlier run's --json, segmenting nothing")
    args = parser.parse_args(argv)
    if args.redraw:
        if not args.figure:
            parser.error("--redraw needs --figure")
        report = json.loads(args.redraw.read_text())
        plot(report["summary"], args.figure)
        return report
    peer = json.loads(args.peer.read_text()) if args.peer else None
    report = ev.start_report("tools/protocol_gap.py")
    rows: List[Dict[str, Any]] = []
    for cases in ev.list_cases(args.data, args.sets, limit=args.limit).values():
        for case in cases:
            rows.extend(segment_case(case))
            print(case.key, " ".join(f"{r['side']} {r['dice']:.3f}" for r in rows[-2:]), flush=True)
    for row, shift in zip(rows, leave_one_out_shifts(rows)):
        moved: Dict[str, Optional[float]] = {"": None, "_lateral_only": None}
        if shift is not None and row["offset_mirrored_mm"] is not None:
            # our mask lies at +offset from the label: move it back by the others' mean offset, or its lateral part
            for suffix, keep in (("", (1.0, 1.0, 1.0)), ("_lateral_only", (1.0, 0.0, 0.0))):
                back = -mirrored(shift * np.asarray(keep), row["side"])
                moved[suffix] = ev._r(shifted_dice(row["ours"], row["label"], row["affine"], back))
        report["cases"][row["key"]] = {
            "group": row["group"], "dice": ev._r(row["dice"]),
            **{f"dice_moved_by_others_mean_offset{suffix}": value for suffix, value in moved.items()},
            "ours_inside_label": ev._r(row["ours_inside_label"]), "label_inside_ours": ev._r(row["label_inside_ours"]),
            "extra_centroid_mirrored_mm": ev._vec(row["extra_centroid_mirrored_mm"]),
            "missed_centroid_mirrored_mm": ev._vec(row["missed_centroid_mirrored_mm"]),
            "offset_mirrored_mm": ev._vec(row["offset_mirrored_mm"]),
            "others_mean_offset_mirrored_mm": ev._vec(shift)}
    report["summary"] = {}
    for group in sorted({r["group"] for r in rows}):
        report["summary"][group] = summarise([c for c in report["cases"].values() if c["group"] == group])
        if peer is not None:
            report["summary"][group]["peer"] = peer_overlap(peer, group)
            # the formula on our own rows of the same benchmark: a check against the shares measured from the masks
            report["summary"][group]["peer_formula_on_ours"] = peer_overlap(peer, group, "hipposnn")
    print(json.dumps(report["summary"], indent=1))
    ev.finish_report(report, args.json)
    if args.figure and peer is not None:
        plot(report["summary"], args.figure)
    return report


if __name__ == "__main__":
    main()
