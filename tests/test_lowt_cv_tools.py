"""tools/lowt_cv_by_t.py and tools/probe_readout_smoothing.py on a tiny synthetic CV run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hipposnn.conversion import convert_from_clip
from hipposnn.pipeline import evaluate_model
from hipposnn.quant import calibrate_clips
from hipposnn.unet import UNet, UNetSpec
from hipposnn.weights import load_model, save_model

from .helpers import load_tool, make_msd_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-fold recipe-like run: each fold a quantised ANN (ann/) and its direct-input SNN (finetune_T4/)."""
    root = tmp_path_factory.mktemp("by_t")
    data = make_msd_folder(root / "data", n=6)  # six: the final split holds one validation crop
    names = sorted(p.name.split(".")[0] for p in (data / "imagesTr").glob("*.nii.gz"))
    run = root / "run"
    spec = {"channels": [4, 8], "dropout": 0.0, "quant_levels": 4}
    (run).mkdir()
    (run / "config.json").write_text(json.dumps({"spec": spec}))
    for fold, test in enumerate((names[:3], names[3:])):
        torch.manual_seed(fold)
        ann = UNet(UNetSpec(channels=(4, 8), dropout=0.0, quant_levels=4))
        calibrate_clips(ann, [torch.rand(4, 1, 56, 48)])
        folder = run / "binary" / f"fold_{fold}"
        save_model(ann, folder / "ann" / "best.pt")
        save_model(convert_from_clip(ann, input_encoding="direct"), folder / "finetune_T4" / "best.pt")
        (folder / "finetune_T4" / "result.json").write_text(json.dumps({"test_cases": test}))
    return data, run


def test_scores_every_fold_at_every_t_as_evaluate_does(run, tmp_path):
    data, folder = run
    tool = load_tool("lowt_cv_by_t")
    out, figure = tmp_path / "out", tmp_path / "fig.png"
    assert tool.main(["--run", str(folder), "--data", str(data), "--trained-t", "4", "--timesteps", "8", "1", "4",
                      "--threads", "1", "--out", str(out), "--figure", str(figure)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert list(rows) == ["ann", "1", "4", "8"]  # the ANN first, then T ascending
    assert all(len(r["per_fold_dice_3d"]) == 2 and r["n_cases"] == 6 for r in rows.values())
    # the T = 4 row is evaluate_model's score of each fold's SNN on its own test cases, pooled over the cases
    fold_1 = folder / "binary" / "fold_1"
    direct = evaluate_model(load_model(fold_1 / "finetune_T4" / "best.pt"), data,
                            json.loads((fold_1 / "finetune_T4" / "result.json").read_text())["test_cases"], 4,
                            "binary")
    assert rows["4"]["per_fold_dice_3d"][1] == pytest.approx(direct["mean_dice_3d"], abs=1e-4)
    # more timesteps, more spikes and more energy; the ANN is the energy unit
    assert rows["1"]["spikes_per_neuron"] < rows["4"]["spikes_per_neuron"] < rows["8"]["spikes_per_neuron"]
    assert rows["1"]["energy_vs_ann"] < rows["8"]["energy_vs_ann"] and rows["ann"]["energy_vs_ann"] == 1.0
    table = (out / "table.md").read_text()
    assert "| quantised-clip ANN |" in table and "| fine-tuned at T = 4 | 4 |" in table
    assert "run at T = 8 | 8 |" in table and figure.stat().st_size > 10_000


def test_a_folder_that_is_not_a_recipe_run_is_refused(tmp_path, capsys):
    tool = load_tool("lowt_cv_by_t")
    with pytest.raises(SystemExit) as exc:
        tool.main(["--run", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "not a recipe run" in capsys.readouterr().err


def test_readout_smoothing_probe_scores_raw_maps_as_evaluate_does(run, tmp_path):
    data, folder = run
    probe = load_tool("probe_readout_smoothing")
    flat = probe.smooth(np.full((6, 8, 8), 0.3, np.float32), 1.0)
    assert np.allclose(flat, 0.3, atol=1e-5)  # a constant map stays constant
    spike = np.zeros((9, 9, 9), np.float32)
    spike[4, 4, 4] = 1.0
    blurred = probe.smooth(spike, 0.7)
    assert blurred.max() < 0.5 and blurred.sum() == pytest.approx(1.0, abs=0.02)
    assert probe.smooth(spike, 0.0) is spike
    out = tmp_path / "probe.json"
    ann = folder / "binary" / "fold_0" / "ann" / "best.pt"
    snn = ann.parent.parent / "finetune_T4" / "best.pt"
    assert probe.main(["--run", str(folder), "--data", str(data), "--trained-t", "4", "--sigmas", "0", "0.7",
                       "--model", str(ann), "1", "binary", "--model", str(snn), "4", "binary", "--threads", "1",
                       "--largest", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    fold_0 = folder / "binary" / "fold_0"
    names = json.loads((fold_0 / "finetune_T4" / "result.json").read_text())["test_cases"]
    raw = evaluate_model(load_model(fold_0 / "finetune_T4" / "best.pt"), data, names, 4, "binary")
    assert record["cv"]["fold_0"]["snn"]["0.0"] == pytest.approx(raw["mean_dice_3d"], abs=1e-4)
    # --largest: every setting also with its mask's largest connected component only, as the pipeline pastes it
    assert set(record["cv"]["pooled"]) == {"snn", "ann"}
    assert set(record["cv"]["pooled"]["ann"]) == {"0.0", "0.7", "0.0+lcc", "0.7+lcc"}
    # two files of the same name are kept apart by their paths
    assert {v["timesteps"] for v in record["validation"].values()} == {1, 4} and str(ann) in record["validation"]
    with pytest.raises(SystemExit):
        probe.main(["--model", str(ann), "x", "binary", "--json", str(out)])


def test_the_wholebrain_mode_smooths_what_segment_thresholds_only_while_it_evaluates(tmp_path, monkeypatch):
    probe = load_tool("probe_readout_smoothing")
    import hipposnn.inference as inference

    eval_sets = load_tool("eval_sets")
    original = inference._predict
    spike = np.zeros((9, 9, 9), np.float32)
    spike[4, 4, 4] = 1.0
    monkeypatch.setattr(inference, "_predict", lambda *a, **k: [spike])
    patched = inference._predict
    seen = {}

    def fake_run(argv):
        seen["argv"] = list(argv)
        seen["maps"] = inference._predict()
        return {"meta": {"started": "now"}}

    monkeypatch.setattr(eval_sets, "run", fake_run)
    out = tmp_path / "wb"
    out.mkdir()
    assert probe.main(["--wholebrain", "1.0", "--", "--model", "snn-t8", "--out", str(out)]) == 0
    assert seen["argv"] == ["--model", "snn-t8", "--out", str(out)]
    assert seen["maps"][0].max() < 0.5 and seen["maps"][0].sum() == pytest.approx(1.0, abs=0.05)
    assert inference._predict is patched and original is not None  # restored after the evaluation
    assert json.loads((out / "probe.json").read_text())["sigma_voxels"] == 1.0
    assert probe.main(["--wholebrain", "1.0", "--", "--model", "snn-t8"]) == 2  # no --out: refused


def test_the_shipping_tool_adds_rescored_t_to_the_card_and_refuses_other_models():
    ship = load_tool("ship_lowt_model")
    row = {"dice_3d": 0.8885, "sd_3d": 0.02, "spikes_per_neuron": 0.85, "energy_vs_ann": 0.178, "seconds": 9.0}
    cv = {"finetuned_by_T": {"16": dict(row, dice_3d=0.8894), "8": dict(row)}, "quantised_ann": {"dice_3d": 0.89}}
    by_t = {"tool": "tools/lowt_cv_by_t.py", "run": "runs/x",
            "rows": {"ann": {"dice_3d": 0.89}, "1": dict(row, dice_3d=0.0973), "8": dict(row), "32": dict(row)}}
    ship.add_rescored_t(cv, by_t, "by_t/summary.json")
    assert list(cv["finetuned_by_T"]) == ["1", "8", "16", "32"]  # sorted by T, the ANN row left out
    assert cv["finetuned_by_T"]["1"]["dice_3d"] == 0.0973 and "seconds" not in cv["finetuned_by_T"]["1"]
    assert cv["finetuned_by_T_rescored"]["source"] == "by_t/summary.json"
    line = ship._cv_line(cv, "- Cross-validation", 8)
    assert "T = 1: 0.0973 (0.178 x)" in line and "T = 32:" in line
    by_t["rows"]["8"] = dict(row, dice_3d=0.8700)
    with pytest.raises(SystemExit, match="not the same models"):
        ship.add_rescored_t(cv, by_t, "by_t/summary.json")


def test_readout_probe_chooses_the_setting_on_each_folds_validation_crops(run, tmp_path):
    """--validation scores each fold's validation crops (where the choice is made) beside its test crops,
    --volume adds the pipeline's constant-volume cut, --thresholds other cuts; a run whose test crops are
    not the recipe's fold split is refused."""
    from hipposnn.pipeline import split_names
    from hipposnn.readout import smooth_readout

    _, folder = run
    data = make_msd_folder(tmp_path / "data", n=12)  # twelve: each fold's training part holds a validation crop
    probe = load_tool("probe_readout_smoothing")
    recipe_like = tmp_path / "run"
    fold = recipe_like / "binary" / "fold_0"
    for stage in ("ann", "finetune_T4"):
        (fold / stage).mkdir(parents=True)
        (fold / stage / "best.pt").symlink_to(folder / "binary" / "fold_0" / stage / "best.pt")
    _, val, test = split_names(data, 0, 5, 0)
    assert val and test
    (fold / "finetune_T4" / "result.json").write_text(json.dumps({"test_cases": test}))
    out = tmp_path / "probe.json"
    assert probe.main(["--run", str(recipe_like), "--data", str(data), "--trained-t", "4", "--sigmas", "0", "1.0",
                       "--thresholds", "0.5", "0.4", "--volume", "--validation", "--threads", "1",
                       "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    keys = {"0.0", "0.0@0.4", "1.0", "1.0@0.4", "1.0@vol"}
    assert set(record["cv"]["pooled"]["snn"]) == keys and set(record["cv_validation"]["pooled"]["snn"]) == keys
    chosen = record["chosen_on_validation"]["snn"]
    validation = record["cv_validation"]["pooled"]["snn"]
    assert chosen["validation"] == max(validation.values())
    assert chosen["raw_test"] == record["cv"]["pooled"]["snn"]["0.0"]
    assert chosen["test"] == record["cv"]["pooled"]["snn"][chosen["setting"]]
    # the "vol" cut is the pipeline's readout step: same voxel count as the raw map at 0.5
    prob = np.random.default_rng(0).random((6, 10, 10)).astype(np.float32)
    assert (smooth_readout(prob, 1.0) > 0.5).sum() == (prob > 0.5).sum()
    (fold / "finetune_T4" / "result.json").write_text(json.dumps({"test_cases": val}))
    with pytest.raises(SystemExit, match="not fold 0"):
        probe.main(["--run", str(recipe_like), "--data", str(data), "--trained-t", "4", "--validation",
                    "--threads", "1", "--json", str(out)])


def test_the_shipping_tool_cites_the_readout_step_from_the_probe(tmp_path):
    """--readout: the card's readout block is the probe's choice on the folds' validation crops, its CV test
    Dice, the model file's own held-out crops at that setting and the whole-brain rows with the step."""
    ship = load_tool("ship_lowt_model")
    probe = {"chosen_on_validation": {"snn": {"setting": "1.0@vol", "validation": 0.9038, "test": 0.8995,
                                              "raw_validation": 0.9022, "raw_test": 0.8975}},
             "validation": {"m.pt": {"dice_3d": {"0.0": 0.8966, "1.0@vol": 0.8999}}}}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(probe))
    table = tmp_path / "table.csv"
    table.write_text("set,dice_mean,failures,volume_ratio_mean\nixi_nichart,0.8238,0,0.891\n")
    block = ship.readout_metrics(path, "m.pt", table)
    assert (block["cv_test_dice_3d"], block["cv_test_dice_3d_raw"]) == (0.8995, 0.8975)
    assert block["heldout_dice_3d"] == 0.8999
    line = ship.readout_line(block)
    assert "cut at the raw mask's volume" in line and "CV test 3D Dice 0.8995 (raw map 0.8975)" in line
    assert "held-out crops 0.8999 (raw 0.8966)" in line and "ixi_nichart Dice 0.824, 0 below 0.5" in line
    # a setting with the probe's --largest suffix is described, not misread as a threshold
    probe["chosen_on_validation"]["snn"]["setting"] = "1.0@vol+lcc"
    probe["validation"]["m.pt"]["dice_3d"]["1.0@vol+lcc"] = 0.9001
    path.write_text(json.dumps(probe))
    line = ship.readout_line(ship.readout_metrics(path, "m.pt", None))
    assert "a Gaussian of 1.0 voxel cut at the raw mask's volume, then the mask's largest connected component" in line
    assert "held-out crops 0.9001" in line
    assert "pipeline" not in ship.readout_metrics(path, "m.pt", None)  # the choice is the pipeline's own
    # a model whose validation chose another setting: the card gives both, and calls only the default the pipeline's
    probe["chosen_on_validation"]["snn"] = {"setting": "0.0+lcc", "validation": 0.9037, "test": 0.9,
                                            "raw_validation": 0.9036, "raw_test": 0.8998}
    probe["validation"]["m.pt"]["dice_3d"].update({"0.0+lcc": 0.8975, "1.0@vol+lcc": 0.8988})
    probe["cv"] = {"pooled": {"snn": {"0.0+lcc": 0.9, "1.0@vol+lcc": 0.9003}}}
    path.write_text(json.dumps(probe))
    block = ship.readout_metrics(path, "m.pt", None)
    assert block["pipeline"] == {"setting": "1.0@vol+lcc", "cv_test_dice_3d": 0.9003, "heldout_dice_3d": 0.8988}
    line = ship.readout_line(block)
    assert line.startswith("- With the readout step (a Gaussian of 0.0 voxel cut at 0.5, then")
    assert line.endswith("with what `hipposnn segment` applies by default (a Gaussian of 1.0 voxel cut at the raw "
                         "mask's volume, then the mask's largest connected component): CV test 3D Dice 0.9003, "
                         "held-out crops 0.8988")
    with pytest.raises(SystemExit, match="no --model row"):
        ship.readout_metrics(path, "other.pt", None)
    path.write_text(json.dumps({"validation": {}}))
    with pytest.raises(SystemExit, match="no choice on validation"):
        ship.readout_metrics(path, "m.pt", None)
