"""Tests of the whole-scan segmentation engine (hipposnn.inference), meshes and the overlay figure."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hipposnn.errors import Cancelled, HippoSNNError
from hipposnn.inference import (
    AUTO_ROI_SHAPE,
    SegmentationSettings,
    frame_like_training,
    load_segmentation_model,
    model_inputs,
    roi_coverage,
    segment_image,
)
from hipposnn.io import Image
from hipposnn.roi import RoiBox, box_matrix


def _crop_image(shape=(34, 50, 36), seed=0) -> Image:
    """A small noisy crop with a bright ellipsoid: enough for the pipeline, fast for the SNN."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float32)
    inside = (((grid - np.asarray(shape) / 2) / np.array([7.0, 15.0, 7.0])) ** 2).sum(-1) <= 1
    array = rng.normal(100, 10, shape).astype(np.float32)
    array[inside] += 60
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS-like storage: geometry must survive untouched
    affine[:3, 3] = [20.0, 10.0, -5.0]
    return Image(array=array, affine=affine, source="synthetic.nii.gz")


def test_settings_validation() -> None:
    for bad in (dict(side="middle"), dict(model="cnn"), dict(threshold=1.5), dict(coding="gray"),
                dict(roi="somewhere"), dict(roi=(1.0, 2.0)), dict(roi=(1.0, 2.0, 3.0)), dict(timesteps=0),
                dict(device="tpu")):
        with pytest.raises(HippoSNNError):
            SegmentationSettings(**bad).validate()
    SegmentationSettings(side="left", roi=(1.0, 2.0, 3.0)).validate()


def test_crop_mode_ann_geometry_and_summary() -> None:
    image = _crop_image()
    result = segment_image(image, SegmentationSettings(roi="crop", model="ann", probabilities=True))
    assert result.labels.shape == image.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1}
    assert result.probabilities is not None and result.probabilities.shape == image.shape
    assert np.array_equal(result.affine, image.affine)
    summary = result.summary()
    json.dumps(summary)  # JSON-ready
    assert summary["model_sha256"] == result.model_sha256 and len(result.model_sha256) == 64
    assert set(summary["timings_s"]) >= {"registration", "inference", "total"}


def test_crop_mode_reads_crops_in_ras_order() -> None:
    """Crop mode feeds the network the MSD file order (voxel axes = RAS), whatever the storage order.

    The same asymmetric crop stored RAS (identity, like the MSD NIfTI files) and LPS (identity DICOM
    geometry: column and row axes reversed in RAS) must give the network the same input, and the labels
    must land on the same anatomy in each file's own grid.
    """
    ras = _crop_image(seed=4)
    ras.array[5:12, 8:20, 10:18] += 80.0  # break the symmetry of the ellipsoid
    ras = Image(array=ras.array, affine=np.eye(4), source="ras.nii.gz")
    lps = Image(array=np.ascontiguousarray(ras.array[::-1, ::-1]), affine=np.diag([-1.0, -1.0, 1.0, 1.0]),
                source="lps_dicom")
    lps.affine[:3, 3] = [ras.shape[0] - 1.0, ras.shape[1] - 1.0, 0.0]  # same voxels at the same RAS points
    settings = SegmentationSettings(roi="crop", model="ann", side="right")
    a = segment_image(ras, settings)
    b = segment_image(lps, settings)
    np.testing.assert_allclose(a.roi_probabilities["right"], b.roi_probabilities["right"], atol=1e-6)
    assert a.labels.any() and np.array_equal(b.labels, a.labels[::-1, ::-1])
    assert b.boxes[0].qc["reversed_axes"] == [0, 1] and a.boxes[0].qc["reversed_axes"] == []
    # A permuted storage order (axes stored z, x, y) is brought back to x, y, z.
    from hipposnn.roi import crop_axes

    affine = np.zeros((4, 4))
    affine[0, 1] = affine[1, 2] = affine[2, 0] = affine[3, 3] = 1.0
    assert crop_axes(affine) == ((1, 2, 0), (1, 1, 1))


def test_snn_deterministic_and_cancellable() -> None:
    image = _crop_image(shape=(6, 40, 30))
    settings = SegmentationSettings(roi="crop", timesteps=4, seed=3, probabilities=True)
    a = segment_image(image, settings)
    b = segment_image(image, settings)
    assert np.array_equal(a.probabilities, b.probabilities)
    # on a crop "snn" is the T = 32 SNN in ternary coding (the CV's default), and the JSON says so
    used = a.summary()["settings"]
    assert (used["model_used"], used["coding_used"]) == ("snn-t32", "ternary")
    assert used["checkpoint_used"].endswith("hipposnn_snn_ternary.pt")
    custom = segment_image(image, replace(settings, checkpoint=used["checkpoint_used"])).summary()["settings"]
    assert custom["model_used"] is None and custom["checkpoint_used"] == used["checkpoint_used"]
    calls = []

    def stop(fraction: float, message: str) -> bool:
        calls.append(fraction)
        return fraction < 0.5

    with pytest.raises(Cancelled):
        segment_image(image, settings, progress=stop)
    assert calls and all(0.0 <= f <= 1.0 for f in calls)


def test_model_cache_and_device() -> None:
    assert load_segmentation_model("ann") is load_segmentation_model("ann")
    with pytest.raises(HippoSNNError):
        load_segmentation_model("ann", checkpoint="/nonexistent/model.pt")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(HippoSNNError, match="CUDA"):
            load_segmentation_model("ann", device="cuda")
        assert load_segmentation_model("ann", device="auto").device == "cpu"


def test_frame_and_coverage() -> None:
    roi = np.ones(AUTO_ROI_SHAPE, dtype=np.float32)
    framed = frame_like_training(roi)
    assert framed[0].sum() == 50 * 35 and framed[:, 27, 24].all()
    box = RoiBox(side="left", matrix=box_matrix((0.0, 0.0, 0.0), shape=AUTO_ROI_SHAPE), shape=AUTO_ROI_SHAPE)
    mask = np.zeros((80, 80, 80), dtype=bool)
    mask[38:42, 38:42, 38:42] = True
    mask[0, 0, 0] = True  # far outside the box
    affine = np.eye(4)
    affine[:3, 3] = -40.0
    assert roi_coverage(box, affine, mask) == pytest.approx(64 / 65)


def test_model_inputs_mark_content_like_training_crops() -> None:
    """Crop mode: the box pads the crop to the 56 x 48 plane, and only the crop's own voxels are
    content. Whole-brain boxes: the training-like window is the content, zero outside."""
    from hipposnn.roi import place_rois

    image = _crop_image()  # 34 x 50 x 36 voxels of 1 mm
    box = place_rois(image, "right", "crop", (34, 56, 48))[0]
    (roi,), (valid,) = model_inputs(image, [box], crop=True)
    assert roi.shape == valid.shape == (34, 56, 48) and valid.sum() == 34 * 50 * 36
    assert (roi[~valid] == 0).all() and (roi[valid] > 0).all()
    whole = RoiBox(side="left", matrix=box_matrix((0.0, 0.0, 0.0), shape=AUTO_ROI_SHAPE), shape=AUTO_ROI_SHAPE)
    big = Image(np.full((80, 80, 80), 7.0, np.float32), np.eye(4) - np.diag([0, 0, 0, 0]))
    big.affine[:3, 3] = -40.0
    (roi,), (valid,) = model_inputs(big, [whole], crop=False)
    assert valid.sum() == AUTO_ROI_SHAPE[0] * 50 * 35
    np.testing.assert_array_equal(roi, frame_like_training(np.full(AUTO_ROI_SHAPE, 7.0, np.float32)))


def test_centre_mode_needs_one_side() -> None:
    with pytest.raises(HippoSNNError, match="one hippocampus"):
        segment_image(_crop_image(), SegmentationSettings(roi=(0.0, 0.0, 0.0)))


def test_mesh_volume_matches_voxels(tmp_path) -> None:
    from hipposnn.mesh import surfaces, write_mesh

    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    grid = np.indices(labels.shape).transpose(1, 2, 3, 0)
    labels[(((grid - 15) / np.array([6, 9, 5])) ** 2).sum(-1) <= 1] = 2
    affine = np.diag([-1.0, 1.2, 1.0, 1.0])  # mirrored, anisotropic
    out = surfaces(labels, affine, {"left": 2, "right": 1}, ".stl")
    assert set(out) == {"left"}
    poly, check = out["left"]
    assert check["relative_difference"] < 0.05
    for suffix in (".vtk", ".stl"):
        path = write_mesh(poly, tmp_path / f"left{suffix}")
        assert path.stat().st_size > 1000
    ras = surfaces(labels, affine, {"left": 2}, ".vtk")["left"][0]
    assert ras.GetBounds()[0] == pytest.approx(-out["left"][0].GetBounds()[1], abs=1e-6)  # x flips RAS <-> LPS


def test_overlay_png(tmp_path) -> None:
    from hipposnn.figures import overlay_png

    image = _crop_image()
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[10:20, 20:30, 15:20] = 1
    path = overlay_png(image.array, labels, image.affine, tmp_path / "o.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.shared
def test_wholebrain_auto_roi_covers_hippocampi(shared_data) -> None:
    """Registration-only check on one FreeSurfer case (inference is covered above and in docs numbers)."""
    import nibabel as nib
    from hipposnn.io import load_image
    from hipposnn.roi import place_rois

    case = shared_data / "wholebrain" / "bert"
    image = load_image(case / "norm.mgz")
    aseg = np.asarray(nib.load(str(case / "aseg.mgz")).dataobj)
    boxes = place_rois(image, "both", "auto", AUTO_ROI_SHAPE)
    for box, value in zip(boxes, (53, 17)):
        assert roi_coverage(box, image.affine, aseg == value) >= 0.98


_SEGMENT_ONCE = """
import hashlib, json, sys
import numpy as np
from hipposnn import native
from hipposnn.inference import SegmentationSettings, segment_image
from hipposnn.io import Image

rng = np.random.default_rng(0)
shape = (12, 40, 30)
grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float32)
inside = (((grid - np.asarray(shape) / 2) / np.array([7.0, 15.0, 7.0])) ** 2).sum(-1) <= 1
array = rng.normal(100, 10, shape).astype(np.float32)
array[inside] += 60
settings = SegmentationSettings(roi="crop", timesteps=6, seed=int(sys.argv[1]), threads=2, probabilities=True)
result = segment_image(Image(array, np.eye(4), "synthetic"), settings)
print(json.dumps({"probabilities": hashlib.sha256(result.probabilities.tobytes()).hexdigest(),
                  "labels": hashlib.sha256(result.labels.tobytes()).hexdigest(),
                  "fused": native.kernels() is not None}))
"""


def _segment_in_new_process(seed: int, native_mode: str) -> dict:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HIPPOSNN_NATIVE": native_mode}
    done = subprocess.run([sys.executable, "-c", _SEGMENT_ONCE, str(seed)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_seeded_spiking_inference_is_bit_identical_across_processes() -> None:
    """Issue 12 items 3/8 (inference part): same seed and thread count, separate processes, same bits;
    and the same bits with and without the fused C++ kernels (so a background compile changes nothing)."""
    first = _segment_in_new_process(3, "wait")
    second = _segment_in_new_process(3, "wait")
    assert first == second
    pytorch = _segment_in_new_process(3, "0")
    assert not pytorch["fused"]
    assert {k: pytorch[k] for k in ("probabilities", "labels")} == {k: first[k] for k in ("probabilities", "labels")}
    assert _segment_in_new_process(4, "0")["probabilities"] != pytorch["probabilities"]  # the seed matters


def test_a_direct_input_snn_runs_in_larger_batches_with_the_same_result():
    """A direct-input SNN draws no input spikes, so the batch (SNN_BATCH_DIRECT, chosen for speed) cannot
    change its answer; a spike-drawing SNN keeps SNN_BATCH (one seeded generator per batch); the ANN takes all."""
    import torch
    from hipposnn.inference import SNN_BATCH, SNN_BATCH_DIRECT, _batch_size
    from hipposnn.simulate import predict_slices
    from hipposnn.unet import SpikingUNet, UNet, UNetSpec

    torch.manual_seed(0)
    ann = UNet(UNetSpec(in_channels=3, channels=(4, 8), dropout=0.0))
    direct = SpikingUNet.from_ann(ann, input_encoding="direct")
    poisson = SpikingUNet.from_ann(ann)
    assert [_batch_size(m, 64) for m in (direct, poisson, ann)] == [SNN_BATCH_DIRECT, SNN_BATCH, 64]
    assert SNN_BATCH_DIRECT != SNN_BATCH
    x = np.random.default_rng(0).random((40, 3, 16, 16)).astype(np.float32)
    sizes = (SNN_BATCH, SNN_BATCH_DIRECT)
    small, large = (predict_slices(direct, x, timesteps=4, batch_size=b, chunk=1) for b in sizes)
    assert np.array_equal(small, large)
    # a Poisson-input SNN's answer does depend on the batch: the reason its batch stays fixed
    small, large = (predict_slices(poisson, x, timesteps=4, batch_size=b, chunk=1) for b in sizes)
    assert not np.array_equal(small, large)


def test_the_readout_smoothing_reshapes_an_snn_mask_at_its_volume_and_leaves_qc_on_the_raw_map() -> None:
    """SNN runs smooth the ROI map at constant volume before the paste (hipposnn.readout); the ANN's map
    and every QC number stay the network's own; ``smooth`` 0 turns it off and the JSON says what ran."""
    from hipposnn.readout import smooth_readout

    image = _crop_image(shape=(8, 40, 30))
    base = SegmentationSettings(roi="crop", model="snn-t8", side="right", probabilities=True)
    smoothed, raw = segment_image(image, base), segment_image(image, replace(base, smooth=0.0))
    assert smoothed.summary()["settings"]["smooth_used"] == 1.0 and raw.summary()["settings"]["smooth_used"] == 0.0
    roi_raw = raw.roi_probabilities["right"]
    np.testing.assert_allclose(smoothed.roi_probabilities["right"], smooth_readout(roi_raw, 1.0, 0.5), atol=1e-6)
    assert not np.array_equal(smoothed.roi_probabilities["right"], roi_raw)
    assert (smoothed.roi_probabilities["right"] > 0.5).sum() == (roi_raw > 0.5).sum()
    side_s, side_r = smoothed.qc["sides"]["right"], raw.qc["sides"]["right"]
    assert side_s["undecided_fraction"] == side_r["undecided_fraction"]
    assert side_s["twin_agreement"] == side_r["twin_agreement"]
    ann = segment_image(image, SegmentationSettings(roi="crop", model="ann"))
    assert ann.summary()["settings"]["smooth_used"] == 0.0
    with pytest.raises(HippoSNNError, match="readout smoothing"):
        SegmentationSettings(smooth=4.0).validate()


def test_evaluate_scores_the_readout_step_when_asked(tmp_path) -> None:
    """evaluate_model(smooth=s) thresholds each case's smoothed volume, as segment does; 0 is the raw map."""
    from hipposnn.data import build_slices, from_slices, load_cases
    from hipposnn.metrics import dice
    from hipposnn.pipeline import evaluate_model
    from hipposnn.readout import smooth_readout
    from hipposnn.simulate import predict_slices
    from hipposnn.unet import UNet, UNetSpec

    from .helpers import make_msd_folder

    data = make_msd_folder(tmp_path / "data", n=2)
    model = UNet(UNetSpec(channels=(4, 8), dropout=0.0))
    raw, smooth = evaluate_model(model, data, coding="binary"), evaluate_model(model, data, coding="binary", smooth=1.0)
    assert raw["settings"]["readout_sigma"] == 0.0 and smooth["settings"]["readout_sigma"] == 1.0
    slices = build_slices(load_cases(data), "binary", 0)
    probs = predict_slices(model, slices.images, timesteps=1, coding="binary")
    for i, case in enumerate(smooth["cases"]):
        sel = slices.case_index == i
        truth = from_slices(slices.labels[sel] > 0.5)
        assert case["dice_3d"] == pytest.approx(dice(smooth_readout(from_slices(probs[sel]), 1.0) > 0.5, truth))


def test_ternary_snn_on_a_whole_brain_roi_warns_and_still_segments() -> None:
    """The user's coding wins, and the result's warnings say the binary default is ahead on whole brains."""
    image = _crop_image()
    centre = tuple(float(v) for v in image.affine[:3, :3] @ (np.asarray(image.shape) / 2) + image.affine[:3, 3])
    settings = SegmentationSettings(roi=centre, side="right", model="snn-t8", timesteps=1, twin_check=False)
    ternary = segment_image(image, replace(settings, coding="ternary"))
    assert ternary.summary()["settings"]["coding_used"] == "ternary"
    assert any("binary SNNs" in w for w in ternary.qc["warnings"])
    binary = segment_image(image, settings)
    assert binary.summary()["settings"]["coding_used"] == "binary"
    assert not any("binary SNNs" in w for w in binary.qc["warnings"])
