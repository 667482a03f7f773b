"""Our eTIV against hippodeep's, per set, from committed raw outputs (issue 11; no reference ICV exists here).

eTIV = |det| of the global template-to-scan affine x the template's intracranial volume (hipposnn.qc). The
localisation run (tools/eval_localisation.py) records the determinants; bench/bench_hippodeep.py recorded
hippodeep's own eTIV for the same scans. Writes docs/results/localisation/etiv_vs_hippodeep.json.

Usage: python tools/compare_etiv.py [--localisation docs/results/localisation/after.json]
       python tools/compare_etiv.py --eval-raw docs/results/wholebrain_eval/predecessor_models/raw_ann.json \
           --json docs/results/localisation/etiv_vs_hippodeep_single_start.json   # before the multi-start
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from hipposnn.qc import TEMPLATE_ICV_MM3

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--localisation", type=Path, default=RESULTS / "localisation" / "after.json")
    parser.add_argument("--hippodeep", type=Path, default=RESULTS / "hippodeep_bench" / "raw.json")
    parser.add_argument("--eval-raw", type=Path, default=None,
                        help="take our eTIV from a tools/eval_sets.py raw JSON instead (no local determinants)")
    parser.add_argument("--json", type=Path, default=RESULTS / "localisation" / "etiv_vs_hippodeep.json")
    args = parser.parse_args()
    if args.eval_raw:
        cases = json.loads(args.eval_raw.read_text())["cases"].values()
        rows = [{"set": c["set"], "case": c["id"], "etiv_mm3": c.get("etiv_mm3")} for c in cases]
    else:
        rows = json.loads(args.localisation.read_text())["rows"]
        for r in rows:
            r["etiv_mm3"] = r["global_det"] * TEMPLATE_ICV_MM3
    peer = json.loads(args.hippodeep.read_text())["cases"]
    report = {"localisation": str(args.eval_raw or args.localisation), "hippodeep": str(args.hippodeep),
              "note": "colin27 left out: hippodeep reads its placeholder qform (docs/segmentation.md)", "sets": {}}
    for name in sorted({r["set"] for r in rows}) + ["all"]:
        ours, theirs, consistency = [], [], []
        for r in rows:
            key = f"{r['set']}/{r['case']}"
            if key not in peer or r["case"] == "colin27" or name not in (r["set"], "all") or not r["etiv_mm3"]:
                continue
            ours.append(r["etiv_mm3"])
            theirs.append(peer[key]["hippodeep"]["etiv_mm3"])
            if "local_det" in r:
                consistency.append(r["global_det"] / float(np.mean(list(r["local_det"].values()))))
        if len(ours) < 2:
            continue
        a, b = np.asarray(ours), np.asarray(theirs)
        report["sets"][name] = {
            "scans": len(a), "pearson_r": round(float(np.corrcoef(a, b)[0, 1]), 3),
            "ratio_mean": round(float((a / b).mean()), 3), "ratio_sd": round(float((a / b).std()), 3),
            "ratio_min": round(float((a / b).min()), 3), "ratio_max": round(float((a / b).max()), 3),
            "ours_mean_l": round(float(a.mean()) / 1e6, 3), "hippodeep_mean_l": round(float(b.mean()) / 1e6, 3),
            "ratio_above_1_25": int(((a / b) > 1.25).sum()),
        }
        if consistency:
            report["sets"][name]["global_over_local_det_min"] = round(min(consistency), 3)
            report["sets"][name]["global_over_local_det_max"] = round(max(consistency), 3)
        print(name, report["sets"][name])
    args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
