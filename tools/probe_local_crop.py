"""What cropping the scan for the registration's local stages changes: the boxes, and the stages' time.

Each labelled scan of ``../shared/data`` is registered twice in one process, as shipped (each local stage sees
only the part of the scan its template cube can reach, ``roi._moving_region``) and with the whole scan (the
code before). Per scan and side: how far the mapped template hippocampus centroid and the corners of a 40 mm
cube around it moved between the two (mm), both local metrics, and the two local stages' time (seconds, one ITK
thread each, one stage after the other here, where the pipeline runs them side by side). The numbers behind
docs/segmentation.md ("How it works", step 1).

    python tools/probe_local_crop.py --json docs/results/localisation/local_crop_probe.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_sets as ev  # noqa: E402

#: Half the edge of the cube whose corners are compared (mm): about the hippocampus's extent.
CORNER_HALF_MM = 20.0


def _register(roi: Any, image: Any, crop: bool) -> Tuple[Any, float]:
    """One registration with its independent stages run one after the other; the two local stages' seconds."""
    stage, region, workers = roi._local_stage, roi._moving_region, roi._WORKERS
    seconds: List[float] = []

    def timed(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return stage(*args)
        finally:
            seconds.append(time.perf_counter() - start)

    roi._local_stage, roi._WORKERS = timed, 1
    if not crop:
        roi._moving_region = lambda moving, *args: moving
    try:
        return roi.register_to_template(image), sum(seconds)
    finally:
        roi._local_stage, roi._moving_region, roi._WORKERS = stage, region, workers


def probe(case: ev.Case) -> Dict[str, Any]:
    from hipposnn import roi
    from hipposnn.io import load_image

    image = load_image(case.image)
    shipped, cropped_s = _register(roi, image, True)
    whole, whole_s = _register(roi, image, False)
    if not np.array_equal(shipped.global_matrix, whole.global_matrix):
        raise RuntimeError(f"{case.key}: the global stage differs, the probe is not measuring the local crop")
    out: Dict[str, Any] = {"seconds_local_stages": {"cropped": round(cropped_s, 3), "whole scan": round(whole_s, 3)}}
    for side in roi.SIDES:
        centre = np.asarray(roi.TEMPLATE_CENTROID_RAS[side])
        corners = [centre + CORNER_HALF_MM * np.asarray(signs) for signs in itertools.product((-1.0, 1.0), repeat=3)]
        moved = [float(np.linalg.norm(shipped.map_point(p, side) - whole.map_point(p, side))) for p in corners]
        out[side] = {
            "centroid_moved_mm": round(float(np.linalg.norm(shipped.map_point(centre, side)
                                                            - whole.map_point(centre, side))), 4),
            "corner_moved_mm_max": round(max(moved), 4),
            "local_metric": {"cropped": round(shipped.local_metrics[side], 4),
                             "whole scan": round(whole.local_metrics[side], 4)},
        }
    return out


def summary(cases: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    centroid = [c[s]["centroid_moved_mm"] for c in cases.values() for s in ("right", "left")]
    corner = [c[s]["corner_moved_mm_max"] for c in cases.values() for s in ("right", "left")]
    out: Dict[str, Any] = {"hemispheres": len(centroid),
                           "centroid_moved_mm_median": round(float(np.median(centroid)), 4),
                           "centroid_moved_mm_max": round(max(centroid), 4),
                           "corner_moved_mm_max": round(max(corner), 4), "seconds_local_stages_mean": {}}
    for way in ("cropped", "whole scan"):
        per_set: Dict[str, List[float]] = {}
        for key, c in cases.items():
            per_set.setdefault(key.split("/")[0], []).append(c["seconds_local_stages"][way])
        out["seconds_local_stages_mean"][way] = {k: round(float(np.mean(v)), 3) for k, v in per_set.items()}
    return out


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N scans of each set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = ev.start_report("tools/probe_local_crop.py")
    for cases in ev.list_cases(args.data, limit=args.limit).values():
        for case in cases:
            report["cases"][case.key] = result = probe(case)
            print(case.key, json.dumps(result), flush=True)
    report["summary"] = summary(report["cases"])
    print(json.dumps(report["summary"], indent=1))
    ev.finish_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
