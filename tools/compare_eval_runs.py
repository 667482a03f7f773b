"""Two whole-brain evaluations of different models, hemisphere by hemisphere (docs/segmentation.md).

A model change moves each set's mean Dice by a few thousandths, about the size of the noise a sub-voxel shift of
the box makes, so the means alone say little. This compares two ``tools/eval_sets.py`` raw JSONs on the same scans:
per set (the whole-brain set split by label protocol) the hemispheres, both means, the mean change and how many
went up and down, and the pooled mean over every hemisphere with hippocampus labels (an atlas's AAL labels aside).
With ``--stress BEFORE.csv AFTER.csv`` it also totals two ``tools/eval_stress.py`` tables: failures, good results
flagged poor and the mean of the cells' mean Dice.

    python tools/compare_eval_runs.py docs/results/wholebrain_eval/snn-t8_binary_clip999/raw_snn-t8_binary.json \\
        docs/results/wholebrain_eval/raw_snn-t8_binary.json --stress docs/results/stress/local_crop/table.csv \\
        docs/results/clip_start/stress/table.csv --json docs/results/clip_start/comparison.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_sets import SIDES  # noqa: E402  (the hemispheres every raw JSON scores)

NOT_HIPPOCAMPUS = ("AAL",)  # atlas labels that are not a hippocampus protocol (colin27)


def hemispheres(raw: Dict[str, Any]) -> Dict[Tuple[str, str], Tuple[str, float]]:
    """(case key, side) -> (set label, Dice) of every scored hemisphere of an eval_sets raw JSON."""
    out = {}
    for key, case in raw["cases"].items():
        label = case["set"] + (f" [{case['protocol']}]" if case["set"] == "wholebrain" else "")
        for side in SIDES:
            value = (case.get(side) or {}).get("dice")
            if value is not None:
                out[(key, side)] = (label, float(value))
    return out


def compare(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
    """Per set and pooled: hemispheres in both runs, their means, mean change, and how many went up / down."""
    a, b = hemispheres(before), hemispheres(after)
    common = sorted(set(a) & set(b))
    sets: Dict[str, List[Tuple[float, float]]] = {}
    for key in common:
        sets.setdefault(a[key][0], []).append((a[key][1], b[key][1]))
    pooled = [pair for label, pairs in sets.items() for pair in pairs
              if not any(tag in label for tag in NOT_HIPPOCAMPUS)]
    return {"sets": {label: _summary(pairs) for label, pairs in sorted(sets.items())},
            "pooled_hippocampus_labels": _summary(pooled),
            "only_in_one_run": len(set(a) ^ set(b))}


def _summary(pairs: Sequence[Tuple[float, float]]) -> Dict[str, Any]:
    changes = [after - before for before, after in pairs]
    return {"hemispheres": len(pairs), "before": sum(p[0] for p in pairs) / len(pairs),
            "after": sum(p[1] for p in pairs) / len(pairs), "mean_change": sum(changes) / len(changes),
            "up": sum(c > 0 for c in changes), "down": sum(c < 0 for c in changes)}


def stress_totals(table: Path) -> Dict[str, Any]:
    """Failures, good results flagged poor and the mean of the cells' mean Dice of an eval_stress table.csv."""
    rows = list(csv.DictReader(table.open()))
    return {"cells": len(rows), "failures": sum(int(r["failures"]) for r in rows),
            "good_flagged_poor": sum(int(r["poor_among_ok"]) for r in rows),
            "mean_of_cell_dice": sum(float(r["dice_mean"]) for r in rows) / len(rows)}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="eval_sets raw JSON of the model before")
    parser.add_argument("after", type=Path, help="eval_sets raw JSON of the model after")
    parser.add_argument("--stress", type=Path, nargs=2, metavar=("BEFORE.csv", "AFTER.csv"), default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(list(argv) or None)
    record: Dict[str, Any] = {"before": str(args.before), "after": str(args.after),
                              **compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))}
    for label, row in list(record["sets"].items()) + [("pooled", record["pooled_hippocampus_labels"])]:
        print(f"{label:32s} {row['hemispheres']:3d} hemispheres: {row['before']:.4f} -> {row['after']:.4f} "
              f"({row['mean_change']:+.4f}), up {row['up']}, down {row['down']}")
    if args.stress:
        record["stress"] = {"before": stress_totals(args.stress[0]), "after": stress_totals(args.stress[1])}
        for when, totals in record["stress"].items():
            print(f"stress {when}: {totals['failures']} failures, {totals['good_flagged_poor']} good flagged poor, "
                  f"mean of {totals['cells']} cells {totals['mean_of_cell_dice']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
