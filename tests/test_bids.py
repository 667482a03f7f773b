"""``hipposnn bids``: discovery, derivatives layout, resume after a kill, workers, shards, the table.

The logic tests inject a cheap segmentation (:func:`fake_segment`: a few labelled voxels, no network)
into small synthetic T1 files; one test runs the real ANN end to end on the bundled demo T1.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import nibabel as nib
import numpy as np
import pytest
from hipposnn import bids
from hipposnn.cli import main
from hipposnn.errors import HippoSNNError

DEMO_T1 = Path(bids.__file__).resolve().parent / "resources" / "demo_t1_icbm2009a_1mm.nii.gz"
REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"side": "both", "roi": "auto", "model": "ann", "timesteps": None, "coding": None, "threshold": 0.5,
            "seed": 0, "device": "cpu", "checkpoint": None, "probabilities": False, "refine": False}


# --------------------------------------------------------------------------------------------------
# A cheap stand-in for segment_image (module level: spawned workers import it from here)
# --------------------------------------------------------------------------------------------------


class FakeResult:
    def __init__(self, labels: np.ndarray, volumes: Dict[str, float], etiv: Optional[float], model: str) -> None:
        self.model = model
        self.labels = labels
        self.volumes = volumes
        self.etiv = etiv

    def summary(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "volumes_mm3": self.volumes,
            "qc": {"quality": "good", "warnings": ["note, with a comma"],
                   "sides": {s: {"volume_mm3": v, "border_fraction": 0.0} for s, v in self.volumes.items()}},
            "timings_s": {"registration": 0.0, "inference": 0.0},
            "settings": {"model": self.model, "coding_used": "ternary", "timesteps_used": 32, "threshold": 0.5,
                         "seed": 0},
            "model_sha256": "f" * 64,
        }
        if self.etiv is not None:  # the fields of the eTIV/QC issue, when the summary has them
            for side in self.volumes:
                out["qc"]["sides"][side].update(quality="good", reasons=[])
            out["etiv_mm3"] = self.etiv
            out["volumes_per_etiv"] = {s: v / self.etiv for s, v in self.volumes.items()}
            r, lft = self.volumes["right"], self.volumes["left"]
            out["asymmetry_index"] = (lft - r) / ((lft + r) / 2)
            out["qc"]["sides"]["left"] = {"quality": "poor", "reasons": ["touches the ROI border", "small"]}
        return out


def fake_segment(image, settings: Dict[str, Any], progress=None) -> FakeResult:
    calls = os.environ.get("HIPPOSNN_TEST_CALLS")
    if calls:
        with open(calls, "a") as fh:
            fh.write(Path(image.source).name + "\n")
        hang_after = int(os.environ.get("HIPPOSNN_TEST_HANG_AFTER", "0"))
        if hang_after and len(Path(calls).read_text().split()) > hang_after:
            time.sleep(600)  # the run is killed while this scan is in flight
    name = Path(image.source).name
    if "crash" in name:
        os._exit(3)  # a worker dying (out of memory, segfault)
    if "buggy" in name:
        raise ValueError("an unexpected bug")
    time.sleep(float(os.environ.get("HIPPOSNN_TEST_SLEEP", "0")))
    if progress is not None and progress(0.5, "half way") is False:
        from hipposnn.errors import Cancelled

        raise Cancelled("cancelled")
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[2:5, 2:6, 2:5] = 1
    labels[8:11, 2:5, 2:5] = 2
    voxel = float(abs(np.linalg.det(image.affine[:3, :3])))
    volumes = {"right": float((labels == 1).sum()) * voxel, "left": float((labels == 2).sum()) * voxel}
    return FakeResult(labels, volumes, 1.5e6 if "run-2" not in name else None, settings["model"])


# --------------------------------------------------------------------------------------------------
# Synthetic BIDS trees
# --------------------------------------------------------------------------------------------------


def _t1(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).normal(100, 15, (20, 18, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return path


def _dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    return root


def _cohort(root: Path, n: int = 12, broken: Optional[str] = "05") -> Path:
    """``n`` subjects; every third has sessions A and B; sub-``broken`` has a truncated T1."""
    _dataset(root)
    for i in range(1, n + 1):
        sub = f"{i:02d}"
        sessions = ["A", "B"] if i % 3 == 0 else [None]
        for ses in sessions:
            folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
            name = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + "_T1w.nii.gz"
            _t1(folder / name, seed=i)
            if sub == broken:
                path = folder / name
                path.write_bytes(gzip.compress(b"not a nifti at all"))
    return root


def _status(out: Path, scans) -> Dict[str, str]:
    return {s.relpath: bids.read_record(s, out)[0] for s in scans}


def _read_tsv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# --------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------


def test_discovery_patterns_and_filters(tmp_path) -> None:
    root = _dataset(tmp_path / "ds")
    _t1(root / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    _t1(root / "sub-01" / "ses-pre" / "anat" / "sub-01_ses-pre_T1w.nii.gz")
    _t1(root / "sub-01" / "ses-post" / "anat" / "sub-01_ses-post_acq-mprage_run-1_T1w.nii")
    _t1(root / "sub-01" / "ses-post" / "anat" / "sub-01_ses-post_acq-mprage_run-2_T1w.nii.gz")
    _t1(root / "sub-03" / "anat" / "sub-03_T2w.nii.gz")  # not a T1w: ignored
    (root / "sub-03" / "anat" / "sub-03_T1w.json").write_text("{}")  # a sidecar: ignored
    (root / "sub-04" / "func").mkdir(parents=True)  # a subject without anat: no scans, not an error
    _t1(root / "derivatives" / "x" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # not raw data
    scans = bids.discover(root)
    assert [s.relpath for s in scans] == [
        "sub-01/ses-post/anat/sub-01_ses-post_acq-mprage_run-1_T1w.nii",
        "sub-01/ses-post/anat/sub-01_ses-post_acq-mprage_run-2_T1w.nii.gz",
        "sub-01/ses-pre/anat/sub-01_ses-pre_T1w.nii.gz",
        "sub-02/anat/sub-02_T1w.nii.gz",
    ]
    assert (scans[0].participant_id, scans[0].session_id, scans[0].prefix) == \
        ("sub-01", "ses-post", "sub-01_ses-post_acq-mprage_run-1")
    assert scans[3].session_id is None and scans[3].folder == "sub-02/anat"
    assert [s.relpath for s in bids.discover(root, ["sub-02"])] == ["sub-02/anat/sub-02_T1w.nii.gz"]
    assert len(bids.discover(root, ["01", "sub-02"])) == 4
    assert [s.session for s in bids.discover(root, session_labels=["ses-pre"])] == ["pre"]
    out = bids.derivative_paths(scans[0], tmp_path / "out")
    assert out.dseg == tmp_path / "out" / "sub-01" / "ses-post" / "anat" / \
        "sub-01_ses-post_acq-mprage_run-1_desc-hippocampus_dseg.nii.gz"
    assert out.sidecar.name == "sub-01_ses-post_acq-mprage_run-1_desc-hippocampus_dseg.json"


@pytest.mark.parametrize("case, message", [
    ("no_description", "dataset_description.json is missing"),
    ("no_subjects", "holds no sub-<label> folders"),
    ("unknown_participant", "participant(s) not found"),
    ("unknown_session", "session(s) not found"),
    ("bad_label", "invalid participant label"),
    ("wrong_subject_in_name", "must start with sub-01_"),
    ("session_missing_in_name", "must start with sub-01_ses-A_"),
    ("session_name_outside_folder", "is not in a ses-A/ folder"),
    ("duplicate", "two T1w files"),
    ("bad_subject_folder", "subject folders are named"),
    ("nothing_selected", "no T1w scans"),
    ("not_a_folder", "must be a folder"),
])
def test_discovery_errors(tmp_path, case: str, message: str) -> None:
    root = _dataset(tmp_path / "ds")
    labels: Dict[str, Any] = {}
    anat = root / "sub-01" / "anat"
    if case == "no_description":
        (root / "dataset_description.json").unlink()
        _t1(anat / "sub-01_T1w.nii.gz")
    elif case == "unknown_participant":
        _t1(anat / "sub-01_T1w.nii.gz")
        labels["participant_labels"] = ["02"]
    elif case == "unknown_session":
        _t1(anat / "sub-01_T1w.nii.gz")
        labels["session_labels"] = ["B"]
    elif case == "bad_label":
        _t1(anat / "sub-01_T1w.nii.gz")
        labels["participant_labels"] = ["sub-0_1"]
    elif case == "wrong_subject_in_name":
        _t1(anat / "sub-02_T1w.nii.gz")
    elif case == "session_missing_in_name":
        _t1(root / "sub-01" / "ses-A" / "anat" / "sub-01_T1w.nii.gz")
    elif case == "session_name_outside_folder":
        _t1(anat / "sub-01_ses-A_T1w.nii.gz")
    elif case == "duplicate":
        _t1(anat / "sub-01_T1w.nii.gz")
        _t1(anat / "sub-01_T1w.nii")
    elif case == "bad_subject_folder":
        _t1(root / "sub-01_x" / "anat" / "sub-01_x_T1w.nii.gz")
    elif case == "nothing_selected":
        _t1(anat / "sub-01_T2w.nii.gz")
    elif case == "not_a_folder":
        root = root / "dataset_description.json"
    with pytest.raises(HippoSNNError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bids.discover(root, **labels)
    if case == "no_description":
        assert len(bids.discover(root, validate=False)) == 1


def test_cli_usage_errors_are_one_line(tmp_path, capsys) -> None:
    root = _cohort(tmp_path / "ds", n=2, broken=None)
    out = tmp_path / "out"
    for argv, expect in [
        ([str(tmp_path / "missing"), str(out), "participant"], "BIDS folder not found"),
        ([str(root), str(root), "participant"], "must not be BIDS_DIR itself"),
        ([str(root), str(out), "participant", "--shard", "0/4"], "shards count from 1"),
        ([str(root), str(out), "participant", "--shard", "5/4"], "1 <= K <= N"),
        ([str(root), str(out), "participant", "--participant-label", "07"], "sub-07"),
        ([str(root), str(out), "group", "--shard", "1/2"], "--shard is for the participant level"),
        ([str(root), str(tmp_path / "none"), "group"], "OUTPUT_DIR not found"),
    ]:
        assert main(["bids", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hipposnn: error:") and expect in err[0], err
    other = tmp_path / "other"
    _dataset(other)  # a raw dataset's description: not ours, refuse to write into it
    assert main(["bids", str(root), str(other), "participant", "--quiet"]) == 2
    assert "holds another dataset" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Sharding
# --------------------------------------------------------------------------------------------------


def test_shards_partition_the_subjects(tmp_path) -> None:
    scans = bids.discover(_cohort(tmp_path / "ds", n=12, broken=None))
    assert len(scans) == 16
    for n in (1, 2, 3, 5, 12, 20):
        parts = [bids.shard_scans(scans, k, n) for k in range(1, n + 1)]
        keys = [s.relpath for part in parts for s in part]
        assert sorted(keys) == sorted(s.relpath for s in scans)  # disjoint and complete
        sizes = [len({s.subject for s in part}) for part in parts]
        assert max(sizes) - min(sizes) <= 1  # balanced in subjects
        for part in parts:  # all sessions of a subject in one shard
            for subject in {s.subject for s in part}:
                assert {s.relpath for s in part if s.subject == subject} == \
                    {s.relpath for s in scans if s.subject == subject}
    again = bids.discover(tmp_path / "ds")
    assert [s.relpath for s in bids.shard_scans(again, 2, 3)] == [s.relpath for s in bids.shard_scans(scans, 2, 3)]
    assert bids.parse_shard("3/10") == (3, 10)
    for bad in ("3", "a/b", "0/3", "4/3", "1/0"):
        with pytest.raises(HippoSNNError):
            bids.parse_shard(bad)


# --------------------------------------------------------------------------------------------------
# Participant level: layout, sidecar, resume, progress
# --------------------------------------------------------------------------------------------------


def test_derivatives_layout_sidecar_and_resume(tmp_path) -> None:
    root = _dataset(tmp_path / "ds")
    src = _t1(root / "sub-01" / "ses-A" / "anat" / "sub-01_ses-A_T1w.nii.gz")
    _t1(root / "sub-02" / "anat" / "sub-02_T1w.nii.gz", seed=2)
    out = root / "derivatives" / "hipposnn"
    seen: List[float] = []
    report = bids.run_participants(root, out, SETTINGS, segment_fn=fake_segment,
                                   progress=lambda f, m: seen.append(f) or True)
    assert report.ok and len(report.done) == 2 and not report.skipped
    assert seen == sorted(seen) and seen[-1] == 1.0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "HippoSNN"
    assert description["DatasetLinks"]["raw"] == "../.."
    assert (out / "desc-hippocampus_dseg.tsv").read_text().splitlines()[1:] == \
        ["1\tRight-Hippocampus\tRHIP", "2\tLeft-Hippocampus\tLHIP"]
    anat = out / "sub-01" / "ses-A" / "anat"
    dseg = anat / "sub-01_ses-A_desc-hippocampus_dseg.nii.gz"
    labels = nib.load(str(dseg))
    assert labels.shape == nib.load(str(src)).shape and np.allclose(labels.affine, nib.load(str(src)).affine)
    assert set(np.unique(np.asarray(labels.dataobj))) == {0, 1, 2}
    sidecar = json.loads((anat / "sub-01_ses-A_desc-hippocampus_dseg.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/ses-A/anat/sub-01_ses-A_T1w.nii.gz"]
    record = sidecar["HippoSNN"]
    assert record["status"] == "ok" and record["output"]["bytes"] == dseg.stat().st_size
    assert record["output"]["sha256"] == bids._sha256(dseg)
    assert len(record["fingerprint"]["model_sha256"]) == 64 and record["fingerprint"]["model"] == "ann"
    assert record["summary"]["volumes_mm3"]["right"] == pytest.approx(36 * 8.0)
    assert not [p for p in anat.iterdir() if p.name.startswith(".")]
    # Rerun: nothing to do. Other settings: redone. A damaged label map: redone.
    again = bids.run_participants(root, out, SETTINGS, segment_fn=fake_segment)
    assert again.ok and not again.done and len(again.skipped) == 2
    changed = bids.run_participants(root, out, dict(SETTINGS, threshold=0.6), segment_fn=fake_segment)
    assert len(changed.done) == 2
    dseg.write_bytes(dseg.read_bytes()[:-10])
    (anat / f".{dseg.name}.1234.tmp").write_bytes(b"half")  # a killed writer's leftover
    fixed = bids.run_participants(root, out, dict(SETTINGS, threshold=0.6), segment_fn=fake_segment)
    assert [Path(k).name for k in fixed.done] == ["sub-01_ses-A_T1w.nii.gz"]
    assert not [p for p in anat.iterdir() if p.name.startswith(".")]
    # A changed source file is redone too.
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    assert len(bids.run_participants(root, out, dict(SETTINGS, threshold=0.6), segment_fn=fake_segment).done) == 1


def test_failures_do_not_stop_others_and_cancel(tmp_path) -> None:
    root = _cohort(tmp_path / "ds", n=3, broken="02")
    _t1(root / "sub-04" / "anat" / "sub-04_acq-buggy_T1w.nii.gz")
    out = tmp_path / "out"
    report = bids.run_participants(root, out, SETTINGS, segment_fn=fake_segment)
    assert sorted(report.failed) == ["sub-02/anat/sub-02_T1w.nii.gz", "sub-04/anat/sub-04_acq-buggy_T1w.nii.gz"]
    assert "unreadable" in report.failed["sub-02/anat/sub-02_T1w.nii.gz"]
    assert report.failed["sub-04/anat/sub-04_acq-buggy_T1w.nii.gz"].startswith("internal error: ValueError")
    error = json.loads((out / "logs" / "sub-04_acq-buggy_error.json").read_text())
    assert "Traceback" in error["traceback"] and len(report.done) == 3
    assert not (out / "sub-02" / "anat" / "sub-02_desc-hippocampus_dseg.nii.gz").exists()
    # Cancelling from the progress callback: the current scan stops, nothing half-written stays.
    out2 = tmp_path / "out2"
    stopped = bids.run_participants(root, out2, SETTINGS, segment_fn=fake_segment,
                                    progress=lambda f, m: "half way" not in m)
    assert stopped.not_run and not stopped.done and not stopped.ok
    assert not list(out2.glob("sub-*/**/*_dseg.*"))


def test_settings_and_labels_checked_up_front(tmp_path) -> None:
    root = _cohort(tmp_path / "ds", n=2, broken=None)
    with pytest.raises(HippoSNNError, match="threshold"):
        bids.run_participants(root, tmp_path / "out", dict(SETTINGS, threshold=2.0), segment_fn=fake_segment)
    with pytest.raises(HippoSNNError, match="unknown segmentation setting"):
        bids.run_participants(root, tmp_path / "out", dict(SETTINGS, colour="red"), segment_fn=fake_segment)
    assert not (tmp_path / "out").exists()  # nothing written before the settings are known to be usable
    report = bids.run_participants(root, tmp_path / "out", SETTINGS, participant_labels="sub-02",
                                   segment_fn=fake_segment)
    assert report.done == ["sub-02/anat/sub-02_T1w.nii.gz"]


def test_worker_crash_is_isolated(tmp_path) -> None:
    root = _cohort(tmp_path / "ds", n=3, broken=None)
    _t1(root / "sub-04" / "anat" / "sub-04_acq-crash_T1w.nii.gz")
    out = tmp_path / "out"
    report = bids.run_participants(root, out, SETTINGS, jobs=2, segment_fn=fake_segment)
    assert list(report.failed) == ["sub-04/anat/sub-04_acq-crash_T1w.nii.gz"]
    assert "worker process died" in report.failed["sub-04/anat/sub-04_acq-crash_T1w.nii.gz"]
    assert len(report.done) == 4 and report.threads == max(1, min(8, bids.available_cores() // 2))


# --------------------------------------------------------------------------------------------------
# The target scenario: 12 subjects, --jobs 2, killed half-way, rerun
# --------------------------------------------------------------------------------------------------


_RUNNER = """
import sys
sys.path.insert(0, {repo!r})
from hipposnn import bids
from tests.test_bids import SETTINGS, fake_segment
bids.run_participants({root!r}, {out!r}, SETTINGS, jobs=2, segment_fn=fake_segment)
"""


def test_kill_half_way_then_resume(tmp_path, monkeypatch) -> None:
    root = _cohort(tmp_path / "ds", n=12, broken="05")
    scans = bids.discover(root)
    assert len(scans) == 16
    out = tmp_path / "ds" / "derivatives" / "hipposnn"
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, HIPPOSNN_TEST_CALLS=str(calls), HIPPOSNN_TEST_HANG_AFTER="5")
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER.format(repo=str(REPO), root=str(root), out=str(out))],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    try:  # five scans finish, the next ones hang: kill the job then, with two scans in flight
        while time.time() < deadline and proc.poll() is None:
            if len(list(out.glob("sub-*/**/*_dseg.json"))) >= 5 and len(calls.read_text().split()) >= 7:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job: parent and workers, as a scheduler does
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    after_kill = _status(out, scans)
    complete = {k for k, v in after_kill.items() if v == "ok"}
    assert len(complete) == 5
    # A scan half-written at the kill: label map without sidecar, plus a writer's temporary leftover.
    victim = next(s for s in scans if s.relpath not in complete and s.subject != "05")
    paths = bids.derivative_paths(victim, out)
    paths.dseg.parent.mkdir(parents=True, exist_ok=True)
    paths.dseg.write_bytes(b"half")
    (paths.dseg.parent / f".{paths.dseg.name}.99.tmp").write_bytes(b"half")
    assert bids.read_record(victim, out)[0] == "missing"

    calls.unlink()
    monkeypatch.setenv("HIPPOSNN_TEST_CALLS", str(calls))
    report = bids.run_participants(root, out, SETTINGS, jobs=2, segment_fn=fake_segment)
    redone = calls.read_text().split()
    # Redone: exactly the scans not complete at the kill (the broken one fails on reading, before segmenting).
    assert sorted(redone) == sorted(Path(s.relpath).name for s in scans
                                    if s.relpath not in complete and s.subject != "05")
    assert set(report.skipped) == complete  # every good scan done exactly once overall
    assert list(report.failed) == ["sub-05/anat/sub-05_T1w.nii.gz"] and not report.not_run
    final = _status(out, scans)
    assert [k for k, v in final.items() if v != "ok"] == ["sub-05/anat/sub-05_T1w.nii.gz"]
    assert final["sub-05/anat/sub-05_T1w.nii.gz"] == "failed"
    assert not list(out.glob("sub-*/**/.*"))  # no temporary files left anywhere

    table = bids.write_group_table(root, out)
    rows = _read_tsv(table.tsv)
    assert len(rows) == 16 and [r["status"] for r in rows].count("ok") == 15
    broken = [r for r in rows if r["status"] != "ok"]
    assert broken[0]["participant_id"] == "sub-05" and "unreadable" in broken[0]["error"]


# --------------------------------------------------------------------------------------------------
# Group level: shards merged, the table's columns and formats
# --------------------------------------------------------------------------------------------------


def test_shards_then_group_table(tmp_path, capsys) -> None:
    root = _cohort(tmp_path / "ds", n=5, broken="04")
    _t1(root / "sub-01" / "anat" / "sub-01_run-2_T1w.nii.gz")  # no eTIV in its (fake) summary
    out = tmp_path / "ds" / "derivatives" / "hipposnn"
    snn = dict(SETTINGS, model="snn")
    for k in (1, 2):
        bids.run_participants(root, out, snn, shard=(k, 3), segment_fn=fake_segment)
    code = main(["bids", str(root), str(out), "group"])
    captured = capsys.readouterr()
    assert code == 1 and "missing" in captured.err  # shard 3 not run yet: the table says so
    rows = {r["source"]: r for r in _read_tsv(out / "hipposnn_volumes.tsv")}
    assert [r["status"] for r in rows.values()].count("missing") == 2  # sub-03 (2 sessions)
    bids.run_participants(root, out, snn, shard=(3, 3), segment_fn=fake_segment)
    assert main(["bids", str(root), str(out), "group"]) == 1  # sub-04 failed
    assert "1 failed, 0 missing" in capsys.readouterr().out

    tsv_lines = (out / "hipposnn_volumes.tsv").read_text().splitlines()
    assert tuple(tsv_lines[0].split("\t")) == bids.COLUMNS
    rows = {r["source"]: r for r in _read_tsv(out / "hipposnn_volumes.tsv")}
    assert len(rows) == 7 and all(len(line.split("\t")) == len(bids.COLUMNS) for line in tsv_lines)
    ok = rows["sub-01/anat/sub-01_T1w.nii.gz"]
    assert ok["session_id"] == "n/a" and ok["status"] == "ok"
    assert (ok["right_mm3"], ok["left_mm3"], ok["etiv_mm3"]) == ("288", "216", "1500000")
    assert ok["right_per_etiv"] == "0.000192" and ok["left_per_etiv"] == "0.000144"
    assert ok["asymmetry_index"] == "-0.285714"
    assert (ok["quality"], ok["quality_right"], ok["quality_left"]) == ("good", "good", "poor")
    assert ok["reasons_left"] == "touches the ROI border; small" and ok["reasons_right"] == "n/a"
    assert (ok["model"], ok["coding"], ok["timesteps"], ok["threshold"]) == ("snn", "ternary", "32", "0.5")
    assert float(ok["seconds"]) >= 0 and len(ok["model_sha256"]) == 64 and ok["error"] == "n/a"
    no_etiv = rows["sub-01/anat/sub-01_run-2_T1w.nii.gz"]
    assert no_etiv["etiv_mm3"] == no_etiv["asymmetry_index"] == no_etiv["quality_left"] == "n/a"
    assert rows["sub-03/ses-B/anat/sub-03_ses-B_T1w.nii.gz"]["session_id"] == "ses-B"
    bad = rows["sub-04/anat/sub-04_T1w.nii.gz"]
    assert bad["status"] == "failed" and "unreadable" in bad["error"] and bad["right_mm3"] == "n/a"
    numeric = [c for c in bids.COLUMNS if c in bids._DECIMALS]
    for row in rows.values():  # plain decimals: what any reader parses, no exponents
        for column in numeric:
            if row[column] != "n/a":
                assert "e" not in row[column].lower()
                float(row[column])
    # The CSV: same rows, missing = empty cell (read as NA by R's read.csv and by pandas, no options).
    with open(out / "hipposnn_volumes.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == 7 and tuple(csv_rows[0]) == bids.COLUMNS
    by_source = {r["source"]: r for r in csv_rows}
    assert by_source["sub-01/anat/sub-01_T1w.nii.gz"]["qc_warnings"] == "note, with a comma"
    assert by_source["sub-04/anat/sub-04_T1w.nii.gz"]["right_mm3"] == ""


def test_table_reads_in_pandas_without_options(tmp_path) -> None:
    pandas = pytest.importorskip("pandas")
    root = _cohort(tmp_path / "ds", n=3, broken="02")
    out = tmp_path / "out"
    bids.run_participants(root, out, SETTINGS, segment_fn=fake_segment)
    bids.write_group_table(root, out)
    tables = (pandas.read_csv(out / "hipposnn_volumes.tsv", sep="\t"), pandas.read_csv(out / "hipposnn_volumes.csv"))
    for table in tables:
        assert len(table) == 4
        for column in ("right_mm3", "left_mm3", "etiv_mm3", "asymmetry_index", "seconds", "timesteps"):
            assert table[column].dtype.kind == "f", column
        assert table["right_mm3"].isna().sum() == 1


# --------------------------------------------------------------------------------------------------
# The real thing, once: ANN on the bundled demo T1, through the command line
# --------------------------------------------------------------------------------------------------


def test_real_segmentation_end_to_end(tmp_path, capsys) -> None:
    root = _dataset(tmp_path / "ds")
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    os.symlink(DEMO_T1, anat / "sub-01_T1w.nii.gz")  # BIDS datasets are often symlinks (DataLad)
    out = root / "derivatives" / "hipposnn"
    assert main(["bids", str(root), str(out), "participant", "--model", "ann", "--quiet"]) == 0
    assert "1 segmented" in capsys.readouterr().out
    assert main(["bids", str(root), str(out), "group", "--participant-label", "01"]) == 0
    row = _read_tsv(out / "hipposnn_volumes.tsv")[0]
    assert row["status"] == "ok" and row["model"] == "ann" and row["timesteps"] == "n/a"
    assert 1000 < float(row["right_mm3"]) < 8000 and 1000 < float(row["left_mm3"]) < 8000
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_desc-hippocampus_dseg.json").read_text())
    assert sidecar["HippoSNN"]["summary"]["model_sha256"] == sidecar["HippoSNN"]["fingerprint"]["model_sha256"]
    summary = sidecar["HippoSNN"]["summary"]
    if summary.get("etiv_mm3"):  # the real summary's eTIV, normalised volumes and per-side QC reach the table
        assert float(row["etiv_mm3"]) == pytest.approx(summary["etiv_mm3"], abs=1)
        assert float(row["right_per_etiv"]) == pytest.approx(summary["volumes_per_etiv"]["right"], abs=1e-6)
        assert row["quality_right"] == summary["qc"]["sides"]["right"]["quality"]
    labels = np.asarray(nib.load(str(out / "sub-01" / "anat" / "sub-01_desc-hippocampus_dseg.nii.gz")).dataobj)
    assert float((labels == 1).sum()) == pytest.approx(float(row["right_mm3"]), abs=1)  # 1 mm voxels
    assert main(["bids", str(root), str(out), "participant", "--model", "ann", "--quiet"]) == 0
    assert "0 segmented, 1 already complete" in capsys.readouterr().out
