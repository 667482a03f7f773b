"""Every paper experiment runs end to end in smoke mode and writes its CSV, PNG and summary."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
from hipposnn.experiments import NAMES, add_experiment_parser, run_experiment, run_one
from hipposnn.experiments.common import SETTINGS


def test_cli_hook_parses_and_runs(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_experiment_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["experiment", "fig6b", "--smoke", "--out", str(tmp_path)])
    assert run_experiment(args) == 0
    assert (tmp_path / "fig6b.csv").exists() and (tmp_path / "table3.csv").exists()
    with pytest.raises(SystemExit):
        parser.parse_args(["experiment", "table9"])


def test_modes_are_complete() -> None:
    assert set(SETTINGS) == {"smoke", "reduced", "full"}
    assert all(set(SETTINGS["smoke"]) == set(SETTINGS[m]) for m in SETTINGS)
    assert SETTINGS["full"]["folds"] == [0, 1, 2, 3, 4] and max(SETTINGS["full"]["fig6a_T"]) >= 1000
    assert max(SETTINGS["reduced"]["fig6a_T"]) >= 1000
    assert 0.48 in SETTINGS["reduced"]["thresholds"]


def test_every_experiment_smoke(tmp_path: Path) -> None:
    """One shared output folder, so the tiny synthetic models are trained once and reused."""
    for name in NAMES:
        summary = run_one(name, "smoke", tmp_path, log=lambda msg: None)
        assert summary["mode"] == "smoke"
        rows = list(csv.DictReader(open(tmp_path / f"{name}.csv")))
        assert rows, name
        assert (tmp_path / f"exp_{name}.png").stat().st_size > 1000
        assert json.loads((tmp_path / f"{name}.json").read_text())["experiment"] == name
    t2 = list(csv.DictReader(open(tmp_path / "table2.csv")))
    assert [float(r["threshold"]) for r in t2] == SETTINGS["smoke"]["thresholds"]
    t1 = list(csv.DictReader(open(tmp_path / "table1.csv")))
    assert {r["loss"] for r in t1} == {"bce", "dice", "bce_dice"}
    assert {r["model"] for r in t1} == {"ANN", "converted", "fine-tuned"}
    t4 = list(csv.DictReader(open(tmp_path / "table4.csv")))
    assert {r["coding"] for r in t4} == {"binary", "ternary"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in t4)


def test_fold_models_resumes_an_interrupted_training(tmp_path: Path) -> None:
    """best.pt appears after the first epoch: a training cut short must be resumed, not taken as done,
    and everything downstream of a retrained ANN made again."""
    from hipposnn.experiments.common import Context, fold_models

    ctx = Context("table1", "smoke", tmp_path, log=lambda msg: None)
    first = fold_models(ctx, "binary", 0, "bce", reuse=False)
    work = first["ann"].parent.parent
    assert all((work / d / "final.pt").exists() for d in ("ann", "finetune"))
    stamps = {p: p.stat().st_mtime_ns for p in (first["converted"], first["finetuned"])}
    fold_models(ctx, "binary", 0, "bce", reuse=False)  # everything finished: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    (work / "ann" / "final.pt").unlink()  # as if the ANN run had been stopped after its best epoch
    again = fold_models(ctx, "binary", 0, "bce", reuse=False)
    assert (work / "ann" / "final.pt").exists()
    assert all(p.stat().st_mtime_ns > stamps[p] for p in (again["converted"], again["finetuned"]))
