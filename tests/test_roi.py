"""Tests of hipposnn.roi: ROI geometry (extract / paste back / mirroring), crop mode and auto placement."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
from hipposnn import roi
from hipposnn.errors import HippoSNNError
from hipposnn.io import Image, load_image


def _ramp_image(shape=(60, 70, 60), affine=None) -> Image:
    """Image whose value is its RAS x coordinate plus small y/z terms: directions are readable from values."""
    affine = np.array([[1.0, 0, 0, -30], [0, 1, 0, -35], [0, 0, 1, -30], [0, 0, 0, 1]]) if affine is None else affine
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    ras = affine[:3, :3] @ ijk + affine[:3, 3:4]
    values = 100 + ras[0] + 0.01 * ras[1] + 0.0001 * ras[2]
    return Image(values.reshape(shape).astype(np.float32), affine, "ramp")


def test_box_matrix_centre_and_mirroring():
    centre = (10.0, -20.0, 5.0)
    plain = roi.box_matrix(centre)
    mirrored = roi.box_matrix(centre, mirrored=True)
    for m in (plain, mirrored):
        box = roi.RoiBox("left", m)
        np.testing.assert_allclose(box.centre_ras, centre)
        np.testing.assert_allclose(np.abs(np.linalg.det(m[:3, :3])), 1.0)
    assert plain[0, 0] == 1.0 and mirrored[0, 0] == -1.0


@pytest.mark.parametrize("centre", [(10.0, -20.0, 5.0), (60.0, 0.0, 0.0), (400.0, 0.0, 0.0)])
def test_sampling_from_the_voxels_around_a_box_equals_sampling_from_the_whole_scan(centre):
    """extract_roi hands SimpleITK only crop_to_box's part of the scan: same values, far fewer voxels,
    also for a rotated, mirrored box at the scan's edge (zeros outside) or entirely outside it."""
    rng = np.random.default_rng(0)
    affine = np.array([[-0.9, 0.1, 0, 60], [0.05, 1.1, 0.1, -70], [0, -0.1, 1.2, -50], [0, 0, 0, 1.0]])
    img = Image(rng.random((120, 130, 100), dtype=np.float32) * 100, affine, "noise")
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    box = roi.RoiBox("right", roi.box_matrix(centre, rotation, mirrored=True), mirrored=True)
    whole = roi._resample(roi.to_sitk(img.array, img.affine), box.matrix, box.shape)
    part = roi.crop_to_box(img, box)
    assert part.array.size < img.array.size / 5
    np.testing.assert_array_equal(roi.extract_roi(img, box), whole)
    if centre[0] < 100:
        assert whole.any()


def test_extract_mirrors_right_side_only():
    img = _ramp_image()
    right = roi.place_rois(img, side="right", mode=(5.0, 0.0, 0.0))[0]
    left = roi.place_rois(img, side="left", mode=(-5.0, 0.0, 0.0))[0]
    assert right.mirrored and not left.mirrored
    a_right = roi.extract_roi(img, right)
    a_left = roi.extract_roi(img, left)
    assert a_right.shape == roi.ROI_SHAPE and a_right.dtype == np.float32
    # model axis 0 runs lateral -> medial: RAS x decreases in the right ROI, increases in the left one
    assert np.all(np.diff(a_right[:, 20, 20]) == pytest.approx(-1.0, abs=1e-4))
    assert np.all(np.diff(a_left[:, 20, 20]) == pytest.approx(1.0, abs=1e-4))
    # axes 1 and 2 posterior->anterior and inferior->superior on both sides
    for a in (a_right, a_left):
        assert np.all(np.diff(a[5, :, 20]) > 0) and np.all(np.diff(a[5, 20, :]) > 0)
    assert float(a_right.mean()) == pytest.approx(100 + 5.0, abs=0.05)


def test_paste_back_is_inverse_of_extract_on_oblique_scan():
    affine = np.eye(4)
    angle = 0.4
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, 3] = (-40, -40, -30)
    img = _ramp_image((80, 80, 64), affine)
    centre = affine[:3, :3] @ np.array([40.0, 40.0, 32.0]) + affine[:3, 3]
    box = roi.place_rois(img, side="right", mode=tuple(centre + 0.3))[0]
    patch = roi.extract_roi(img, box)
    ones = roi.paste_back(np.ones(box.shape, np.float32), box, img)
    back = roi.paste_back(patch, box, img)
    ijk = np.indices(img.shape).reshape(3, -1).astype(np.float64)
    to_roi = np.linalg.inv(box.matrix) @ img.affine
    q = (to_roi[:3, :3] @ ijk + to_roi[:3, 3:4]).T
    # strictly inside the ROI grid (ITK extrapolates as a constant in the last half voxel)
    inner = np.all((q >= 0) & (q <= np.array(box.shape) - 1), axis=1).reshape(img.shape)
    np.testing.assert_allclose(ones[inner], 1.0, atol=1e-5)
    assert abs(int(inner.sum()) - np.prod(roi.ROI_SHAPE)) < 0.15 * np.prod(roi.ROI_SHAPE)
    # linear interpolation of a linear ramp is exact: pasting the extracted patch restores the image
    np.testing.assert_allclose(back[inner], img.array[inner], atol=1e-3)
    assert np.all(back[ones == 0] == 0)


@pytest.mark.parametrize("shape", [(35, 51, 32), (30, 60, 50)])
def test_crop_mode_centres_without_resampling(shape):
    rng = np.random.default_rng(1)
    img = Image(rng.uniform(1, 100, shape).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]), "crop")
    box = roi.place_rois(img, mode="crop")[0]
    assert not box.mirrored and box.qc["mode"] == "crop"
    patch = roi.extract_roi(img, box)
    off = np.floor((np.array(shape) - np.array(roi.ROI_SHAPE)) / 2).astype(int)
    for i, j, k in [(0, 0, 0), (10, 30, 20), (23, 55, 47)]:
        src = np.array([i, j, k]) + off
        expected = img.array[tuple(src)] if np.all((src >= 0) & (src < shape)) else 0.0
        assert patch[i, j, k] == pytest.approx(expected, abs=1e-4)
    back = roi.paste_back(patch, box, img)
    covered = roi.paste_back(np.ones(roi.ROI_SHAPE, np.float32), box, img) > 0.999
    np.testing.assert_allclose(back[covered], img.array[covered], atol=1e-4)


def test_crop_mode_resamples_non_1mm_input():
    img = _ramp_image((30, 40, 30), np.diag([2.0, 2.0, 2.0, 1.0]))
    box = roi.place_rois(img, mode="crop")[0]
    np.testing.assert_allclose(np.linalg.norm(box.matrix[:3, :3], axis=0), 1.0)
    centre_img = img.affine[:3, :3] @ ((np.array(img.shape) - 1) / 2) + img.affine[:3, 3]
    np.testing.assert_allclose(box.centre_ras, centre_img)


def test_bad_roi_requests():
    img = _ramp_image()
    with pytest.raises(HippoSNNError, match="side"):
        roi.place_rois(img, side="both", mode=(0.0, 0.0, 0.0))
    with pytest.raises(HippoSNNError, match="outside"):
        roi.place_rois(img, side="left", mode=(500.0, 0.0, 0.0))
    with pytest.raises(HippoSNNError, match="mode"):
        roi.place_rois(img, mode="magic")
    with pytest.raises(HippoSNNError, match="side"):
        roi.place_rois(img, side="middle")


def test_recenter_moves_box_to_prediction_centroid():
    img = _ramp_image()
    box = roi.place_rois(img, side="right", mode=(2.0, 1.0, 0.0))[0]
    prob = np.zeros(box.shape, np.float32)
    prob[12:18, 30:40, 25:35] = 0.9  # centroid (14.5, 34.5, 29.5) vs centre (11.5, 27.5, 23.5)
    moved = roi.recenter(box, prob)
    expected = box.matrix[:3, :3] @ np.array([14.5, 34.5, 29.5]) + box.matrix[:3, 3]
    np.testing.assert_allclose(moved.centre_ras, expected, atol=1e-6)
    assert moved.qc["recentred_mm"] == pytest.approx(np.linalg.norm([3.0, 7.0, 6.0]))
    assert roi.recenter(box, np.zeros(box.shape)) is box  # nothing predicted: unchanged


def test_template_resource_is_small_and_has_notice():
    assert roi.TEMPLATE_PATH.stat().st_size < 1_000_000
    notice = (roi.TEMPLATE_PATH.parent / "TEMPLATE_NOTICE.txt").read_text()
    assert "Louis Collins" in notice and "Fonov" in notice
    tpl = load_image(roi.TEMPLATE_PATH)
    np.testing.assert_allclose(tpl.spacing, (2.0, 2.0, 2.0))


def test_template_centroids_match_cobralab_labels(shared_data):
    path = shared_data / "templates" / "mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz"
    labels = nib.load(str(path))
    data = np.asarray(labels.dataobj)
    for side, values in (("right", range(88, 93)), ("left", range(7, 12))):
        ijk = np.argwhere(np.isin(data, list(values))).astype(np.float64)
        ras = ijk @ labels.affine[:3, :3].T + labels.affine[:3, 3]
        np.testing.assert_allclose(ras.mean(axis=0), roi.TEMPLATE_CENTROID_RAS[side], atol=0.01)


def _coverage(box: roi.RoiBox, ras: np.ndarray) -> float:
    """Fraction of labelled voxel centres (RAS, n x 3) that fall inside the ROI grid."""
    inv = np.linalg.inv(box.matrix)
    q = ras @ inv[:3, :3].T + inv[:3, 3]
    return float(np.all((q >= -0.5) & (q <= np.array(box.shape) - 0.5), axis=1).mean())


CASES = {
    # name: image, labels, right value, left value
    "bert": ("norm.mgz", "aseg.mgz", 53, 17),
    "fst-sub-02": ("T1.mgz", "aseg.mgz", 53, 17),  # whole head: the hard case for a brain-only template
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_roi_on_whole_brain(shared_data, case):
    image_name, label_name, right, left = CASES[case]
    folder = shared_data / "wholebrain" / case
    img = load_image(folder / image_name)
    labels = nib.load(str(folder / label_name))
    lab = np.asarray(labels.dataobj)
    start = time.perf_counter()
    reg = roi.register_to_template(img)
    wall = time.perf_counter() - start
    assert reg.quality == "good", reg.warnings
    # seconds (reported in the volumes JSON) is the registration's own duration; its speed is a
    # benchmark (bench/bench_segment.py), not a test
    assert 0.5 * wall < reg.seconds <= wall
    boxes = roi.place_rois(img, registration=reg)
    wide = roi.place_rois(img, registration=reg, shape=(32, 56, 48))
    assert [b.side for b in boxes] == ["right", "left"]
    for box, box_wide in zip(boxes, wide):
        value = right if box.side == "right" else left
        ras = np.argwhere(lab == value) @ labels.affine[:3, :3].T + labels.affine[:3, 3]
        assert np.linalg.norm(ras.mean(axis=0) - box.centre_ras) < 5.0

        assert _coverage(box, ras) > 0.95
        assert _coverage(box_wide, ras) > 0.98
        # the extracted patch is usable: hippocampus labels sampled through the box are mostly inside it
        patch = roi.extract_roi(Image((lab == value).astype(np.float32), labels.affine, "lab"), box)
        assert patch.sum() > 0.9 * len(ras)


def test_coarse_grid_on_two_workers_gives_the_values_of_one_loop(monkeypatch):
    """The coarse search's evaluations are shared between the workers, each with its own metric: the values,
    and so the chosen start, are those of evaluating them one after the other, bit for bit."""
    import SimpleITK as sitk

    monkeypatch.setattr(roi, "_WORKERS", 2)
    _, fixed4, mask4 = roi._template()
    moving4 = sitk.Cast(sitk.BinShrink(fixed4, [1, 1, 1]), sitk.sitkFloat32)
    moving4.SetOrigin(tuple(v + d for v, d in zip(moving4.GetOrigin(), (3.0, -12.0, 25.0))))
    grid = roi._CoarseGrid(fixed4, mask4, moving4)
    assert len(grid._methods) == 2
    starts = [((0.0, 0.0, float(a)), shift) for a in (0.0, 0.3) for shift in grid.shifts()]
    one_by_one = [grid.metric(angles, shift) for angles, shift in starts]
    assert grid.metrics(starts) == one_by_one
    assert grid.metrics(starts[:1]) == one_by_one[:1] and grid.metrics([]) == []
    # the rotations are tried at the best translation, so the chosen shift is the first best of the unrotated grid
    best = starts[int(np.argmin(one_by_one[: len(grid.shifts())]))][1]
    chosen = roi._coarse_initial_transform(grid)
    np.testing.assert_allclose(np.asarray(chosen.GetTranslation()) - grid.base, best, atol=1e-9)
