"""bench/bench_width.py: the wider networks are the default's engine path with other channels, timed on one
whole-brain scan's input, and the report's ratios are against the shipped network."""

from __future__ import annotations

import json

import pytest
from hipposnn.options import AUTO_ROI_SHAPE
from hipposnn.unet import SpikingUNet
from hipposnn.weights import chosen_model_path, load_model

from .helpers import load_tool


def test_a_widened_network_keeps_the_default_s_neurons_and_input_and_changes_only_its_channels():
    bw = load_tool("bench_width", "bench")
    shipped = load_model(chosen_model_path("snn", roi="auto"))
    wide = bw.widened(shipped, (20, 40, 80, 160))
    assert isinstance(wide, SpikingUNet) and wide.spec.channels == (20, 40, 80, 160)
    assert wide.spec.in_channels == shipped.spec.in_channels and wide.spec.quant_levels == shipped.spec.quant_levels
    assert (wide.input_encoding, wide.initial_membrane, wide.reset) == (
        shipped.input_encoding, shipped.initial_membrane, shipped.reset)
    images = bw.scan_input(shipped.spec)
    assert images.shape == (2 * AUTO_ROI_SHAPE[0], shipped.spec.in_channels, *AUTO_ROI_SHAPE[1:])
    # wider by 1.25x: every convolution's MACs by 1.25^2 except the first's (fixed input) and the output's
    assert 1.4 < bw.macs_per_slice(wide.spec) / bw.macs_per_slice(shipped.spec) < 1.5625


def test_the_report_times_the_shipped_network_and_each_width(tmp_path):
    bw = load_tool("bench_width", "bench")
    out = tmp_path / "width.json"
    profile = tmp_path / "profile.txt"
    assert bw.main(["--threads", "1", "--repeats", "1", "--widths", "4,8,8,8", "--json", str(out),
                    "--profile", str(profile)]) == 0
    text = profile.read_text()  # the shipped network's operators: its convolutions and the skips' concatenations
    assert text.startswith("# python bench/bench_width.py") and "load before" in text
    assert "aten::mkldnn_convolution" in text or "aten::convolution" in text
    report = json.loads(out.read_text())
    assert set(report["networks"]) == {"shipped", "4,8,8,8"} and report["timesteps"] == 8
    shipped, small = report["networks"]["shipped"], report["networks"]["4,8,8,8"]
    assert shipped["macs_vs_shipped"] == 1.0 and shipped["time_vs_shipped"] == 1.0
    assert small["channels"] == [4, 8, 8, 8] and small["macs_vs_shipped"] < 0.2
    assert small["time_vs_shipped"] == pytest.approx(small["seconds_best"] / shipped["seconds_best"])
    assert small["parameters"] < shipped["parameters"] and all(s > 0 for s in small["seconds"])
