"""tools/probe_local_crop.py: the shipped local stages against the whole-scan ones, on real scans."""

from __future__ import annotations

import json

import pytest

from .helpers import load_tool


@pytest.mark.shared
def test_probe_reports_sub_voxel_moves_and_restores_the_registration(shared_data, tmp_path):
    load_tool("eval_sets")
    probe = load_tool("probe_local_crop")
    from hipposnn import roi

    stage, region, workers = roi._local_stage, roi._moving_region, roi._WORKERS
    out = tmp_path / "probe.json"
    report = probe.main(["--data", str(shared_data), "--limit", "1", "--json", str(out)])
    assert json.loads(out.read_text())["summary"] == report["summary"]
    assert (roi._local_stage, roi._moving_region, roi._WORKERS) == (stage, region, workers)
    assert len(report["cases"]) >= 3 and report["summary"]["hemispheres"] == 2 * len(report["cases"])
    for case in report["cases"].values():
        assert all(v > 0 for v in case["seconds_local_stages"].values())
        for side in roi.SIDES:
            assert case[side]["centroid_moved_mm"] < 0.1 and case[side]["corner_moved_mm_max"] < 0.25
            metric = case[side]["local_metric"]
            assert metric["cropped"] == pytest.approx(metric["whole scan"], abs=0.02)
    assert report["summary"]["centroid_moved_mm_max"] == max(
        c[s]["centroid_moved_mm"] for c in report["cases"].values() for s in roi.SIDES)
