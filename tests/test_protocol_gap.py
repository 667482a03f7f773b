"""tools/protocol_gap.py: our masks moved by their set's mean offset to the labels (leave one out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .helpers import load_tool


def test_a_mask_is_moved_in_mm_without_interpolation_and_the_mirror_makes_x_lateral():
    load_tool("eval_sets")
    gap = load_tool("protocol_gap")

    label = np.zeros((30, 30, 30), dtype=bool)
    label[10:20, 8:20, 12:18] = True
    affine = np.diag([-2.0, 1.0, 1.5, 1.0])  # a flipped axis and anisotropic voxels, 2 mm along the first
    affine[:3, 3] = [5.0, 6.0, 7.0]
    assert gap.shifted_dice(label, label, affine, [0.0, 0.0, 0.0]) == 1.0
    # half a 2 mm voxel along a 20 mm box: 19 of 20 mm still overlap (interpolated and cut, it would lose a voxel)
    assert gap.shifted_dice(label, label, affine, [1.0, 0.0, 0.0]) == pytest.approx(19 / 20)
    assert gap.shifted_dice(label, label, affine, [0.0, 0.0, -3.0]) == pytest.approx(6 / 9)  # 3 of 9 mm lost
    ours = np.roll(label, 1, axis=0)  # one voxel further along i: -2 mm in x
    assert gap.shifted_dice(ours, label, affine, [2.0, 0.0, 0.0]) == 1.0
    assert gap.shifted_dice(ours, label, affine, [-2.0, 0.0, 0.0]) < gap.shifted_dice(ours, label, affine, [0, 0, 0])
    # +x of RAS is the subject's right: lateral for the right side, medial for the left
    assert gap.mirrored([1.0, 2.0, 3.0], "right").tolist() == [1.0, 2.0, 3.0]
    assert gap.mirrored([1.0, 2.0, 3.0], "left").tolist() == [-1.0, 2.0, 3.0]
    assert gap.mirrored(gap.mirrored([1.0, 2.0, 3.0], "left"), "left").tolist() == [1.0, 2.0, 3.0]


def test_each_hemisphere_is_moved_by_the_others_of_its_group_only():
    gap = load_tool("protocol_gap")
    rows = [{"group": "a", "offset_mirrored_mm": np.array([1.0, 0.0, 0.0])},
            {"group": "a", "offset_mirrored_mm": np.array([3.0, 2.0, 0.0])},
            {"group": "a", "offset_mirrored_mm": None},  # an empty mask has no offset, and is moved by the others'
            {"group": "b", "offset_mirrored_mm": np.array([9.0, 9.0, 9.0])}]
    shifts = gap.leave_one_out_shifts(rows)
    assert shifts[0].tolist() == [3.0, 2.0, 0.0] and shifts[1].tolist() == [1.0, 0.0, 0.0]
    assert shifts[2].tolist() == [2.0, 1.0, 0.0]
    assert shifts[3] is None  # alone in its group


@pytest.mark.shared
def test_the_tool_scores_real_scans_before_and_after_the_move(shared_data, tmp_path):
    load_tool("eval_sets")
    gap = load_tool("protocol_gap")
    report = gap.main(["--data", str(shared_data), "--sets", "wholebrain", "--limit", "1",
                       "--json", str(tmp_path / "gap.json")])
    assert len(report["cases"]) == 2
    for case in report["cases"].values():
        assert 0.5 < case["dice"] < 1 and 0 <= case["dice_moved_by_others_mean_offset"] <= 1
        assert 0 <= case["dice_moved_by_others_mean_offset_lateral_only"] <= 1
        assert 0 < case["ours_inside_label"] <= 1 and 0 < case["label_inside_ours"] <= 1
    (summary,) = report["summary"].values()
    assert summary["hemispheres"] == 2 and summary["moved_scored"] == 2


def test_the_figure_is_redrawn_from_a_saved_run_without_segmenting(tmp_path):
    gap = load_tool("protocol_gap")
    saved = Path(__file__).resolve().parents[1] / "docs" / "results" / "protocol_gap" / "protocol_gap.json"
    figure = tmp_path / "gap.png"
    report = gap.main(["--redraw", str(saved), "--figure", str(figure)])
    assert report["summary"] == json.loads(saved.read_text())["summary"]
    assert figure.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        gap.main(["--redraw", str(saved)])  # a redraw without a figure to draw is refused

