"""tools/probe_network_window.py: the window that holds the training frame, and what cutting to it changes."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import load_tool


def test_the_window_holds_the_frame_in_multiples_of_8():
    probe = load_tool("probe_network_window")
    from hipposnn.inference import training_window

    rows, cols = probe.frame_window((56, 48))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 56, 7, 47)
    keep = training_window((1, 56, 48))[0]
    outside = np.ones_like(keep)
    outside[rows, cols] = False
    assert keep.sum() > 0 and not (keep & outside).any()
    for shape in ((64, 64), (56, 40)):
        r, c = probe.frame_window(shape)
        assert (r.stop - r.start) % 8 == 0 and (c.stop - c.start) % 8 == 0
        assert 0 <= r.start < r.stop <= shape[0] and 0 <= c.start < c.stop <= shape[1]


@pytest.mark.shared
def test_the_probe_compares_the_cut_network_with_the_whole(shared_data, tmp_path):
    load_tool("eval_sets")
    probe = load_tool("probe_network_window")
    report = probe.main(["--data", str(shared_data), "--limit", "1", "--json", str(tmp_path / "w.json")])
    for case in report["cases"].values():
        assert case["input_outside_window_max"] == 0.0  # the cut columns are zeros ...
        assert case["foreground_outside_window"] == 0
        assert 0.5 < case["dice_window_vs_whole"] < 1.0  # ... yet the answer changes
    assert report["summary"]["scans"] == len(report["cases"])
