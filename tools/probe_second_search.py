"""What the registration's second, pitched search does on the scans of the stress evaluation that needed it.

For each (condition, case) the scan is changed as ``tools/eval_stress.py`` changes it and registered three ways:
the first search alone (second search off), the second search taking any stronger global metric (margin 0, its
first version) and as shipped (``roi._SECOND_SEARCH_MARGIN``). Per way: the global Mattes metric, whether the
second search ran and was used, the global scalings (singular values of the template-to-scan matrix) and, per
side, the distance from the mapped template hippocampus centroid to the label's centroid (mm). The numbers behind
the margin and the rescues quoted in ``roi.py`` and docs/segmentation.md ("Scans made harder").

    python tools/probe_second_search.py --json docs/results/stress/second_search_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_sets as ev  # noqa: E402
import eval_stress as st  # noqa: E402

#: The stress run's registrations that ended weak (docs/results/stress/before_94f6f2d/raw.json), and the bias-field
#: case on which the first version of the second search made things worse.
DEFAULT_CASES = ["pitch_20:ixi_nichart/IXI212-HH-1643", "pitch_20:ixi_nichart/IXI206-HH-1650",
                 "pitch_20:ixi_nichart/IXI211-HH-1568", "thick_axial_5mm:ixi_nichart/IXI212-HH-1643",
                 "bias_field:wholebrain/fst-sub-02"]
WAYS = {"first search only": (1.0, None), "second search, margin 0": (None, 0.0), "as shipped": (None, None)}


def probe(case: ev.Case, condition: str, folder: Path) -> Dict[str, Any]:
    from hipposnn import roi
    from hipposnn.io import load_image

    changed, _ = st.perturbed_case(case, condition, folder)
    image = load_image(changed.image)
    labels, affine = ev.load_labels(changed.labels)
    centroids = {side: ev.centroid_ras(labels == value, affine) for side, value in
                 (("right", case.right), ("left", case.left))}
    shipped = (roi._SECOND_SEARCH_METRIC, roi._SECOND_SEARCH_MARGIN)
    out: Dict[str, Any] = {}
    try:
        for way, (trigger, margin) in WAYS.items():
            roi._SECOND_SEARCH_METRIC = shipped[0] if trigger is None else trigger
            roi._SECOND_SEARCH_MARGIN = shipped[1] if margin is None else margin
            r = roi.register_to_template(image)
            scalings = np.linalg.svd(r.global_matrix[:3, :3], compute_uv=False)
            out[way] = {
                "global_metric": round(r.metric, 4), "second_search_ran": r.second_search,
                "second_search_used": r.second_search_used,
                "global_scalings": [round(float(v), 3) for v in scalings],
                "centroid_to_label_mm": {side: round(float(np.linalg.norm(
                    r.map_point(roi.TEMPLATE_CENTROID_RAS[side], side) - centroids[side])), 1) for side in roi.SIDES},
                "warnings": list(r.warnings),
            }
    finally:
        roi._SECOND_SEARCH_METRIC, roi._SECOND_SEARCH_MARGIN = shipped
    return out


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="CONDITION:SET/ID")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    found = {c.key: c for cs in ev.list_cases(args.data).values() for c in cs}
    report = ev.start_report("tools/probe_second_search.py")
    with tempfile.TemporaryDirectory(prefix="hipposnn_probe_") as tmp:
        for item in args.cases:
            condition, key = item.split(":", 1)
            if key not in found or condition not in st.CONDITIONS:
                parser.error(f"unknown case or condition: {item}")
            report["cases"][item] = result = probe(found[key], condition, Path(tmp) / condition / key)
            print(item, json.dumps({w: (r["global_metric"], r["global_scalings"][0], r["centroid_to_label_mm"])
                                    for w, r in result.items()}), flush=True)
    ev.finish_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
