"""The shipped default path end to end on a real whole-brain T1, and `hipposnn segment` on every file format.

Both need the reference scans in ../shared/data (skipped with a message when absent). Each runs the
command line as a user would (``hipposnn segment ...`` through :func:`hipposnn.cli.main`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hipposnn.cli import main
from hipposnn.io import read_volume
from hipposnn.metrics import dice

pytestmark = pytest.mark.shared

#: FreeSurfer sample subject "bert": skull-stripped T1 and its aseg (right hippocampus 53, left 17).
BERT = ("wholebrain", "bert", "norm.mgz", "aseg.mgz")
#: Dice of the shipped whole-brain default (binary SNN, T = 8, direct input, auto ROI) against bert's aseg,
#: measured when it became the default: right 0.823, left 0.816 (docs/results/wholebrain_eval/
#: raw_snn-t8_binary.json; the ternary T = 32 default before it: 0.746 / 0.788). The floors lie 0.1 below,
#: so that a regression fails and the few-voxel run-to-run spread does not.
DICE_FLOOR = {"right": 0.72, "left": 0.71}


def _scan(shared_data: Path) -> Path:
    return shared_data.joinpath(*BERT[:3])


def test_default_segmentation_of_a_whole_brain_t1(shared_data, tmp_path, capsys):
    """`hipposnn segment T1 -o OUT` with every default: the site-robust low-latency SNN (T = 8, binary coding,
    direct input; the whole-brain default, hipposnn.options.WHOLE_BRAIN_SNN and default_coding), automatic ROI."""
    scan = _scan(shared_data)
    aseg, aseg_affine = read_volume(scan.parent / BERT[3])
    out = tmp_path / "out"
    assert main(["segment", str(scan), "-o", str(out), "--json", "--quiet"]) == 0
    summary = json.loads((out / "norm_hippo.json").read_text())
    settings = summary["settings"]
    assert (settings["model"], settings["model_used"], settings["coding_used"], settings["timesteps_used"],
            settings["roi"]) == ("snn", "snn-t8", "binary", 8, "auto"), settings
    assert settings["checkpoint_used"].endswith("hipposnn_snn_t8_binary.pt")
    assert settings["input_used"] == "direct"  # its card: direct input, distilled (docs/segmentation.md)
    assert summary["qc"]["quality"] == "good", summary["qc"]
    labels, affine = read_volume(out / "norm_hippo_labels.mgz")
    assert labels.shape == aseg.shape and np.allclose(affine, aseg_affine, atol=1e-4)
    for value, side, truth in ((1, "right", 53), (2, "left", 17)):
        score = dice(labels == value, aseg == truth)
        print(f"{side}: Dice {score:.3f} vs aseg, {summary['volumes_mm3'][side]:.0f} mm^3")
        assert score >= DICE_FLOOR[side], (side, score)
        assert summary["volumes_mm3"][side] == pytest.approx(float((labels == value).sum()), rel=1e-6)  # 1 mm voxels


def test_segment_reads_and_writes_every_file_format(shared_data, tmp_path):
    """The same scan as .mgz, .nrrd, .mha and .nii gives the same label map, written in the input's format."""
    import SimpleITK as sitk
    from hipposnn.io import load_image, to_sitk

    scan = _scan(shared_data)
    image = load_image(scan)
    inputs = {"mgz": tmp_path / "t1_mgz.mgz"}
    shutil.copy(scan, inputs["mgz"])
    for ext in ("nrrd", "mha", "nii"):  # written by SimpleITK (LPS on disk): the RAS <-> LPS path is exercised
        inputs[ext] = tmp_path / f"t1_{ext}.{ext}"
        sitk.WriteImage(to_sitk(image.array, image.affine), str(inputs[ext]))
    out = tmp_path / "out"
    # the ANN keeps this test short; the spiking default is covered above on the same scan
    assert main(["segment", *map(str, inputs.values()), "-o", str(out), "--model", "ann", "--json", "--quiet"]) == 0
    written = {"mgz": "t1_mgz_hippo_labels.mgz", "nrrd": "t1_nrrd_hippo_labels.nrrd",
               "mha": "t1_mha_hippo_labels.mha", "nii": "t1_nii_hippo_labels.nii.gz"}
    assert {p.name for p in out.glob("*_labels*")} == set(written.values())
    reference = None
    for ext, name in written.items():
        labels, affine = read_volume(out / name)
        source, source_affine = read_volume(inputs[ext])
        assert labels.shape == source.shape and np.allclose(affine, source_affine, atol=1e-4), ext
        volumes = json.loads((out / f"t1_{ext}_hippo.json").read_text())["volumes_mm3"]
        assert volumes["right"] > 1000 and volumes["left"] > 1000, (ext, volumes)
        if reference is None:
            reference = (labels, volumes)
        assert np.array_equal(labels, reference[0]), ext
        assert volumes == reference[1], ext
