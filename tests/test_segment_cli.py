"""``hipposnn segment``: every bad input of issue 4 ends with one line, a non-zero exit and no output."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hipposnn.cli import main

FAST = ["--model", "ann", "--roi", "crop", "--quiet"]


def _t1(path: Path, shape=(30, 50, 36), seed=0, affine=None) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 15, shape).astype(np.float32)
    data[10:20, 15:35, 12:24] += 50
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _run(capsys, *argv: str):
    code = main(["segment", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_lines(err: str):
    return [line for line in err.splitlines() if line.startswith("hipposnn: error")]


def test_segment_ok_outputs_and_geometry(tmp_path, capsys) -> None:
    src = _t1(tmp_path / "a.nii.gz", affine=np.diag([-1.0, 1.0, 1.2, 1.0]))
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, str(src), "-o", str(out), "--json", "--probabilities", "--png", *FAST)
    assert code == 0, err
    labels = nib.load(str(out / "a_hippo_labels.nii.gz"))
    assert labels.shape == (30, 50, 36) and np.allclose(labels.affine, nib.load(str(src)).affine)
    assert (out / "a_hippo_prob.nii.gz").is_file() and (out / "a_hippo_overlay.png").is_file()
    summary = json.loads((out / "a_hippo.json").read_text())
    assert {"volumes_mm3", "timings_s", "settings", "model_sha256", "boxes", "qc"} <= set(summary)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    # Second run without --overwrite refuses and leaves the first outputs as they were.
    before = (out / "a_hippo_labels.nii.gz").read_bytes()
    code, _, err = _run(capsys, str(src), "-o", str(out), *FAST)
    assert code != 0 and len(_error_lines(err)) == 1 and "exists" in err
    assert (out / "a_hippo_labels.nii.gz").read_bytes() == before
    code, _, err = _run(capsys, str(src), "-o", str(out), "--overwrite", *FAST)
    assert code == 0, err


def test_inputs_with_the_same_name_keep_their_own_outputs(tmp_path, capsys) -> None:
    """Issue 12 item 6: a/T1 and b/T1 (or T1.nii and T1.nii.gz) wrote one label map over the other."""
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        _t1(tmp_path / folder / "T1.nii.gz", seed=seed)
    (tmp_path / "c").mkdir()
    _t1(tmp_path / "c" / "T1.nii.gz", seed=2)
    _t1(tmp_path / "c" / "T1.nii", seed=3)
    inputs = [str(tmp_path / p) for p in ("a/T1.nii.gz", "b/T1.nii.gz", "c/T1.nii.gz", "c/T1.nii", "a/T1.nii.gz")]
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, *inputs, "-o", str(out), "--json", *FAST)
    assert code == 0, err
    stems = ["a_T1", "b_T1", "c_T1_niigz", "c_T1_nii"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_hippo_labels.nii.gz" for s in stems] + [f"{s}_hippo.json" for s in stems])
    for stem, source in zip(stems, inputs):
        assert json.loads((out / f"{stem}_hippo.json").read_text())["input"] == source
    assert stdout.count(" ok ") == 4 and stdout.count("note: several inputs") == 4  # a/T1 once, not twice
    # the names depend only on the inputs: the same command finds its outputs and refuses to replace them
    code, _, err = _run(capsys, *inputs[:2], "-o", str(out), *FAST)
    assert code != 0 and "a_T1_hippo_labels.nii.gz exists: pass --overwrite" in err


def test_outputs_follow_the_umask(tmp_path, capsys) -> None:
    """Issue 12 item 2: every output was 0600, unreadable to the rest of a lab."""
    src = _t1(tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        code, _, err = _run(capsys, str(src), "-o", str(out), "--json", "--png", "--probabilities", *FAST)
    finally:
        os.umask(previous)
    assert code == 0, err
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(modes) == 4 and set(modes.values()) == {0o644}, modes


def _bad_inputs(folder: Path):
    good = _t1(folder / "good.nii.gz")
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:400])
    garbage = folder / "garbage.nii"
    garbage.write_bytes(b"not an image at all" * 10)
    corrupt = folder / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"\x00" * 348))
    nib.save(nib.Nifti1Image(np.random.rand(40, 40).astype(np.float32), np.eye(4)), str(folder / "flat2d.nii.gz"))
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 20, 3).astype(np.float32), np.eye(4)), str(folder / "four.nii.gz"))
    labels = np.zeros((30, 30, 30), dtype=np.int16)
    labels[5:15, 5:15, 5:15] = 17
    labels[15:25, 5:15, 5:15] = 53
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(folder / "aseg.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((20, 20, 20), 7.0, np.float32), np.eye(4)), str(folder / "constant.nii.gz"))
    nan = np.random.rand(20, 20, 20).astype(np.float32)
    nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(folder / "nan.nii.gz"))
    inf = np.random.rand(20, 20, 20).astype(np.float32)
    inf[3, 3, 3] = np.inf
    nib.save(nib.Nifti1Image(inf, np.eye(4)), str(folder / "inf.nii.gz"))
    _t1(folder / "spacing.nii.gz", shape=(20, 20, 20), affine=np.diag([50.0, 1.0, 1.0, 1.0]))
    unreadable = _t1(folder / "unreadable.nii.gz", seed=2)
    os.chmod(unreadable, 0)
    return {
        "missing.nii.gz": "not found",
        "truncated.nii.gz": "truncated",
        "garbage.nii": "Cannot read",
        "corrupt.nii.gz": "Cannot read",
        "flat2d.nii.gz": "2D",
        "four.nii.gz": "4D",
        "aseg.nii.gz": "label map",
        "constant.nii.gz": "constant",
        "nan.nii.gz": "NaN",
        "inf.nii.gz": "NaN or infinite",
        "spacing.nii.gz": "voxel size",
        "unreadable.nii.gz": "Cannot read",
    }


@pytest.mark.parametrize("name", [
    "missing.nii.gz", "truncated.nii.gz", "garbage.nii", "corrupt.nii.gz", "flat2d.nii.gz", "four.nii.gz",
    "aseg.nii.gz", "constant.nii.gz", "nan.nii.gz", "inf.nii.gz", "spacing.nii.gz", "unreadable.nii.gz",
])
def test_bad_input_one_line_no_output(tmp_path, capsys, monkeypatch, name) -> None:
    expected = _bad_inputs(tmp_path)
    if name == "unreadable.nii.gz" and os.access(tmp_path / name, os.R_OK):
        # as root (how CI runs) permissions do not stop reading: the reader meets the same error instead
        import nibabel

        real_load = nibabel.load

        def denied(filename, *args, **kwargs):
            if Path(filename).name == name:
                raise PermissionError(13, "Permission denied", str(filename))
            return real_load(filename, *args, **kwargs)

        monkeypatch.setattr(nibabel, "load", denied)
    out = tmp_path / "out"
    code, _, err = _run(capsys, str(tmp_path / name), "-o", str(out), *FAST)
    assert code != 0
    lines = _error_lines(err)
    assert len(lines) == 1 and expected[name] in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()  # the output folder this run created is removed again (issue 12 item 10)


def test_batch_keeps_going_and_reports(tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _t1(folder / "one.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b broken")
    _t1(folder / "two.nii.gz", seed=1)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, str(folder), "-o", str(out), *FAST)
    assert code != 0
    assert "FAILED" in stdout and stdout.count(" ok ") == 2
    assert sorted(p.name for p in out.iterdir()) == ["one_hippo_labels.nii.gz", "two_hippo_labels.nii.gz"]


def test_output_paths_refused(tmp_path, capsys, monkeypatch) -> None:
    src = _t1(tmp_path / "a.nii.gz")
    # Output equal to an input: the labels file of "a_hippo_labels" would overwrite that input.
    clash = shutil.copy(src, tmp_path / "a_hippo_labels.nii.gz")
    code, _, err = _run(capsys, str(clash), str(src), "-o", str(tmp_path), "--overwrite", *FAST)
    assert code != 0 and "also an input" in err
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "no" / "such" / "dir"), *FAST)
    assert code != 0 and len(_error_lines(err)) == 1
    code, _, err = _run(capsys, str(src), "-o", str(src), *FAST)
    assert code != 0 and "is a file" in err
    locked = tmp_path / "locked"
    locked.mkdir()
    # os.access, not chmod: as root (how CI runs) permissions would not stop the writing
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    code, _, err = _run(capsys, str(src), "-o", str(locked), *FAST)
    assert code != 0 and "not writable" in err and len(_error_lines(err)) == 1


def test_write_failure_leaves_nothing(tmp_path, capsys, monkeypatch) -> None:
    from hipposnn import figures

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "overlay_png", broken)
    src = _t1(tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    code, _, err = _run(capsys, str(src), "-o", str(out), "--png", "--json", *FAST)
    assert code != 0 and len(_error_lines(err)) == 1 and "No space left" in err
    assert not out.exists()


def test_demo_runs(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code, stdout, err = _run(capsys, "--demo", "-o", str(out), "--model", "ann", "--quiet")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert any(n.endswith("_overlay.png") for n in names) and any(n.endswith("_labels.nii.gz") for n in names)
    summary = json.loads(next(out.glob("*.json")).read_text())
    assert summary["qc"]["quality"] == "good" and 2500 < summary["volumes_mm3"]["right"] < 6000


def test_bad_flags(tmp_path, capsys) -> None:
    src = _t1(tmp_path / "a.nii.gz")
    for argv in (["--roi", "1,2"], ["--threshold", "2"], ["--timesteps", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["segment", str(src), "-o", str(tmp_path / "o"), *argv])
        assert exc.value.code != 0
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "o"), "--roi", "1,2,3", "--quiet")
    assert code != 0 and "one hippocampus" in err
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "o"), "--mesh", "xyz", *FAST)
    assert code != 0 and "mesh" in err
    code, _, err = _run(capsys, "-o", str(tmp_path / "o"))
    assert code != 0 and "No input" in err


@pytest.mark.shared
def test_dicom_crop_end_to_end(shared_data, tmp_path, capsys) -> None:
    study = sorted((shared_data / "dicom").glob("Study*"))[0]
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, str(study), "-o", str(out), "--roi", "crop", "--model", "ann", "--mesh",
                             "--quiet")
    assert code == 0, err
    labels = nib.load(str(out / f"{study.name}_hippo_labels.nii.gz"))
    # Read in the MSD axis order (in-plane axes reversed from the DICOM storage, roi.crop_axes) the
    # network finds 3562 mm^3 (MSD labels: 2590-3950, 5th-95th percentile); as stored it found 1135.
    assert 2500 < labels.get_fdata().sum() < 4500


def _damaged_series(src: Path, folder: Path, damage: str) -> Path:
    """A copy of a real DICOM series with one slice damaged in the way ``damage`` names."""
    series = folder / damage
    series.mkdir()
    if damage == "empty":
        return series
    for f in src.glob("*.dcm"):
        (series / f.name).write_bytes(f.read_bytes())
    victim = series / "10.dcm"
    data = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "tail":  # only the end of the pixel data lost
        victim.write_bytes(data[:-40])
    elif damage == "zeroed":
        victim.write_bytes(b"\x00" * 500)
    elif damage == "missing":
        victim.unlink()
    return series


@pytest.mark.shared
@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncated", "damaged: 1 file(s) unreadable, truncated or corrupted (10.dcm)"),
        ("tail", "damaged"),
        ("zeroed", "damaged"),
        ("missing", "missing or duplicated slices"),
        ("empty", "No DICOM series"),
    ],
)
def test_damaged_dicom_series_one_line_no_output(shared_data, tmp_path, capfd, damage, expected) -> None:
    """GDCM silently drops a slice it cannot parse; the reader must refuse the series instead.

    ``capfd`` (not capsys) so that ITK's own multi-line console warnings would be seen too.
    """
    src = sorted((shared_data / "dicom").glob("Study*"))[0]
    series = _damaged_series(src, tmp_path, damage)
    out = tmp_path / "out"
    code, _, err = _run(capfd, str(series), "-o", str(out), *FAST)
    assert code != 0
    lines = _error_lines(err)
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err and "WARNING" not in err
    assert not out.exists()


def _program(*argv: str):
    """``python -m hipposnn ...`` in a fresh process, as a user runs it."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "hipposnn", *argv], capture_output=True, text=True, timeout=300)


def test_program_quick_exit_keeps_outputs_and_console(tmp_path) -> None:
    """The program leaves with os._exit after a finished ``segment`` (hipposnn.cli.entry): the outputs
    are complete and the console lines and exit status arrive; errors take the normal exit path."""
    import subprocess
    import sys

    src = _t1(tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    done = _program("segment", str(src), "-o", str(out), "--json", *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("a.nii.gz: right") and "quality" in done.stdout.splitlines()[0]
    summary = json.loads((out / "a_hippo.json").read_text())  # complete JSON, written before the exit
    labels = nib.load(str(out / "a_hippo_labels.nii.gz")).get_fdata()  # a complete gzip stream
    assert labels.shape == (30, 50, 36) and summary["volumes_mm3"]
    # a scan that fails still returns normally from the command: its status and line come through
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    failed = _program("segment", str(tmp_path / "bad.nii.gz"), "-o", str(tmp_path / "o2"), *FAST)
    assert failed.returncode == 2 and failed.stderr.count("hipposnn: error") == 1 and "bad.nii.gz" in failed.stderr
    # a user error raised before any work: one line, status 2 (the normal exit)
    refused = _program("segment", str(src), *FAST)
    assert refused.returncode == 2 and "No output folder given" in refused.stderr
    # the quick exit is what the program does for segment, not for other commands
    code = ("import hipposnn.cli as c, os, sys\n"
            "os._exit = lambda status: (print('quick', status), sys.stdout.flush(), sys.exit(status))\n"
            "sys.argv = ['hipposnn'] + sys.argv[1:]\nc.entry()")
    quick = subprocess.run([sys.executable, "-c", code, "segment", str(src), "-o", str(out), "--overwrite", *FAST],
                           capture_output=True, text=True, timeout=300)
    assert quick.returncode == 0 and quick.stdout.rstrip().endswith("quick 0"), quick.stderr
    normal = subprocess.run([sys.executable, "-c", code, "folds", "--help"], capture_output=True, text=True, timeout=60)
    assert normal.returncode == 0 and "quick" not in normal.stdout
