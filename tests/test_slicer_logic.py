"""HippoSNN.py imported and its Logic run end to end on the STAND-IN for Slicer (tests/slicer_standin).

The segmentation itself is the real core (hipposnn.inference) on a real whole-brain T1; only the MRML
side is the stand-in, so these tests show that the module calls the documented Slicer API with the
right geometry, not that Slicer behaves like the stand-in.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.slicer_standin import standin


@pytest.fixture()
def module():
    mod = standin.loadModule()
    yield mod
    standin.unloadModule()


def _volume(slicer, image, name="T1"):
    from HippoSNNLib import geometry

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    arrayKJI, ijkToRAS = geometry.volumeArraysFromImage(image)
    slicer.util.updateVolumeFromArray(node, arrayKJI)
    node.SetIJKToRASMatrix(ijkToRAS)
    return node


def test_module_class_and_parameter_defaults(module):
    import slicer

    parent = type("Parent", (), {})()
    module.HippoSNN(parent)
    assert parent.title == "HippoSNN" and parent.categories == ["Segmentation"]
    assert ("app.connect", "startupCompleted()", "registerSampleData") in slicer.standinCalls
    node = module.HippoSNNLogic().getParameterNode()
    # the default model on a whole brain ("snn" -> the binary snn-t8) at its own timesteps
    assert node.timesteps == 8 and node.coding == "auto" and node.side == "both" and node.device == "auto"
    with pytest.raises(ValueError):
        node.coding = "quaternary"


@pytest.mark.shared
def test_logic_process_end_to_end_on_real_t1(module, shared_data):
    import slicer
    from hipposnn.io import load_image

    image = load_image(shared_data / "wholebrain" / "bert" / "norm.mgz")
    volume = _volume(slicer, image)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    volume.SetAndObserveTransformNodeID(transform.GetID())  # identity parent: exercises the transform path
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    progress = []
    logic = module.HippoSNNLogic()
    info = logic.process(
        volume, segmentation, model="ann", device="cpu", progressCallback=lambda f, m: progress.append(f) or True
    )
    assert set(info["volumes_mm3"]) == {"right", "left"}
    assert all(v > 500 for v in info["volumes_mm3"].values())
    assert progress and max(progress) <= 1.0
    seg = segmentation.GetSegmentation()
    assert seg.GetNumberOfSegments() == 2
    for side, code in (("right", "24028007"), ("left", "7771000")):
        segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(f"{side.capitalize()} hippocampus"))
        entry = segment.GetTag("TerminologyEntry")
        assert "SCT^5366008^Hippocampus" in entry and f"SCT^{code}^" in entry and "SCT^123037004^" in entry
        # the mask arrives in KJI order on the input grid, and its volume is the reported one
        assert segment.labelmapKJI.shape == volume.arrayKJI.shape
        assert int(segment.labelmapKJI.sum()) * float(np.prod(image.spacing)) == pytest.approx(
            info["volumes_mm3"][side]
        )
    assert segmentation.referenceGeometryVolumeID == volume.GetID()
    assert segmentation.GetNodeReferenceID("referenceImageGeometryRef") == volume.GetID()
    assert segmentation.GetTransformNodeID() == transform.GetID()
    assert any(c[0] == "SetItemParent" for c in slicer.standinCalls)
    # the auto-placed ROIs become editable markups ROIs centred on the boxes
    rois = logic.updateRoiNodes(volume, info["boxes"])
    assert [r.GetAttribute("HippoSNN.side") for r in rois] == ["right", "left"]
    for roi, box in zip(rois, info["boxes"]):
        assert np.allclose(logic.roiCentre(roi), box.centre_ras)
        assert roi.GetSize() == pytest.approx(tuple(float(n) for n in box.shape))


def test_process_rejects_invalid_inputs(module):
    import slicer

    logic = module.HippoSNNLogic()
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    with pytest.raises(ValueError):
        logic.process(None, segmentation)
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    with pytest.raises(ValueError):
        logic.process(volume, segmentation, side="middle")
    for threshold in (2.0, 1.0, 0.0):  # the core's rule (hipposnn.options): strictly between 0 and 1
        with pytest.raises(ValueError):
            logic.process(volume, segmentation, threshold=threshold)
    for smooth in (-1.0, 5.0):  # the readout's rule (hipposnn.readout): 0 to 3 voxels
        with pytest.raises(ValueError, match="readout smoothing"):
            logic.process(volume, segmentation, smooth=smooth)
    assert not any(c[0].startswith("PyTorchUtils") for c in slicer.standinCalls)  # refused before any work
    from HippoSNNLib.dependencies import versionTuple

    assert versionTuple("2.5.1+cu121") == (2, 5) and versionTuple("10.0") == (10, 0)


def test_convert_model_on_image_label_pairs_reports_progress(module, tmp_path):
    """Logic.convertModel runs ``-m hipposnn convert`` in a child process on a folder of image/label pairs;
    its progress lines reach the callback; returning False kills the child and nothing is written."""
    import shutil
    import sys

    import torch
    from hipposnn.errors import Cancelled
    from hipposnn.unet import UNet, UNetSpec
    from hipposnn.weights import load_model, save_model

    from tests.helpers import make_msd_folder

    msd = make_msd_folder(tmp_path / "msd", n=3)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for image in (msd / "imagesTr").glob("*.nii.gz"):
        shutil.copy(image, pairs / image.name)
        shutil.copy(msd / "labelsTr" / image.name, pairs / image.name.replace(".nii.gz", "_seg.nii.gz"))
    torch.manual_seed(0)
    save_model(UNet(UNetSpec(channels=(4, 8, 8, 8))), tmp_path / "ann.pt", {"stage": "ann"})
    logic = module.HippoSNNLogic()
    logic.pythonExecutable = sys.executable  # PythonSlicer in Slicer
    seen = []
    path = logic.convertModel(str(tmp_path / "ann.pt"), str(pairs), str(tmp_path / "out"), timesteps=3,
                              device="cpu", progressCallback=lambda f, m: seen.append(f) or True)
    assert load_model(path, "snn") is not None
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(Cancelled):
        logic.convertModel(str(tmp_path / "ann.pt"), str(pairs), str(tmp_path / "stopped"), timesteps=3,
                           device="cpu", progressCallback=lambda f, m: f < 0.5)
    assert not (tmp_path / "stopped" / "converted.pt").exists()
