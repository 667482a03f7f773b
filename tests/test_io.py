"""Tests of hipposnn.io: geometry conversion, reading real and synthetic files, input validation."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hipposnn.errors import HippoSNNError
from hipposnn.io import (
    Image,
    check_output_path,
    from_sitk,
    itk_to_ras_affine,
    load_image,
    ras_affine_to_itk,
    save_image,
    swap_ras_lps,
    to_sitk,
)


def _rotation(angles: tuple) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


AFFINES = [
    np.array([[-1.0, 0, 0, 133.4], [0, 0, 1, -110], [0, -1, 0, 128], [0, 0, 0, 1]]),  # FreeSurfer LIA
    np.diag([1.0, 1.0, 1.0, 1.0]),
    np.diag([-0.9, 1.2, 3.0, 1.0]),  # LAS, anisotropic
]
_oblique = np.eye(4)
_oblique[:3, :3] = _rotation((0.3, -0.2, 0.7)) @ np.diag([0.8, 1.0, 1.5])
_oblique[:3, 3] = (-12.5, 30.25, 7.0)
AFFINES.append(_oblique)


def _t1_like(shape=(20, 22, 18), seed=0, dtype=np.float32) -> np.ndarray:
    """Smooth-ish random image with many distinct values, like an MRI."""
    rng = np.random.default_rng(seed)
    base = np.indices(shape).sum(axis=0).astype(np.float64)
    data = 40 + 3 * base + rng.normal(0, 10, shape)
    return np.clip(data, 0, 255).astype(dtype)


def _write_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.mark.parametrize("affine", AFFINES)
def test_ras_itk_round_trip_is_exact(affine):
    origin, spacing, direction = ras_affine_to_itk(affine)
    back = itk_to_ras_affine(origin, spacing, direction)
    np.testing.assert_allclose(back, affine, rtol=0, atol=1e-12)
    # LPS: x and y change sign
    np.testing.assert_allclose(origin, [-affine[0, 3], -affine[1, 3], affine[2, 3]], atol=1e-12)


@pytest.mark.parametrize("affine", AFFINES)
def test_sitk_image_geometry_matches_affine(affine):
    data = _t1_like((5, 6, 7))
    img = to_sitk(data, affine)
    assert img.GetSize() == (5, 6, 7)
    for ijk in [(0, 0, 0), (4, 1, 3), (2, 5, 6)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(ijk))
        ras = affine[:3, :3] @ np.array(ijk) + affine[:3, 3]
        np.testing.assert_allclose(swap_ras_lps(lps), ras, atol=1e-9)
        assert img[ijk] == pytest.approx(float(data[ijk]))
    array, back = from_sitk(img)
    np.testing.assert_array_equal(array, data)
    np.testing.assert_allclose(back, affine, atol=1e-12)


def test_swap_ras_lps_is_self_inverse():
    m = AFFINES[3]
    np.testing.assert_allclose(swap_ras_lps(swap_ras_lps(m)), m)
    np.testing.assert_allclose(swap_ras_lps(np.array([1.0, 2.0, 3.0])), [-1.0, -2.0, 3.0])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mgz", ".nrrd", ".mha"])
def test_save_then_load_round_trip(tmp_path, suffix):
    affine = AFFINES[3] if suffix != ".mgz" else AFFINES[0]
    data = _t1_like()
    out = save_image(data, affine, tmp_path / f"t1{suffix}")
    img = load_image(out)
    np.testing.assert_allclose(img.array, data, atol=1e-5)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    assert img.array.dtype == np.float32 and img.shape == data.shape
    assert [p.name for p in tmp_path.iterdir()] == [f"t1{suffix}"]  # no temporary file left


def test_save_label_map_as_uint8_and_like(tmp_path):
    like = Image(_t1_like(), AFFINES[1], "x")
    labels = (like.array > 100).astype(np.int64)
    out = save_image(labels, None, tmp_path / "seg.nii.gz", like=like)
    saved = nib.load(str(out))
    assert saved.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(saved.dataobj), labels)
    with pytest.raises(ValueError):
        save_image(labels[:-1], None, tmp_path / "bad.nii.gz", like=like)


def test_image_properties():
    img = Image(np.zeros((3, 4, 5), np.float32), np.diag([-2.0, 1.0, 3.0, 1.0]), "x")
    assert img.spacing == (2.0, 1.0, 3.0)
    assert img.shape == (3, 4, 5)


def test_uint8_t1_is_accepted(tmp_path):
    img = load_image(_write_nifti(tmp_path / "u8.nii.gz", _t1_like(dtype=np.uint8)))
    assert img.array.dtype == np.float32


def test_single_volume_4d_is_squeezed(tmp_path):
    img = load_image(_write_nifti(tmp_path / "one.nii.gz", _t1_like()[..., None]))
    assert img.shape == (20, 22, 18)


def _bad_cases(tmp_path: Path):
    good = _t1_like()
    labels = np.zeros((20, 22, 18), np.uint8)
    labels[5:15, 5:15, 5:12] = 1
    labels[8:12, 8:12, 6:10] = 2
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    cases = {
        "2D": _write_nifti(tmp_path / "flat.nii.gz", good[:, :, 0]),
        "4D with 2": _write_nifti(tmp_path / "four.nii.gz", np.stack([good, good], axis=-1)),
        "label map": _write_nifti(tmp_path / "labels.nii.gz", labels),
        "constant": _write_nifti(tmp_path / "const.nii.gz", np.full((20, 20, 20), 7, np.float32)),
        "too small": _write_nifti(tmp_path / "small.nii.gz", _t1_like(shape=(10, 10, 10))),
        "NaN": _write_nifti(tmp_path / "nan.nii.gz", nan),
        "tiny spacing": _write_nifti(tmp_path / "tiny.nii.gz", good, np.diag([0.05, 1, 1, 1])),
        "huge spacing": _write_nifti(tmp_path / "huge.nii.gz", good, np.diag([1, 1, 20, 1])),
        "missing": tmp_path / "nothing_here.nii.gz",
        "unsupported": tmp_path / "notes.txt",
    }
    cases["unsupported"].write_text("hello")
    full = _write_nifti(tmp_path / "full.nii.gz", good)
    raw = full.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = tmp_path / "truncated.nii.gz"
    (tmp_path / "garbage.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 3))
    cases["corrupted"] = tmp_path / "garbage.nii.gz"
    (tmp_path / "garbage.nrrd").write_bytes(b"NRRD0004\ntype: float\nsizes: 5 5\n\n\x00")
    cases["corrupted nrrd"] = tmp_path / "garbage.nrrd"
    return cases


EXPECTED = {
    "2D": "2D",
    "4D with 2": "4D with 2 volumes",
    "label map": "label map",
    "constant": "constant",
    "NaN": "NaN",
    "tiny spacing": "voxel size",
    "huge spacing": "voxel size",
    "missing": "not found",
    "unsupported": "Unsupported file type",
    "truncated": "truncated",
    "corrupted": "corrupted",
    "corrupted nrrd": "Cannot read garbage.nrrd: file is unreadable, truncated or corrupted",
    "too small": "too small (10 x 10 x 10 voxels): need at least 16 voxels along each axis",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_inputs_raise_one_line_errors(tmp_path, case):
    path = _bad_cases(tmp_path)[case]
    with pytest.raises(HippoSNNError) as info:
        load_image(path)
    message = str(info.value)
    assert EXPECTED[case] in message
    assert "\n" not in message


def _brain_like(shape=(40, 44, 36), seed=0) -> np.ndarray:
    """A T1-like head: a uniform (0) background around an ellipsoid with MRI-like texture (0..255)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    radius = ((grid - centre[:, None, None, None]) ** 2 / (0.4 * np.asarray(shape))[:, None, None, None] ** 2).sum(0)
    head = radius < 1.0
    data = np.zeros(shape)
    data[head] = 60 + 30 * np.sin(grid[0][head] / 3) + 20 * np.cos(grid[1][head] / 4) + rng.normal(0, 12, head.sum())
    return np.clip(np.round(data), 0, 255)


def test_integer_t1_with_nonzero_background_is_not_a_label_map(tmp_path):
    """Issue 12 item 9: T1 - 300 (integer, background -300 everywhere) was refused as "a label map"."""
    brain = _brain_like()
    assert load_image(_write_nifti(tmp_path / "t1.nii.gz", brain.astype(np.uint8))).shape == brain.shape
    shifted = load_image(_write_nifti(tmp_path / "shifted.nii.gz", (brain - 300).astype(np.int16)))
    assert float(shifted.array.min()) == -300.0
    labels = np.full((30, 30, 30), 5, np.int16)  # a label map whose background is not 0 is still one
    labels[5:15, 5:15, 5:15] = 17
    labels[15:25, 5:15, 5:15] = 53
    with pytest.raises(HippoSNNError, match="label map"):
        load_image(_write_nifti(tmp_path / "labels.nii.gz", labels))


def test_scaled_int16_and_zscored_t1_load(tmp_path):
    """int16 with scl_inter = -100 and a z-scored float T1 are valid T1 images (issue 12 item 9)."""
    brain = _brain_like()
    img = nib.Nifti1Image(brain.astype(np.int16), np.eye(4))
    img.header.set_slope_inter(1.0, -100.0)
    path = tmp_path / "inter.nii.gz"
    nib.save(img, str(path))
    loaded = load_image(path)
    assert np.array_equal(loaded.array, (brain - 100).astype(np.float32))
    z = (brain - brain.mean()) / brain.std()
    loaded = load_image(_write_nifti(tmp_path / "z.nii.gz", z.astype(np.float32)))
    assert loaded.array.min() < 0 < loaded.array.max()


def test_saved_files_follow_the_umask(tmp_path):
    """Issue 12 item 2: outputs were 0600 (mkstemp's mode survived the rename)."""
    previous = os.umask(0o022)
    try:
        path = save_image(_t1_like(), np.eye(4), tmp_path / "out.nii.gz")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        path = save_image(_t1_like(), np.eye(4), tmp_path / "out.mha")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mha", "out.nii.gz"]


def test_degenerate_affine_is_rejected(tmp_path):
    affine = np.eye(4)
    affine[:3, 2] = affine[:3, 0]  # two axes point the same way
    path = tmp_path / "degenerate.nii.gz"
    # nibabel refuses to store a singular qform; write through the header's sform only.
    img = nib.Nifti1Image(_t1_like(), None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(path))
    with pytest.raises(HippoSNNError, match="degenerate"):
        load_image(path)


def test_check_output_path(tmp_path):
    existing = tmp_path / "in.nii.gz"
    existing.write_bytes(b"x")
    assert check_output_path(tmp_path / "out.nii.gz", [existing]) == tmp_path / "out.nii.gz"
    with pytest.raises(HippoSNNError, match="also an input"):
        check_output_path(existing, [existing], overwrite=True)
    with pytest.raises(HippoSNNError, match="exists"):
        check_output_path(existing, [])
    assert check_output_path(existing, [], overwrite=True) == existing
    with pytest.raises(HippoSNNError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.nii.gz", [])
    with pytest.raises(HippoSNNError, match="must end in"):
        check_output_path(tmp_path / "out.png", [])
    with pytest.raises(HippoSNNError, match="folder"):
        check_output_path(tmp_path, [])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write in read-only folders")
def test_check_output_path_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(HippoSNNError, match="not writable"):
            check_output_path(folder / "out.nii.gz", [])
    finally:
        folder.chmod(0o700)


# ------------------------------------------------------------------ real reference files


def test_load_mgz_whole_brain(shared_data):
    path = shared_data / "wholebrain" / "bert" / "norm.mgz"
    img = load_image(path)
    ref = nib.load(str(path))
    assert img.shape == (256, 256, 256)
    np.testing.assert_allclose(img.spacing, (1.0, 1.0, 1.0), atol=1e-5)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)
    assert nib.aff2axcodes(img.affine) == ("L", "I", "A")
    assert img.array.dtype == np.float32 and img.array.max() > 100


def test_load_nifti_whole_brain(shared_data):
    img = load_image(shared_data / "wholebrain" / "colin27" / "ch2.nii.gz")
    assert img.shape == (181, 217, 181)
    np.testing.assert_allclose(img.affine[:3, 3], (-90.0, -125.0, -71.0))


def test_aseg_is_rejected_as_label_map(shared_data):
    with pytest.raises(HippoSNNError, match="label map"):
        load_image(shared_data / "wholebrain" / "bert" / "aseg.mgz")


def test_load_dicom_series_sorted_by_position(shared_data):
    pydicom = pytest.importorskip("pydicom")
    folder = shared_data / "dicom" / "Study1_13_HCropVolume"
    img = load_image(folder)
    assert img.shape == (35, 51, 32)
    np.testing.assert_allclose(img.spacing, (1.0, 1.0, 1.0))
    slices = [pydicom.dcmread(str(p)) for p in folder.glob("*.dcm")]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    stacked = np.stack([ds.pixel_array.T for ds in slices], axis=-1).astype(np.float32)
    slope = float(getattr(slices[0], "RescaleSlope", 1.0))
    intercept = float(getattr(slices[0], "RescaleIntercept", 0.0))
    np.testing.assert_allclose(img.array, stacked * slope + intercept)
    # file order is not slice order (1, 10, 11, ...): the reader must sort by position
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert z == sorted(z)
    lps_origin = np.array(slices[0].ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(img.affine[:3, 3], swap_ras_lps(lps_origin))


def test_sitk_reads_written_nrrd_like_load_image(tmp_path):
    data = _t1_like()
    out = save_image(data, AFFINES[0], tmp_path / "x.nrrd")
    img = sitk.ReadImage(str(out))
    # LIA affine: ITK direction (LPS) has +1 for i along L, -1*-1... check a physical point directly
    ras = AFFINES[0][:3, :3] @ np.array([1.0, 2.0, 3.0]) + AFFINES[0][:3, 3]
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((1, 2, 3)), swap_ras_lps(ras), atol=1e-6)
