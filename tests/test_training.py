"""Training loop: resume, the three stages through the CLI, user-facing errors, torchrun/DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hipposnn.cli import main
from hipposnn.data import build_slices, load_cases
from hipposnn.errors import HippoSNNError
from hipposnn.training import TrainConfig, Trainer
from hipposnn.unet import SpikingUNet, UNet, UNetSpec
from hipposnn.weights import load_model, read_payload

from .helpers import make_msd_folder

TINY = UNetSpec(channels=(4, 8, 8, 8), dropout=0.1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_msd_folder(tmp_path_factory.mktemp("msd") / "data", n=6)


def _fit(model, sl, out, epochs, resume=False, stage="ann"):
    cfg = TrainConfig(stage=stage, epochs=epochs, batch_size=8, lr=1e-3, timesteps=4, seed=3, augment=True)
    trainer = Trainer(model, cfg, sl, sl, out, log=lambda m: None)
    trainer.fit(resume=resume)
    return trainer


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_resume_continues_exactly(synth, tmp_path, kind):
    sl = build_slices(load_cases(synth, ["hippocampus_000", "hippocampus_001"]))
    make = (lambda: UNet(TINY)) if kind == "ann" else (lambda: SpikingUNet(TINY))
    stage = "ann" if kind == "ann" else "direct"
    torch.manual_seed(0)
    straight = _fit(make(), sl, tmp_path / "a", 2, stage=stage)
    torch.manual_seed(0)
    _fit(make(), sl, tmp_path / "b", 1, stage=stage)
    torch.manual_seed(0)
    resumed = _fit(make(), sl, tmp_path / "b", 2, resume=True, stage=stage)
    for name in straight.model.weights:
        assert torch.equal(straight.model.weights[name], resumed.model.weights[name]), name
    log = json.loads((tmp_path / "b" / "log.json").read_text())["epochs"]
    assert [r["epoch"] for r in log] == [1, 2]
    header = (tmp_path / "b" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "val_dice_3d", "val_dice_2d", "lr", "seconds", "batches"} <= set(header)
    if kind == "snn":
        assert "mean_firing_rate" in header and any(h.startswith("rate_enc0_0") for h in header)


def test_three_stages_from_cli(synth, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(synth), "--fold", "0", "--folds", "3", "--seed", "1"]
    assert main(["train-ann", *common, "--out", str(run / "ann"), "--epochs", "2", "--batch-size", "8",
                 "--channels", "4,8,8,8", "--loss", "bce_dice"]) == 0
    assert main(["convert", *common, "--checkpoint", str(run / "ann" / "best.pt"), "--out", str(run / "conv"),
                 "--timesteps", "20", "--slices", "8", "--percentile", "99.9"]) == 0
    converted = load_model(run / "conv" / "converted.pt")
    assert isinstance(converted, SpikingUNet)
    assert all(v > 0 for v in converted.threshold_dict().values())
    assert main(["finetune", *common, "--checkpoint", str(run / "conv" / "converted.pt"), "--out",
                 str(run / "ft"), "--epochs", "1", "--batch-size", "8", "--timesteps", "4"]) == 0
    assert main(["train-snn", *common, "--out", str(run / "direct"), "--epochs", "1", "--batch-size", "8",
                 "--timesteps", "4", "--channels", "4,8,8,8"]) == 0
    out = tmp_path / "scores.json"
    assert main(["evaluate", *common, "--checkpoint", str(run / "ft" / "best.pt"), "--json", str(out),
                 "--split", "test", "--timesteps", "4"]) == 0
    scores = json.loads(out.read_text())
    assert isinstance(scores["mean_dice_3d"], float) and 0 <= scores["mean_dice_3d"] <= 1
    assert len(scores["cases"]) == 2 and {"name", "dice_3d"} <= set(scores["cases"][0])
    assert scores["settings"]["timesteps"] == 4 and scores["settings"]["model"] == "snn"
    assert scores["settings"]["input_encoding"] == "poisson"
    # the same weights on regular input spikes: another run, recorded as such
    again = tmp_path / "scores_regular.json"
    assert main(["evaluate", *common, "--checkpoint", str(run / "ft" / "best.pt"), "--json", str(again),
                 "--split", "test", "--timesteps", "4", "--input", "regular"]) == 0
    regular = json.loads(again.read_text())
    assert regular["settings"]["input_encoding"] == "regular"
    assert [c["name"] for c in regular["cases"]] == [c["name"] for c in scores["cases"]]
    payload = read_payload(run / "ft" / "best.pt")
    assert payload["meta"]["stage"] == "finetune" and "train_config" in payload["meta"]
    torch.load(str(run / "ft" / "last.pt"), weights_only=True)  # checkpoints load safely


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train-ann", "--data", "/nonexistent", "--out", "x"], "data folder not found"),
        (["evaluate", "--data", "{synth}", "--checkpoint", "/nonexistent.pt"], "model file not found"),
        (["train-ann", "--data", "{synth}", "--out", "x", "--fold", "7"], "--fold must be between 0 and 4"),
        (["train-ann", "--data", "{synth}", "--out", "x", "--channels", "a,b"], "comma-separated"),
        (["evaluate", "--data", "{synth}", "--checkpoint", "{bad}"], "cannot load model file"),
        (["evaluate", "--data", "{empty}", "--checkpoint", "{bad}"], "imagesTr"),
        (["evaluate", "--data", "{synth}", "--model", "ann", "--input", "regular"], "--input applies to an SNN"),
    ],
)
def test_cli_user_errors_are_one_line(synth, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(synth=synth, bad=bad, empty=empty) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _tiny_ann(synth, out, *extra):
    return ["train-ann", "--data", str(synth), "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--max-batches", "2", "--channels", "4,8,8,8", "--seed", "5", *extra]


def _one_error_line(capsys) -> str:
    """The last stderr line, which must be the error on a line of its own (not glued to a progress bar)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.rstrip("\n").split("\n")[-1]
    assert line.startswith("hipposnn: error: "), repr(err[-300:])
    return line


def test_same_seed_gives_the_same_run(synth, tmp_path):
    """Weights are initialised from --seed: the same command twice gives the same losses and weights."""
    torch.manual_seed(123)  # whatever the caller's RNG state, the run depends only on --seed
    assert main(_tiny_ann(synth, tmp_path / "a")) == 0
    torch.manual_seed(456)
    assert main(_tiny_ann(synth, tmp_path / "b")) == 0
    logs = [json.loads((tmp_path / r / "log.json").read_text())["epochs"] for r in ("a", "b")]
    assert logs[0][0]["loss"] == logs[1][0]["loss"] and logs[0][0]["val_dice_3d"] == logs[1][0]["val_dice_3d"]
    a, b = (read_payload(tmp_path / r / "final.pt")["weights"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    direct = ["train-snn", "--data", str(synth), "--epochs", "1", "--batch-size", "8",
              "--max-batches", "1", "--timesteps", "2", "--channels", "4,8,8,8", "--seed", "5"]
    for run in ("c", "d"):
        torch.manual_seed(len(run) + ord(run))
        assert main([*direct, "--out", str(tmp_path / run)]) == 0
    c, d = (json.loads((tmp_path / r / "log.json").read_text())["epochs"][0] for r in ("c", "d"))
    assert c["loss"] == d["loss"]


def test_finished_run_is_not_replaced_without_resume_or_overwrite(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_tiny_ann(synth, out)) == 0
    before = {name: (out / name).read_bytes() for name in ("best.pt", "final.pt", "last.pt")}
    capsys.readouterr()
    assert main(_tiny_ann(synth, out, "--lr", "0.01")) == 2
    line = _one_error_line(capsys)
    assert "--resume" in line and "--overwrite" in line
    assert all((out / name).read_bytes() == data for name, data in before.items())
    assert main(_tiny_ann(synth, out, "--resume", "--overwrite")) == 2
    # --overwrite starts over: a new run with the new settings, none of the old files left
    assert main(_tiny_ann(synth, out, "--overwrite", "--lr", "0.01")) == 0
    assert (out / "final.pt").read_bytes() != before["final.pt"]
    assert json.loads((out / "settings.json").read_text())["config"]["lr"] == 0.01


def test_resume_keeps_the_runs_settings(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_tiny_ann(synth, out)) == 0
    capsys.readouterr()
    for extra, flag in ((["--lr", "0.01"], "--lr 0.001, not --lr 0.01"),
                        (["--channels", "4,8,8,16"], "--channels 4,8,8,8, not --channels 4,8,8,16"),
                        (["--loss", "bce", "--batch-size", "4"], "--batch-size 8, --loss dice")):
        assert main(_tiny_ann(synth, out, "--resume", *extra)) == 2, extra  # the last --channels counts
        assert flag in _one_error_line(capsys)
    assert json.loads((out / "settings.json").read_text())["config"]["lr"] == 0.001
    # how long it runs may change: a second epoch of two more batches, recorded in settings.json
    assert main(_tiny_ann(synth, out, "--resume", "--epochs", "2", "--max-batches", "4")) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["config"]["epochs"] == 2 and settings["config"]["lr"] == 0.001
    assert [r["epoch"] for r in json.loads((out / "log.json").read_text())["epochs"]] == [1, 2]


def test_out_that_is_a_file_is_a_one_line_error(synth, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "run"):
        assert main(_tiny_ann(synth, out)) == 2
        line = _one_error_line(capsys)
        assert "is a file" in line or "under the file" in line
    assert afile.read_text() == "x"


def test_failing_run_prints_its_error_on_its_own_line_and_leaves_no_folder(synth, tmp_path, capsys, monkeypatch):
    from hipposnn.training import Trainer as T

    def broken(self):
        raise HippoSNNError("validation broke")

    monkeypatch.setattr(T, "validate", broken)
    out = tmp_path / "new" / "run"
    assert main(_tiny_ann(synth, out)) == 2
    assert _one_error_line(capsys) == "hipposnn: error: validation broke"
    assert not out.parent.exists()  # neither the run folder nor the parent it created
    # a cancelled run through the API cleans up the same way, while an existing folder is kept
    from hipposnn.pipeline import train_ann
    from hipposnn.training import TrainConfig as C

    monkeypatch.undo()
    keep = tmp_path / "keep"
    keep.mkdir()
    for folder in (out, keep):
        with pytest.raises(Exception, match="cancelled"):
            train_ann(synth, folder, C(epochs=1, batch_size=8), TINY, 0, 3, progress=lambda f, m: False,
                      log=lambda m: None)
    assert not out.parent.exists() and keep.is_dir() and not any(keep.iterdir())


@pytest.mark.parametrize("argv", [["train-ann", "--data", "d", "--out", "o", "--epochs", "0"],
                                  ["convert", "--data", "d", "--checkpoint", "c", "--out", "o", "--timesteps", "x"],
                                  ["evaluate", "--data", "d", "--threshold", "1.5"]])
def test_cli_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "train-ann" in capsys.readouterr().out


def test_torchrun_ddp_two_cpu_processes(synth, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hipposnn.cli", "train-ann", "--data", str(synth), "--fold", "0", "--folds", "3",
           "--out", str(out), "--epochs", "2", "--batch-size", "4", "--channels", "4,8,8,8", "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads((out / "log.json").read_text())["epochs"]
    assert [r["epoch"] for r in log] == [1, 2]
    # each rank takes its own 4 of every 8 slices: batches per epoch are those of one 8-slice global batch
    settings = json.loads((out / "settings.json").read_text())
    n_slices = 24 * len(settings["train"])
    assert log[0]["batches"] == n_slices // 8
    assert load_model(out / "final.pt")


def test_recipe_smoke_runs_every_stage(synth, tmp_path):
    """The reference recipe's CI variant: ANN, conversion, fine-tuning and direct training per fold."""
    config = Path(__file__).resolve().parents[1] / "configs" / "reference.json"
    out = tmp_path / "recipe"
    assert main(["recipe", "--config", str(config), "--data", str(synth), "--out", str(out), "--smoke",
                 "--jobs", "1", "--threads", "1"]) == 0
    jobs = json.loads((out / "jobs.json").read_text())
    assert not jobs["failed"]
    stages = {Path(p).name for p in jobs["finished"]}
    assert stages == {"ann", "finetune_T4", "direct_T4"}
    ann = json.loads((out / "binary" / "fold_0" / "ann" / "result.json").read_text())
    assert set(ann["converted"]) == {"4", "8"} and 0 <= ann["ann"]["mean_dice_3d"] <= 1
    tuned = json.loads((out / "binary" / "fold_0" / "finetune_T4" / "result.json").read_text())
    assert tuned["test"]["mean_firing_rate"] > 0
    # direct training is scored on the test fold at its own T only (Dice by T is a fine-tuning figure)
    direct = json.loads((out / "binary" / "fold_0" / "direct_T4" / "result.json").read_text())
    assert direct["test"]["mean_firing_rate"] > 0 and "test_by_T" not in direct
    # a rerun finds every job done and starts nothing
    assert main(["recipe", "--config", str(config), "--data", str(synth), "--out", str(out), "--smoke"]) == 0
    # a checkpoint brought back from another machine (imported.json, no last.pt) is scored, not retrained
    folder = out / "binary" / "fold_0" / "finetune_T4"
    (folder / "result.json").unlink()
    for name in ("last.pt", "final.pt"):
        (folder / name).unlink()
    (folder / "imported.json").write_text('{"from": "test"}')
    stamp = (folder / "best.pt").stat().st_mtime_ns
    assert main(["recipe", "--config", str(config), "--data", str(synth), "--out", str(out), "--smoke"]) == 0
    rescored = json.loads((folder / "result.json").read_text())
    assert rescored["imported"] and rescored["test"] == tuned["test"]
    assert (folder / "best.pt").stat().st_mtime_ns == stamp and not (folder / "last.pt").exists()


def _smoke_recipe(name: str, data: Path, out: Path, only: str) -> Path:
    """Run configs/NAME.json in its CI variant on ``data`` (one job at a time, ``--only`` ONLY); fold 0's folder."""
    config = Path(__file__).resolve().parents[1] / "configs" / f"{name}.json"
    assert main(["recipe", "--config", str(config), "--data", str(data), "--out", str(out), "--smoke",
                 "--jobs", "1", "--threads", "1", "--only", only]) == 0
    return out / "ternary" / "fold_0"


def test_lowt_recipe_trains_a_quantised_ann_converts_from_its_clips_and_scores_dice_by_t(synth, tmp_path):
    """configs/lowt_cv.json in its CI variant: quantised ANN, clip conversion (no balancing), BPTT at T."""
    out = tmp_path / "lowt"
    folder = _smoke_recipe("lowt_cv", synth, out, "*/fold_0/*")
    ann = json.loads((folder / "ann" / "result.json").read_text())
    assert load_model(folder / "ann" / "best.pt").spec.quant_levels == 8
    converted = load_model(folder / "ann" / "converted.pt")
    # thresholds are the learned clips, not a balancing statistic
    clips = {k: float(v) for k, v in load_model(folder / "ann" / "best.pt").clip_dict().items()}
    assert converted.threshold_dict() == pytest.approx(clips, rel=1e-5)
    assert set(ann["converted"]) == {"4", "8"}
    tuned = json.loads((folder / "finetune_T4" / "result.json").read_text())
    assert tuned["test"]["mean_firing_rate"] > 0 and set(tuned["test_by_T"]) == {"4"}
    assert not (folder / "direct_T4").exists()  # "direct": {"epochs": 0}
    # the CV report reads the run folder: pooled Dice by T, spikes per neuron and energy vs the ANN's
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import report_lowt_cv

    figure = tmp_path / "fig.png"
    assert report_lowt_cv.main(["--lowt", str(out), "--reference", "--figure", str(figure)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    low = summary["lowt"]
    assert low["folds"] == ["0"] and low["finetuned_folds"] == ["0"]
    assert low["ann"]["dice_3d"] == pytest.approx(ann["ann"]["mean_dice_3d"])
    assert set(low["finetuned"]) == {"4"} and low["finetuned"]["4"]["dice_3d"] == pytest.approx(
        tuned["test"]["mean_dice_3d"])
    row = low["finetuned"]["4"]
    assert row["spikes_per_neuron"] == pytest.approx(4 * tuned["test"]["mean_firing_rate"])
    assert 0 < row["energy_vs_ann"] == pytest.approx(row["energy_roi_uj"] / summary["ann_energy_roi_uj"])
    assert figure.stat().st_size > 0 and "fine-tuned at T = 4" in (out / "table.md").read_text()


def test_warm_start_recipe_trains_a_relu_ann_and_starts_the_quantised_ann_from_it(synth, tmp_path):
    """configs/lowt_cv_warm.json in its CI variant: ReLU ANN (ann_relu), then the quantised-clip ANN
    initialised from its weights, both scored on the test fold."""
    out = tmp_path / "warm"
    folder = _smoke_recipe("lowt_cv_warm", synth, out, "*/fold_0/ann")
    relu = load_model(folder / "ann_relu" / "best.pt")
    quant = load_model(folder / "ann" / "best.pt")
    assert relu.spec.quant_levels == 0 and quant.spec.quant_levels == 8
    settings = json.loads((folder / "ann" / "settings.json").read_text())
    assert settings["init"] == str(folder / "ann_relu" / "best.pt")
    assert json.loads((folder / "ann_relu" / "settings.json").read_text())["config"]["lr"] == 0.001
    assert settings["config"]["lr"] == 0.0003
    ann = json.loads((folder / "ann" / "result.json").read_text())
    assert 0 <= ann["relu_ann"]["mean_dice_3d"] <= 1 and "relu_ann_seconds" in ann
    # the CV report keeps the ReLU ANN's log and puts its Dice in the table
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import report_lowt_cv

    docs = tmp_path / "docs"
    assert report_lowt_cv.main(["--copy-from", str(out), "--lowt", str(docs), "--figure", ""]) == 0
    assert (docs / "ternary" / "fold_0" / "ann_relu" / "log.json").exists()
    summary = json.loads((docs / "summary.json").read_text())
    assert summary["lowt"]["relu_ann"]["dice_3d"] == pytest.approx(ann["relu_ann"]["mean_dice_3d"])
    assert "ReLU ANN the quantised ANN starts from" in (docs / "table.md").read_text()


def test_a_recipe_distils_the_warm_starts_relu_ann_into_the_quantised_ann(synth, tmp_path):
    """configs/lowt_cv_binary_relu32_qkd_thick6.json in its CI variant: the ReLU ANN learns from the labels
    alone, the quantised ANN from them and from that ReLU ANN; "distill" without a warm start is refused."""
    from hipposnn.recipe import load_config

    out = tmp_path / "qkd"
    _smoke_recipe("lowt_cv_binary_relu32_qkd_thick6", synth, out, "*/fold_0/ann")
    folder = out / "binary" / "fold_0"
    relu = json.loads((folder / "ann_relu" / "settings.json").read_text())
    assert relu["config"]["distill"] == 0.0 and "teacher" not in relu
    quant = json.loads((folder / "ann" / "settings.json").read_text())
    assert quant["teacher"] == str(folder / "ann_relu" / "best.pt") and quant["config"]["distill"] == 1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base": str(Path(__file__).resolve().parents[1] / "configs" / "lowt_cv.json"),
                               "ann": {"distill": 1.0}}))
    with pytest.raises(HippoSNNError, match="warm_start"):
        load_config(bad)


def test_distillation_recipe_fine_tunes_with_the_folds_ann_as_teacher(synth, tmp_path):
    """configs/lowt_cv_warm_kd.json in its CI variant: the fine-tuning's teacher is the fold's quantised ANN."""
    folder = _smoke_recipe("lowt_cv_warm_kd", synth, tmp_path / "kd", "*/fold_0/finetune_*")
    settings = json.loads((folder / "finetune_T4" / "settings.json").read_text())
    assert settings["teacher"] == str(folder / "ann" / "best.pt") and settings["config"]["distill"] == 1.0
    result = json.loads((folder / "finetune_T4" / "result.json").read_text())
    assert 0 <= result["test"]["mean_dice_3d"] <= 1


def test_a_recipe_can_distil_the_warm_starts_relu_ann_into_the_snn(synth, tmp_path):
    """configs/lowt_cv_binary_relu48_p90_kdrelu_kd_thick6.json in its CI variant: the fine-tuning's teacher is
    the fold's ReLU ANN (ann_relu), not the quantised ANN it was converted from; without a warm start, without
    distillation or with an unknown teacher the config is refused."""
    from hipposnn.recipe import load_config

    out = tmp_path / "kdrelu"
    _smoke_recipe("lowt_cv_binary_relu48_p90_kdrelu_kd_thick6", synth, out, "*/fold_0/finetune_*")
    folder = out / "binary" / "fold_0"
    settings = json.loads((folder / "finetune_T4" / "settings.json").read_text())
    assert settings["teacher"] == str(folder / "ann_relu" / "best.pt") and settings["config"]["distill"] == 1.0
    assert load_model(folder / "ann_relu" / "best.pt").spec.quant_levels == 0
    base = str(Path(__file__).resolve().parents[1] / "configs")
    for change, match in (({"finetune": {"teacher": "quantised"}}, "ann, relu"),
                          ({"finetune": {"teacher": "relu", "distill": 0.0}}, "distill"),
                          ({"ann": {"warm_start": None}}, "warm_start")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"base": base + "/lowt_cv_binary_relu48_p90_kdrelu_kd_thick6.json", **change}))
        with pytest.raises(HippoSNNError, match=match):
            load_config(bad)


def test_recipe_converts_a_finished_ann_again_without_retraining_it(synth, tmp_path):
    """tools/lowt_cv_refit.sh RECONVERT=1: a run whose ann folder links another run's trained ANN converts
    it under its own "convert" settings (here direct input) and does not train it again."""
    src = _smoke_recipe("lowt_cv_warm", synth, tmp_path / "first", "*/fold_0/ann")
    again = tmp_path / "again" / "ternary" / "fold_0"
    (again / "ann").mkdir(parents=True)
    for name in ("best.pt", "final.pt", "last.pt", "log.json", "settings.json"):
        (again / "ann" / name).symlink_to(src / "ann" / name)
    (again / "ann_relu").symlink_to(src / "ann_relu")
    assert _smoke_recipe("lowt_cv_warm_direct", synth, tmp_path / "again", "*/fold_0/finetune_*") == again
    result = json.loads((again / "ann" / "result.json").read_text())
    assert "ann_seconds" not in result and "relu_ann_seconds" not in result  # scored, not trained
    assert 0 <= result["relu_ann"]["mean_dice_3d"] <= 1
    assert all((again / "ann" / name).is_symlink() for name in ("best.pt", "final.pt", "last.pt"))
    assert load_model(again / "ann" / "converted.pt").input_encoding == "direct"
    assert load_model(src / "ann" / "converted.pt").input_encoding == "poisson"
    assert result["ann"]["mean_dice_3d"] == pytest.approx(
        json.loads((src / "ann" / "result.json").read_text())["ann"]["mean_dice_3d"])
    assert load_model(again / "finetune_T4" / "best.pt").input_encoding == "direct"
    assert "macs_per_slice" in json.loads((again / "finetune_T4" / "result.json").read_text())["test"]


def test_recipe_refuses_an_unknown_input_encoding(tmp_path):
    from hipposnn.errors import HippoSNNError
    from hipposnn.recipe import load_config

    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"base": str(Path(__file__).resolve().parents[1] / "configs" / "lowt_cv.json"),
                                "convert": {"input": "analog"}}))
    with pytest.raises(HippoSNNError, match="poisson, direct, regular"):
        load_config(path)


def test_recipe_refuses_a_warm_start_without_quantised_ann(tmp_path):
    from hipposnn.errors import HippoSNNError
    from hipposnn.recipe import load_config

    config = json.loads((Path(__file__).resolve().parents[1] / "configs" / "lowt_cv.json").read_text())
    config["ann"]["warm_start"] = {"epochs": 2}
    del config["ann"]["quant_levels"]
    config["convert"]["from_clip"] = False
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    with pytest.raises(HippoSNNError, match="warm_start"):
        load_config(path)


def test_recipe_refuses_clip_conversion_without_quantised_ann(tmp_path):
    from hipposnn.errors import HippoSNNError
    from hipposnn.recipe import load_config

    config = json.loads((Path(__file__).resolve().parents[1] / "configs" / "lowt_cv.json").read_text())
    del config["ann"]["quant_levels"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    with pytest.raises(HippoSNNError, match="quant_levels"):
        load_config(path)


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and k != "description"}
    return value


def _configs_with_a_base_and_a_committed_run() -> list:
    """Every config that holds only changes to a base and whose run is committed under docs/results."""
    root = Path(__file__).resolve().parents[1]
    runs = root / "docs" / "results"
    return sorted(p.stem for p in (root / "configs").glob("*.json")
                  if "base" in json.loads(p.read_text()) and (runs / p.stem / "config.json").is_file())


@pytest.mark.parametrize("name", _configs_with_a_base_and_a_committed_run())
def test_a_config_with_a_base_is_the_config_its_committed_run_used(name):
    """Configs that name a "base" hold only their changes; merged, they equal the full config each run
    wrote into its folder (committed under docs/results/<name>/config.json)."""
    from hipposnn.recipe import load_config

    root = Path(__file__).resolve().parents[1]
    assert "base" in json.loads((root / "configs" / f"{name}.json").read_text())
    ran = json.loads((root / "docs" / "results" / name / "config.json").read_text())
    assert _without_nulls(load_config(root / "configs" / f"{name}.json")) == _without_nulls(ran)


def test_a_config_base_chain_that_loops_is_refused(tmp_path):
    from hipposnn.errors import HippoSNNError
    from hipposnn.recipe import load_config

    (tmp_path / "a.json").write_text(json.dumps({"base": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"base": "a.json"}))
    with pytest.raises(HippoSNNError, match="loops"):
        load_config(tmp_path / "a.json")


def test_recipe_only_runs_the_chosen_jobs_and_the_ann_they_start_from(synth, tmp_path, capsys):
    config = Path(__file__).resolve().parents[1] / "configs" / "reference.json"
    out = tmp_path / "recipe"
    base = ["recipe", "--config", str(config), "--data", str(synth), "--out", str(out), "--smoke", "--threads", "1"]
    assert main(base + ["--only", "*/fold_1/finetune_*"]) == 0
    assert json.loads((out / "jobs.json").read_text())["finished"] == ["binary/fold_1/ann",
                                                                       "binary/fold_1/finetune_T4"]
    assert not (out / "binary" / "fold_0").exists()
    # a later --only run of other jobs keeps the earlier ones on the record
    assert main(base + ["--only", "*/fold_0/ann"]) == 0
    assert json.loads((out / "jobs.json").read_text())["finished"] == ["binary/fold_0/ann", "binary/fold_1/ann",
                                                                       "binary/fold_1/finetune_T4"]
    assert main(base + ["--only", "nothing/*"]) == 2
    assert "matches no job" in capsys.readouterr().err


def test_recipe_worker_stops_when_the_recipe_process_is_gone(monkeypatch):
    from hipposnn.recipe import parent_watch

    parent = os.getppid()
    alive = parent_watch(parent)
    assert alive(0.5, "epoch 1") is True
    # re-parented (to init or a subreaper): the recipe process was killed. Not a fixed PID such as 1:
    # a test run started detached already has init as its parent.
    monkeypatch.setattr(os, "getppid", lambda: parent + 1)
    assert alive(0.5, "epoch 1") is False


def test_recipe_plan_leaves_out_direct_training_with_zero_epochs():
    from hipposnn.recipe import load_config, plan

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "reference.json")
    assert any(job.stage == "direct" for job in plan(config))
    config["direct"]["epochs"] = 0
    jobs = plan(config)
    assert jobs and not any(job.stage == "direct" for job in jobs)


def test_shipped_models_load_safely_and_coding_picks_variant():
    from hipposnn import DEFAULT_CODING
    from hipposnn.weights import default_model_path, sha256_file

    for kind in ("snn", "ann"):
        for coding in ("binary", "ternary"):
            path = default_model_path(kind, coding)
            payload = read_payload(path)  # torch.load(weights_only=True) inside
            card = json.loads(path.with_suffix(".json").read_text())
            assert card["sha256"] == sha256_file(path) and card["kind"] == payload["kind"] == kind
            assert payload["meta"]["coding"] == card["coding"] == coding
        assert default_model_path(kind) == default_model_path(kind, DEFAULT_CODING)
    # the SNN was converted from the ANN of its coding: same architecture, same parameter names
    snn, ann = (read_payload(default_model_path(k)) for k in ("snn", "ann"))
    assert snn["spec"] == ann["spec"] and set(snn["weights"]) == set(ann["weights"])
    with pytest.raises(HippoSNNError, match="unknown spike coding"):
        default_model_path("snn", "quaternary")


def test_frugal_memory_flag_reaches_the_training_settings_and_may_change_on_resume():
    from hipposnn.cli import _train_config, build_parser
    from hipposnn.training import RESUME_MAY_CHANGE

    common = ["--data", "d", "--out", "o", "--checkpoint", "c.pt"]
    args = build_parser().parse_args(["finetune", *common, "--frugal-memory"])
    assert _train_config(args, "finetune").frugal_memory is True
    assert _train_config(build_parser().parse_args(["finetune", *common]), "finetune").frugal_memory is False
    assert "frugal_memory" in RESUME_MAY_CHANGE  # how it runs, not what it computes


def test_comparison_figure_gives_every_run_its_own_colour():
    """More runs than the 10-colour cycle: a zip with it dropped the 11th run from the plot."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import report_lowt_cv

    for count in (1, 10, 11, 20):
        colours = report_lowt_cv.run_colours(count)
        assert len(colours) == count and len({str(c) for c in colours}) == count


def test_a_warm_started_quantised_ann_starts_its_clips_at_the_chosen_percentile(synth, tmp_path):
    """--clip-percentile P: each clip starts at the P-th percentile of its layer's ReLU activations on the
    recipe's calibration slices (99.9 unless told; docs/models.md, "Where the clips start")."""
    from hipposnn.pipeline import _calibration_batches, requantise, slices_for, split_names, train_ann
    from hipposnn.quant import calibrate_clips

    relu = tmp_path / "relu"
    train_ann(synth, relu, TrainConfig(epochs=1, batch_size=8, seed=0), TINY, fold=0, folds=3, log=lambda m: None)
    train, _, _ = split_names(synth, 0, 3, 0)
    batches = _calibration_batches(slices_for(synth, train, "binary", TINY.context), 0)
    started = {}
    for pct in (90.0, 99.9):
        # a learning rate of 1e-12 leaves the clips where they started
        cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-12, seed=0, quant_levels=4, clip_percentile=pct)
        train_ann(synth, tmp_path / f"q{pct:g}", cfg, fold=0, folds=3, log=lambda m: None, init=relu / "best.pt")
        started[pct] = load_model(tmp_path / f"q{pct:g}" / "best.pt").clip_dict()
        expected = calibrate_clips(requantise(load_model(relu / "best.pt"), 4), batches, pct)
        assert started[pct] == pytest.approx(expected, rel=1e-6)
    assert all(started[90.0][k] < started[99.9][k] for k in started[90.0])
    assert TrainConfig().clip_percentile == 99.9
    with pytest.raises(HippoSNNError, match="clip-percentile"):
        TrainConfig(clip_percentile=0.0).validate()


def test_clip_lr_gives_each_clip_a_step_relative_to_its_start(synth, tmp_path):
    """--clip-lr R: each clip in its own Adam group at R x its calibrated start, so clips of any scale move
    by the same fraction; without it every clip stays in the network's group (and at its lr)."""
    from hipposnn.pipeline import train_ann
    from hipposnn.training import param_groups

    relu = tmp_path / "relu"
    train_ann(synth, relu, TrainConfig(epochs=1, batch_size=8, seed=0), TINY, fold=0, folds=3, log=lambda m: None)
    model = load_model(relu / "best.pt")
    assert len(param_groups(model, TrainConfig(clip_lr=0.01))) == 1  # a ReLU ANN has no clips
    moved = {}
    for name, clip_lr in (("plain", None), ("relative", 0.05)):
        # the network's lr of 1e-12 leaves the weights, and plain clips, where they start
        cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-12, seed=0, quant_levels=4, clip_percentile=90.0,
                          clip_lr=clip_lr)
        out = tmp_path / name
        train_ann(synth, out, cfg, fold=0, folds=3, log=lambda m: None, init=relu / "best.pt")
        start = torch.load(str(out / "last.pt"), map_location="cpu", weights_only=True)["optimizer"]["param_groups"]
        trained = load_model(out / "best.pt").clip_dict()
        moved[name] = trained
        if clip_lr is None:
            assert len(start) == 1
        else:  # one group for the network, one per clip at clip_lr x its start
            assert len(start) == 1 + len(trained)
            assert all(g["lr"] > 1e-12 for g in start[1:])
    assert moved["plain"] != moved["relative"]
    changes = [abs(moved["relative"][k] / moved["plain"][k] - 1) for k in moved["plain"]]
    assert max(changes) > 0.01  # a few steps at 5 % each move a clip by more than 1 % of its start
    with pytest.raises(HippoSNNError, match="clip-lr"):
        TrainConfig(clip_lr=0.0).validate()


def test_weight_average_is_what_is_validated_saved_and_resumed(synth, tmp_path):
    """--ema D: the live weights train as before; best.pt / final.pt hold their running average (every
    step folded in with weight 1 - D), validation scores the average, and a resumed run carries it exactly."""
    from hipposnn.averaging import WeightAverage

    # the average itself: d x old + (1 - d) x new, applied inside the block only
    net = UNet(TINY)
    avg = WeightAverage(net, 0.75)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    avg.update(net)
    with avg.applied(net):
        for n, p in net.named_parameters():
            assert torch.allclose(p, start[n] + 0.25), n
    for n, p in net.named_parameters():  # restored
        assert torch.equal(p, start[n] + 1.0), n
    with pytest.raises(ValueError):
        WeightAverage(net, 1.0)
    with pytest.raises(HippoSNNError, match="--ema"):
        TrainConfig(ema=1.0).validate()

    sl = build_slices(load_cases(synth, ["hippocampus_000", "hippocampus_001"]))

    def fit(out, epochs, resume=False, ema=0.9):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=epochs, batch_size=8, lr=1e-3, seed=3, ema=ema)
        trainer = Trainer(UNet(TINY), cfg, sl, sl, out, log=lambda m: None)
        trainer.fit(resume=resume)
        return trainer

    plain = fit(tmp_path / "plain", 2, ema=0.0)
    straight = fit(tmp_path / "a", 2)
    for name in plain.model.weights:  # the averaging does not change what the optimiser does
        assert torch.equal(plain.model.weights[name], straight.model.weights[name]), name
    final = load_model(tmp_path / "a" / "final.pt")
    for name, value in straight.average.shadow.items():
        key = name.split(".", 1)[1]
        assert torch.equal(final.weights[key], value), name
        assert not torch.equal(final.weights[key], straight.model.weights[key]), name
    fit(tmp_path / "b", 1)
    resumed = fit(tmp_path / "b", 2, resume=True)
    for name, value in straight.average.shadow.items():
        assert torch.equal(resumed.average.shadow[name], value), name
    # a checkpoint written without the option (no average in it) resumes with the average started there
    fit(tmp_path / "c", 1, ema=0.0)
    state = torch.load(str(tmp_path / "c" / "last.pt"), weights_only=True)
    state["config"] = json.dumps({k: v for k, v in json.loads(state["config"]).items() if k != "ema"})
    torch.save(state, str(tmp_path / "c" / "last.pt"))
    late = fit(tmp_path / "c", 2, resume=True)
    assert late.average is not None and late.epoch == 2
    scores = [[r["val_dice_3d"] for r in json.loads((tmp_path / run / "log.json").read_text())["epochs"]]
              for run in ("a", "b")]
    assert scores[0] == scores[1]  # the average was validated the same way, resumed or not


def test_averaged_models_hold_the_mean_weights_and_refuse_models_that_differ_elsewhere(tmp_path):
    """tools/soup_checkpoints.py over hipposnn.averaging.average_payloads: the mean of two SNNs of one conversion
    loads and runs; models whose thresholds (or layers) differ are refused with one line, not averaged."""
    from hipposnn.averaging import average_payloads
    from hipposnn.weights import save_model

    from .helpers import load_tool

    torch.manual_seed(0)
    a = SpikingUNet.from_ann(UNet(TINY))
    b = SpikingUNet.from_ann(UNet(TINY))  # other weights, the same thresholds
    save_model(a, tmp_path / "a.pt")
    save_model(b, tmp_path / "b.pt")
    tool = load_tool("soup_checkpoints")
    assert tool.main(["--checkpoints", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                      "--out", str(tmp_path / "soup.pt")]) == 0
    soup = load_model(tmp_path / "soup.pt")
    for name in a.weights:
        assert torch.allclose(soup.weights[name], (a.weights[name] + b.weights[name]) / 2), name
    assert soup.threshold_dict() == a.threshold_dict()
    assert read_payload(tmp_path / "soup.pt")["meta"]["averaged_from"] == [str(tmp_path / "a.pt"),
                                                                         str(tmp_path / "b.pt")]
    b.set_threshold(next(iter(b.threshold_dict())), 2.0)
    save_model(b, tmp_path / "b2.pt")
    with pytest.raises(HippoSNNError, match="thresholds"):
        average_payloads([read_payload(tmp_path / "a.pt"), read_payload(tmp_path / "b2.pt")])
    assert tool.main(["--checkpoints", str(tmp_path / "a.pt"), str(tmp_path / "b2.pt"),
                      "--out", str(tmp_path / "bad.pt")]) == 2
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(HippoSNNError, match="two"):
        average_payloads([read_payload(tmp_path / "a.pt")])
