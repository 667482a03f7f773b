"""tools/probe_clip_start.py: channel equalisation keeps the ReLU network's function; the probe scores
each fold's untrained quantised ANN as evaluate_model does."""

from __future__ import annotations

import json

import pytest
import torch
from hipposnn.pipeline import _calibration_batches, evaluate_model, requantise, slices_for, split_names
from hipposnn.quant import calibrate_clips, positive_percentile
from hipposnn.unet import UNet, UNetSpec
from hipposnn.weights import load_model, save_model

from .helpers import load_tool, make_msd_folder

SPEC = UNetSpec(channels=(4, 8, 8), dropout=0.0)


def test_equalising_channels_keeps_the_function_and_levels_every_channels_percentile():
    tool = load_tool("probe_clip_start")
    torch.manual_seed(0)
    model = UNet(SPEC).eval()
    batches = [torch.rand(4, 1, 32, 32) for _ in range(2)]
    before = torch.cat([model(x) for x in batches]).detach()
    levels = {name: positive_percentile(acts, 95.0) for name, acts in tool.hidden_activations(model, batches).items()}
    scales = tool.equalise_channels(model, batches, 95.0)
    after = torch.cat([model(x) for x in batches]).detach()
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5 * float(before.abs().max()))
    assert any(abs(s - 1.0) > 0.05 for values in scales.values() for s in values)  # something did move
    for name, acts in tool.hidden_activations(model, batches).items():  # each channel's now at its layer's
        for row in acts:
            if (row > 0).any():
                assert positive_percentile(row, 95.0) == pytest.approx(levels[name], rel=1e-4), name


def test_probe_scores_the_untrained_quantised_ann_of_every_fold(tmp_path):
    tool = load_tool("probe_clip_start")
    data = make_msd_folder(tmp_path / "data", n=10)  # ten: each fold keeps a validation crop
    relu_path = tmp_path / "run" / "binary" / "fold_0" / "ann_relu" / "best.pt"
    torch.manual_seed(1)
    save_model(UNet(SPEC), relu_path)
    out = tmp_path / "probe.json"
    assert tool.main(["--run", str(tmp_path / "run"), "--data", str(data), "--percentiles", "50", "99.9",
                      "--threads", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    fold = record["folds"][0]
    assert [f["fold"] for f in record["folds"]] == [0]
    assert set(fold["quantised"]) == {"50", "50/equalised", "99.9", "99.9/equalised"}
    train, val, test = split_names(data, 0, 5, 0)
    assert val and fold["val_cases"] == len(val) and fold["test_cases"] == len(test)
    relu = load_model(relu_path)
    quantised = requantise(relu, 8)
    calibrate_clips(quantised, _calibration_batches(slices_for(data, train, "binary", SPEC.context), 0), 50.0)
    assert fold["quantised"]["50"]["test"] == pytest.approx(
        evaluate_model(quantised, data, test, coding="binary")["mean_dice_3d"])
    assert record["chosen_on_validation"] in fold["quantised"]
    assert record["mean_over_folds"]["relu_ann"]["val"] == pytest.approx(fold["relu_ann"]["val"])
    eq = fold["quantised"]["50/equalised"]
    assert eq["max_logit_change"] <= 1e-4 * max(eq["max_logit"], 1.0)


def test_clip_movement_compares_each_fold_s_trained_clips_with_the_start_the_probe_recomputed(tmp_path):
    tool = load_tool("probe_clip_start")
    probe = {"folds": [{"fold": 0, "quantised": {"99.9": {"clips": {"a": 2.0, "b": 100.0}}}},
                       {"fold": 1, "quantised": {"99.9": {"clips": {"a": 1.0, "b": 50.0}}}}]}
    for fold, trained in ((0, {"a": 2.1, "b": 99.0}), (1, {"a": 1.0, "b": 50.5})):
        path = tmp_path / "binary" / f"fold_{fold}" / "ann" / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"thresholds": trained}))
    movement = tool.clip_movement(probe, tmp_path)
    assert [f["fold"] for f in movement["folds"]] == [0, 1]
    assert movement["folds"][0]["max_abs_move"] == pytest.approx(1.0)  # b: 100 -> 99
    assert movement["folds"][0]["max_rel_move"] == pytest.approx(0.05)  # a: 2.0 -> 2.1
    assert movement["max_abs_move"] == pytest.approx(1.0) and movement["folds"][1]["start_range"] == [1.0, 50.0]
    # --movement-start: a CV whose clips started elsewhere is compared with the probe's clips at that percentile
    probe_path = tmp_path / "probe.json"
    for fold in probe["folds"]:
        fold["quantised"]["90"] = {"clips": {"a": 1.0, "b": 66.0}}
    probe_path.write_text(json.dumps(probe))
    out = tmp_path / "movement.json"
    assert tool.main(["--run", str(tmp_path), "--json", str(probe_path), "--movement", str(tmp_path),
                      "--movement-start", "90", "--movement-json", str(out)]) == 0
    moved = json.loads(out.read_text())
    assert moved["start_percentile"] == "90" and moved["folds"][0]["max_rel_move"] == pytest.approx(1.1)  # a: 1 -> 2.1
    with pytest.raises(SystemExit):
        tool.main(["--run", str(tmp_path), "--json", str(probe_path), "--movement", str(tmp_path),
                   "--movement-start", "95", "--movement-json", str(out)])
