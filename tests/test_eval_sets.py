"""tools/eval_sets.py: scoring on synthetic masks, and one shared case end to end (tables consistent)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "eval_sets.py"


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("eval_sets", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("eval_sets", module)  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_score_hemisphere_dice_volume_and_lateral_sign(ev):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 voxels, i along R
    shape = (40, 20, 20)
    right = _box(shape, (28, 5, 5), (32, 10, 10))  # right label (larger x)
    left = _box(shape, (8, 5, 5), (12, 10, 10))
    ours_right = _box(shape, (29, 5, 5), (33, 10, 10))  # shifted 1 voxel = 2 mm laterally
    ours_left = _box(shape, (8, 5, 5), (12, 10, 10))
    r = ev.score_hemisphere(ours_right, right, left, affine)
    assert r["dice"] == pytest.approx(0.75)
    assert r["volume_mm3"] == r["label_volume_mm3"] == 100 * 8
    assert r["volume_ratio"] == pytest.approx(1.0)
    assert r["centroid_offset_ras"] == [2.0, 0.0, 0.0]
    assert r["lateral_offset_mm"] == pytest.approx(2.0)  # further from the midline
    left_out = ev.score_hemisphere(_box(shape, (7, 5, 5), (11, 10, 10)), left, right, affine)
    assert left_out["lateral_offset_mm"] == pytest.approx(2.0)  # left side: -x is lateral
    assert ev.score_hemisphere(ours_left, left, right, affine)["lateral_offset_mm"] == 0.0
    empty = ev.score_hemisphere(np.zeros(shape, bool), right, left, affine)
    assert empty["dice"] == 0.0 and empty["centroid_offset_ras"] is None


def test_summarise_counts_failures_and_qc(ev):
    def hemi(d, q):
        return {"dice": d, "volume_ratio": 0.8, "coverage": 1.0 if d > 0.1 else 0.5, "quality": q,
                "lateral_offset_mm": 1.0}

    records = {
        "s/a": {"set": "s", "id": "a", "protocol": "p", "seconds": 10.0, "load_before": [2.0],
                "right": hemi(0.8, "good"), "left": hemi(0.3, "poor")},
        "s/b": {"set": "s", "id": "b", "protocol": "q", "seconds": 20.0, "load_before": [4.0],
                "right": hemi(0.05, "good"), "left": hemi(0.7, "poor")},
    }
    rows = ev.summarise(records, ["s"])
    assert [r["set"] for r in rows] == ["s", "s [p]", "s [q]"]  # mixed protocols get their own rows
    row = rows[0]
    assert (row["cases"], row["hemispheres"], row["failures"]) == (2, 4, 2)
    assert row["dice_min"] == 0.05 and row["dice_median"] == pytest.approx(0.5)
    assert (row["qc_good"], row["qc_poor"], row["poor_among_failures"], row["poor_among_ok"]) == (2, 2, 1, 1)
    assert row["coverage_ge_095"] == 0.75 and row["seconds_mean"] == 15.0 and row["load1_mean"] == 3.0
    header = next(csv.reader(io.StringIO(ev.table_csv(rows))))
    assert header == ev.COLUMNS
    assert ev.table_markdown(rows).count("\n") == 2 + len(rows)


@pytest.mark.shared
def test_one_shared_case_end_to_end(ev, shared_data, tmp_path):
    """--limit 1 on one external set with the ANN (fast): raw JSON, tables and figure agree."""
    raw = ev.run(["--data", str(shared_data), "--sets", "ixi_nichart", "--limit", "1", "--model", "ann",
                  "--out", str(tmp_path)])
    assert list(raw["cases"]) and len(raw["cases"]) == 1
    case = next(iter(raw["cases"].values()))
    for side in ("right", "left"):
        h = case[side]
        assert 0.0 <= h["dice"] <= 1.0 and 0.0 <= h["coverage"] <= 1.0
        assert h["volume_ratio"] == pytest.approx(h["volume_mm3"] / h["label_volume_mm3"], abs=1e-3)
        assert h["quality"] in ("good", "poor") and isinstance(h["reasons"], list)
        assert len(h["box_offset_ras"]) == 3 and h["box_to_label_mm"] >= 0
    assert case["seconds"] > 0 and len(raw["meta"]["load_start"]) == 3 and raw["meta"]["git"]["commit"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table_ann.csv").read_text())))
    assert len(rows) == 1 and rows[0]["set"] == "ixi_nichart"
    dice = [case["right"]["dice"], case["left"]["dice"]]
    assert float(rows[0]["dice_mean"]) == pytest.approx(np.mean(dice), abs=1e-3)
    assert int(rows[0]["failures"]) == sum(d < 0.5 for d in dice)
    assert (tmp_path / "eval_sets_ann.png").stat().st_size > 10_000
    assert "ixi_nichart" in (tmp_path / "table_ann.md").read_text()
    # --resume keeps the case and does not run it again
    again = ev.run(["--data", str(shared_data), "--sets", "ixi_nichart", "--limit", "1", "--model", "ann",
                    "--out", str(tmp_path), "--resume", "--no-figure"])
    assert again["cases"] == json.loads((tmp_path / "raw_ann.json").read_text())["cases"] == raw["cases"]
    # --refine is another setting: its own tag, never mixed with the cases of a plain run
    refined = ev.run(["--data", str(shared_data), "--sets", "ixi_nichart", "--limit", "1", "--model", "ann",
                      "--out", str(tmp_path), "--refine", "--resume", "--no-figure"])
    assert refined["meta"]["settings"]["refine"] is True and (tmp_path / "table_ann_refine.md").is_file()
    moved = next(iter(refined["cases"].values()))
    assert any(moved[s]["box_centre_ras"] != case[s]["box_centre_ras"] for s in ("right", "left"))
    # --checkpoint runs a candidate file in the model's place: here the shipped file itself, so the same result
    from hipposnn.weights import default_model_path

    shipped = str(default_model_path("ann", "ternary"))
    same = ev.run(["--data", str(shared_data), "--sets", "ixi_nichart", "--limit", "1", "--model", "ann",
                   "--out", str(tmp_path / "candidate"), "--checkpoint", shipped, "--no-figure"])
    rerun = next(iter(same["cases"].values()))
    assert same["meta"]["settings"]["checkpoint"] == shipped and rerun["model_sha256"] == case["model_sha256"]
    assert [rerun[s]["dice"] for s in ("right", "left")] == dice
    with pytest.raises(SystemExit):  # a plain run's raw JSON is not resumed with a candidate
        ev.run(["--data", str(shared_data), "--sets", "ixi_nichart", "--limit", "1", "--model", "ann",
                "--out", str(tmp_path), "--checkpoint", shipped, "--resume", "--no-figure"])
    with pytest.raises(SystemExit):
        ev.run(["--model", "ann", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)])


def test_bench_hippodeep_pairs_speed_only_within_one_run(ev):
    spec = importlib.util.spec_from_file_location("bench_hippodeep", TOOL.parents[1] / "bench" / "bench_hippodeep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    assert bench._stem("T1.mgz") == "T1" and bench._stem("t1.nii.gz") == "t1"

    def run(seconds, dice, run_id):
        hemi = {"dice": dice, "volume_ratio": 0.9, "lateral_offset_mm": 0.1, "centroid_offset_ras": [0.1, 0.0, 0.0]}
        return {"seconds": seconds, "run": run_id, "load_before": [1.0], "right": dict(hemi), "left": dict(hemi)}

    raw = {"cases": {
        "s/a": {"set": "s", "id": "a", "protocol": "p",
                "hippodeep": run(10.0, 0.8, "r1"), "hipposnn": run(5.0, 0.7, "r1")},
        "s/b": {"set": "s", "id": "b", "protocol": "q",
                "hippodeep": run(10.0, 0.8, "r1"), "hipposnn": run(20.0, 0.4, "r2")},
    }}
    rows = bench.summarise(raw, ["s"])
    assert [(r["set"], r["tool"]) for r in rows][:2] == [("s", "hippodeep"), ("s", "hipposnn")]
    assert len(rows) == 6  # the set, then one row per protocol, each for both tools
    snn = rows[1]
    assert snn["paired_cases"] == 1 and snn["speed_ratio_median"] == 0.5  # s/b ran in another invocation
    assert snn["failures"] == 2 and snn["dice_mean"] == pytest.approx(0.55)
    assert "| s | hipposnn | 2 |" in bench.table_markdown(rows)


def test_dice_ceiling_from_volume_is_symmetric_and_reached_by_nested_masks(ev):
    """A mask of half the label's volume inside the label scores exactly the ceiling, 2/3."""
    label = np.zeros((10, 10, 10), bool)
    label[:, :, :4] = True
    ours = np.zeros_like(label)
    ours[:, :, :2] = True
    ratio = ours.sum() / label.sum()
    dice = 2.0 * (ours & label).sum() / (ours.sum() + label.sum())
    assert ev.dice_ceiling(ratio) == pytest.approx(dice) == pytest.approx(2.0 / 3.0)
    assert ev.dice_ceiling(2.0) == pytest.approx(ev.dice_ceiling(0.5))
    assert ev.dice_ceiling(1.0) == 1.0 and ev.dice_ceiling(None) is None
