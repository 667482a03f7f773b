"""tools/compare_eval_runs.py: hemisphere-by-hemisphere comparison of two whole-brain evaluations."""

from __future__ import annotations

import json

import pytest

from .helpers import load_tool


def _raw(dice):
    cases = {}
    for key, (set_name, protocol, right, left) in dice.items():
        cases[key] = {"set": set_name, "protocol": protocol, "right": {"dice": right}, "left": {"dice": left}}
    return {"cases": cases}


def test_compares_per_set_and_pools_only_hippocampus_labels(tmp_path):
    tool = load_tool("compare_eval_runs")
    before = _raw({"w/a": ("wholebrain", "FreeSurfer aseg", 0.80, 0.70), "w/atlas": ("wholebrain", "AAL", 0.5, 0.5),
                   "i/b": ("ixi_nichart", "DLMUSE", 0.90, 0.60)})
    after = _raw({"w/a": ("wholebrain", "FreeSurfer aseg", 0.82, 0.69), "w/atlas": ("wholebrain", "AAL", 0.9, 0.9),
                  "i/b": ("ixi_nichart", "DLMUSE", 0.90, 0.64)})
    result = tool.compare(before, after)
    aseg = result["sets"]["wholebrain [FreeSurfer aseg]"]
    assert aseg["hemispheres"] == 2 and aseg["up"] == 1 and aseg["down"] == 1
    assert aseg["mean_change"] == pytest.approx((0.02 - 0.01) / 2)
    ixi = result["sets"]["ixi_nichart"]
    assert (ixi["up"], ixi["down"]) == (1, 0)  # an unchanged hemisphere counts neither way
    pooled = result["pooled_hippocampus_labels"]
    assert pooled["hemispheres"] == 4  # the atlas's AAL hemispheres are left out of the pool
    assert pooled["after"] == pytest.approx((0.82 + 0.69 + 0.90 + 0.64) / 4)


def test_stress_totals_and_the_written_record(tmp_path):
    tool = load_tool("compare_eval_runs")
    table = tmp_path / "t.csv"
    table.write_text("condition,set,dice_mean,failures,poor_among_ok\nnone,a,0.8,0,1\nnoise,a,0.6,2,3\n")
    assert tool.stress_totals(table) == {"cells": 2, "failures": 2, "good_flagged_poor": 4,
                                         "mean_of_cell_dice": pytest.approx(0.7)}
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(_raw({"i/b": ("ixi_nichart", "DLMUSE", 0.9, 0.6)})))
    out = tmp_path / "cmp.json"
    assert tool.main([str(raw), str(raw), "--stress", str(table), str(table), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["pooled_hippocampus_labels"]["mean_change"] == 0 and record["stress"]["after"]["failures"] == 2
