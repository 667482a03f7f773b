"""Output files and model files: atomic writing, permissions, names, verified weights (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hipposnn import weights
from hipposnn.atomicio import OutputGroup, atomic_write_text
from hipposnn.cli import main
from hipposnn.errors import HippoSNNError
from hipposnn.outputs import output_names

from .helpers import make_msd_folder


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_msd_folder(tmp_path_factory.mktemp("msd") / "data", n=4)


def _one_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    return code, lines


def test_atomic_write_follows_umask_and_output_group_is_all_or_nothing(tmp_path) -> None:
    previous = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o664
    (tmp_path / "b.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with OutputGroup() as group:
            group.add(tmp_path / "c.txt", lambda name: Path(name).write_text("c"))
            group.add(tmp_path / "b.txt", lambda name: Path(name).write_text("new"))
            raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    assert (tmp_path / "b.txt").read_text() == "old"


def test_output_names_are_unique_and_deterministic(tmp_path) -> None:
    inputs = [Path("x/a/T1.mgz"), Path("x/b/T1.mgz"), Path("c/T1.nii.gz"), Path("c/t1.mgz"), Path("c/s1.nii"),
              Path("d/c/T1.nii.gz")]
    names = output_names(inputs)
    assert names == ["a_T1", "b_T1", "c_T1_niigz", "c_t1_mgz", "s1", "c_T1_niigz_2"]
    assert output_names(inputs) == names and len({n.lower() for n in names}) == len(names)


@pytest.fixture()
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """The shipped models in a temporary folder that the package takes for its models folder."""
    folder = tmp_path / "models"
    shutil.copytree(weights.MODELS_DIR, folder)
    monkeypatch.setattr(weights, "MODELS_DIR", folder)
    return folder


def test_tampered_shipped_model_is_refused(shipped_copy, synth, capsys, tmp_path) -> None:
    """Issue 12 item 1: a shipped model whose weights were altered loaded without complaint."""
    path = shipped_copy / "hipposnn_ann_ternary.pt"
    weights.read_payload(path)  # intact: fine
    payload = torch.load(str(path), weights_only=True)
    name = sorted(payload["weights"])[0]
    payload["weights"][name] = payload["weights"][name] * 1.01
    torch.save(payload, str(path))
    with pytest.raises(HippoSNNError, match="does not match the SHA-256 in its card"):
        weights.read_payload(path)
    code, lines = _one_line(capsys, ["evaluate", "--data", str(synth), "--model", "ann", "--coding", "ternary"])
    assert code == 2 and len(lines) == 1 and "does not match the SHA-256" in lines[0]
    t1 = tmp_path / "t1.nii.gz"
    _write_t1(t1)
    code, lines = _one_line(capsys, ["segment", str(t1), "-o", str(tmp_path / "out"), "--model", "ann",
                                     "--coding", "ternary", "--roi", "crop", "--quiet"])
    assert code == 2 and len(lines) == 1 and "does not match the SHA-256" in lines[0]
    assert not (tmp_path / "out").exists()
    # a missing card is refused too (a shipped model is only used when it can be verified)
    (shipped_copy / "hipposnn_snn_ternary.json").unlink()
    with pytest.raises(HippoSNNError, match="card"):
        weights.read_payload(shipped_copy / "hipposnn_snn_ternary.pt")


def _write_t1(path: Path) -> None:
    import nibabel as nib
    import numpy as np

    data = np.random.default_rng(0).normal(100, 15, (30, 50, 36)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


@pytest.mark.parametrize("damage", ["shape", "missing", "spec"])
def test_checkpoint_whose_spec_does_not_match_its_weights_is_one_line(synth, tmp_path, capsys, damage) -> None:
    """Issue 12 items 1/10: wrong shapes or missing keys ended in a traceback (RuntimeError, KeyError)."""
    payload = weights.read_payload(weights.default_model_path("ann", "ternary"))
    if damage == "shape":
        payload["spec"] = {**payload["spec"], "channels": [8, 16, 32, 64]}
    elif damage == "missing":
        del payload["weights"][sorted(payload["weights"])[0]]
    else:
        del payload["spec"]
    bad = tmp_path / "bad.pt"
    torch.save(payload, str(bad))
    code, lines = _one_line(capsys, ["evaluate", "--data", str(synth), "--checkpoint", str(bad)])
    assert code == 2 and len(lines) == 1 and "weights do not match its architecture" in lines[0], lines
    with pytest.raises(HippoSNNError, match="bad.pt is inconsistent"):
        weights.load_model(bad)


def test_evaluate_json_is_checked_before_the_evaluation(synth, tmp_path, capsys, monkeypatch) -> None:
    """Issue 12 item 6: --json FILE was overwritten silently; --json FOLDER crashed after the evaluation."""
    from hipposnn import pipeline

    def not_reached(*args, **kwargs):
        raise AssertionError("the evaluation ran although --json was unusable")

    monkeypatch.setattr(pipeline, "evaluate_model", not_reached)
    folder = tmp_path / "folder"
    folder.mkdir()
    existing = tmp_path / "scores.json"
    existing.write_text("{}")
    base = ["evaluate", "--data", str(synth), "--model", "ann", "--json"]
    for target, message in ((folder, "is a folder"), (existing, "exists: pass --overwrite"),
                            (tmp_path / "no" / "scores.json", "does not exist")):
        code, lines = _one_line(capsys, base + [str(target)])
        assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert existing.read_text() == "{}"
    monkeypatch.undo()
    code, lines = _one_line(capsys, base + [str(existing), "--overwrite", "--timesteps", "1"])
    assert code == 0, lines
    assert "mean_dice_3d" in json.loads(existing.read_text())
