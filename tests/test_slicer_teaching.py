"""hipposnn.teaching: what the teaching view shows, computed from the shipped SNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hipposnn.encoding import make_generator
from hipposnn.metrics import ann_macs
from hipposnn.simulate import snn_logits
from hipposnn.teaching import input_spike_trains, normalised_slices, teaching_view
from hipposnn.unet import SpikingUNet, UNetSpec
from hipposnn.weights import default_model_path, load_model


def _roi(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((24, 56, 48)) * 100).astype(np.float32)


def test_input_spike_trains_binary_and_ternary():
    roi = _roi()
    trains = input_spike_trains(roi, 5, timesteps=200, seed=3)
    assert set(np.unique(trains["binary"])) <= {0, 1}
    assert set(np.unique(trains["ternary"])) <= {-1, 0, 1} and trains["ternary"].min() == -1
    # the mean spike approaches the normalised input
    for coding in ("binary", "ternary"):
        x = normalised_slices(roi, coding)[5, 0]
        assert np.abs(trains[coding].mean(0) - x).mean() < 0.05
    assert np.array_equal(input_spike_trains(roi, 5, 200, 3)["binary"], trains["binary"])
    with pytest.raises(ValueError):
        input_spike_trains(roi, 24)


def test_a_regular_input_model_shows_its_regular_input_spikes():
    roi = _roi()
    trains = input_spike_trains(roi, 5, timesteps=8, seed=3, encoding="regular")
    for coding in ("binary", "ternary"):
        x = normalised_slices(roi, coding)[5, 0]
        assert np.abs(trains[coding].astype(np.float32).sum(0) - 8 * x).max() < 1.0  # never a spike off
    with pytest.raises(ValueError, match="regular"):
        input_spike_trains(roi, 5, encoding="direct")
    model = load_model(default_model_path("snn"), "snn")
    model.input_encoding = "regular"
    view = teaching_view(model, roi, 5, timesteps=8, coding="binary", seed=3)
    assert np.array_equal(view.input_spikes["binary"], trains["binary"]) and view.input_encoding == "regular"
    # the whole-brain default takes the image itself: the view says so (its spike trains only illustrate coding)
    default = load_model(default_model_path("snn", "binary", roi="auto"), "snn")
    assert teaching_view(default, roi, 5, timesteps=8, coding="binary", seed=3).summary()["input_encoding"] == "direct"


def test_teaching_view_on_shipped_snn_matches_a_direct_run():
    model = load_model(default_model_path("snn"), "snn")
    roi = _roi(1)
    view = teaching_view(model, roi, 12, timesteps=8, coding="binary", seed=0)
    assert view.probability.shape == (8, 56, 48)
    # the last entry of the trace is what a plain 8-step run (same seed) outputs
    x = torch.from_numpy(normalised_slices(roi, "binary", model.spec.context)[12:13])
    with torch.no_grad():
        direct = torch.sigmoid(snn_logits(model, x, 8, make_generator(0), "binary", chunk=8))[0, 0].numpy()
    assert np.allclose(view.probability[-1], direct, atol=1e-5)
    assert set(view.firing_rates) == {layer.name for layer in model.layers if layer.spiking}
    assert all(0.0 <= r <= 1.0 for r in view.firing_rates.values())
    assert view.macs == ann_macs(model.layers, model.spec, 56, 48)
    e = view.energy
    assert e["snn_energy_pj"] == pytest.approx(0.9 * e["snn_synops"])
    assert e["ann_energy_pj"] == pytest.approx(4.6 * e["ann_macs"])
    assert e["snn_synops"] == pytest.approx(sum(view.synops.values()))
    summary = view.summary()
    assert summary["timesteps"] == 8 and list(summary["firing_rates"]) == [n for n in view.layer_order if n != "out"]
    assert view.input_encoding == summary["input_encoding"] == model.input_encoding  # the view says what it saw


def test_teaching_view_rejects_an_ann_and_silent_network_costs_nothing():
    model = load_model(default_model_path("snn"), "snn")
    with pytest.raises(TypeError):
        teaching_view(model.to_ann(), _roi(), 0)
    silent = SpikingUNet(UNetSpec(channels=(4, 8)))
    for name in silent.threshold_dict():
        silent.set_threshold(name, 1e9)
    view = teaching_view(silent, _roi(), 0, timesteps=4)
    assert all(r == 0.0 for r in view.firing_rates.values())
    # only the input spikes cost accumulates in the first layer; everything later is silent
    assert view.synops["enc0_0"] > 0 and all(v == 0 for k, v in view.synops.items() if k != "enc0_0")
