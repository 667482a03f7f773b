"""Data reading, ROI cropping, normalisation, folds, losses and metrics on known cases."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from hipposnn.data import (
    ROI_SHAPE,
    build_slices,
    centre_crop,
    crop_loss,
    from_slices,
    list_cases,
    load_cases,
    load_folds,
    make_folds,
    normalise,
    save_folds,
    to_slices,
)
from hipposnn.errors import HippoSNNError
from hipposnn.losses import bce_dice_loss, bce_loss, dice_loss
from hipposnn.metrics import dice, energy_pj, mean_sd, slice_dice

from .helpers import make_msd_folder


def test_reads_msd_layout(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=3)
    cases = load_cases(root)
    assert [c.name for c in cases] == ["hippocampus_000", "hippocampus_001", "hippocampus_002"]
    assert cases[0].image.dtype == np.float32 and cases[0].label.dtype == np.uint8
    assert set(np.unique(cases[0].label)) == {0, 1}  # labels 1 and 2 merged: hippocampus = label > 0


def test_missing_label_and_bad_folder(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=2)
    (root / "labelsTr" / "hippocampus_001.nii.gz").unlink()
    with pytest.raises(HippoSNNError, match="label missing"):
        list_cases(root)
    with pytest.raises(HippoSNNError, match="imagesTr"):
        list_cases(tmp_path)
    with pytest.raises(HippoSNNError, match="not found"):
        list_cases(tmp_path / "nope")


def test_corrupt_file_is_a_user_error(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=1)
    path = root / "imagesTr" / "hippocampus_000.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(HippoSNNError, match="(?i)cannot read"):
        load_cases(root)


def test_foreign_label_values_are_refused_not_binarised(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=2)
    path = root / "labelsTr" / "hippocampus_001.nii.gz"
    img = nib.load(str(path))
    lab = np.asarray(img.dataobj).copy()
    lab[0, 0, :3] = 3  # a foreign structure: must not become hippocampus
    nib.save(nib.Nifti1Image(lab, img.affine), str(path))
    with pytest.raises(HippoSNNError) as info:
        load_cases(root)
    message = str(info.value)
    assert str(path) in message and "0, 1, 2, 3" in message and "\n" not in message
    nib.save(nib.Nifti1Image((lab > 0).astype(np.uint8), img.affine), str(path))  # binary 0/1 masks are fine
    assert set(np.unique(load_cases(root)[1].label)) == {0, 1}


def test_training_reads_images_like_inference(tmp_path):
    """One reader: a crop's image is what io.load_image (the inference reader) gives, float32, same order."""
    from hipposnn.io import load_image

    root = make_msd_folder(tmp_path / "d", n=1)
    path = root / "imagesTr" / "hippocampus_000.nii.gz"
    raw = np.asarray(nib.load(str(path)).dataobj)
    nib.save(nib.Nifti1Image((raw * 10).astype(np.int16), np.eye(4)), str(path))  # an integer crop
    case = load_cases(root)[0]
    assert case.image.dtype == np.float32 and case.image.shape == raw.shape
    assert np.array_equal(case.image, load_image(path).array)
    nib.save(nib.Nifti1Image(np.zeros(raw.shape, np.float32), np.eye(4)), str(path))  # T1 checks apply too
    with pytest.raises(HippoSNNError, match="constant"):
        load_cases(root)


def test_centre_crop_and_pad():
    vol = np.arange(30 * 50 * 40).reshape(30, 50, 40)
    out = centre_crop(vol)
    assert out.shape == ROI_SHAPE
    # axis 0 cropped 30 -> 24 from index 3; axis 1 padded 50 -> 56 with 3 zeros first; axis 2 cropped 40 -> 48? padded
    assert out[0, 3, 4] == vol[3, 0, 0]
    assert np.all(out[:, :3] == 0) and np.all(out[:, :, :4] == 0)


def test_crop_loss_counts_lost_voxels(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=2)
    cases = load_cases(root)
    wide = cases[0]
    wide.label[:] = 0
    wide.label[0:30, 20, 20] = 1  # 30 voxels along axis 0, the crop keeps 24
    stats = crop_loss([wide])
    assert stats["lost_fraction"] == pytest.approx(6 / 30)
    assert stats["worst_case"] == wide.name


def test_normalisation_robust_to_outliers():
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 10, (10, 10, 10)).astype(np.float32)
    spiky = vol.copy()
    spiky[0, 0, 0] = 1.7e6
    a, b = normalise(vol), normalise(spiky)
    assert a.min() >= 0 and a.max() <= 1 and b.max() <= 1
    assert np.abs(a - b).mean() < 0.02  # one huge voxel barely changes the rest
    t = normalise(vol, "ternary")
    assert t.min() >= -1 and t.max() <= 1 and abs(float(t.mean())) < 0.02
    with pytest.raises(HippoSNNError):
        normalise(np.full((4, 4, 4), 3.0))
    with pytest.raises(HippoSNNError):
        normalise(np.array([[[np.nan, 1.0]]]))


@pytest.mark.parametrize("coding", ["binary", "ternary"])
def test_normalise_over_content_mask_equals_normalise_then_pad(coding):
    """Training normalises a crop, then zero-pads it; inference normalises padded ROIs over a content
    mask. The two must agree, or ternary padding turns negative (dark tissue) at inference only."""
    rng = np.random.default_rng(3)
    crop = rng.gamma(4.0, 25.0, (6, 30, 20)).astype(np.float32)
    pad = [(1, 2), (9, 17), (11, 17)]
    padded = np.pad(crop, pad)
    mask = np.pad(np.ones(crop.shape, bool), pad)
    expected = np.pad(normalise(crop, coding), pad)
    got = normalise(padded, coding, valid=mask)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if coding == "ternary":  # what the old, mask-free path did: the padding became negative
        assert normalise(padded, coding)[~mask].max() < -0.05 and got[~mask].max() == 0.0
    with pytest.raises(ValueError, match="valid mask shape"):
        normalise(padded, coding, valid=mask[:, :, :3])
    with pytest.raises(HippoSNNError, match="outside the scan"):
        normalise(padded, coding, valid=np.zeros_like(mask))


def test_slices_round_trip(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=2)
    s = build_slices(load_cases(root))
    assert s.images.shape == (48, 1, 56, 48) and s.labels.shape == (48, 1, 56, 48)
    assert s.case_index.tolist() == [0] * 24 + [1] * 24
    vol = np.random.rand(*ROI_SHAPE)
    assert np.array_equal(from_slices(to_slices(vol)), vol)


def test_folds_deterministic_disjoint_complete(tmp_path):
    names = [f"c{i:03d}" for i in range(23)]
    folds = make_folds(names, 5, seed=1)
    assert folds == make_folds(list(reversed(names)), 5, seed=1)
    tests = [n for f in folds for n in f["test"]]
    assert sorted(tests) == sorted(names)
    for f in folds:
        assert not set(f["train"]) & set(f["test"])
        assert len(f["train"]) + len(f["test"]) == 23
    assert make_folds(names, 5, seed=2) != folds
    save_folds(folds, tmp_path / "f.json", 1)
    assert load_folds(tmp_path / "f.json") == json.loads(json.dumps(folds))


def test_dice_known_cases():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0 and dice(b * 0, b * 0) == 1.0 and dice(a, ~a) == 0.0
    vol_p = np.zeros((3, 2, 2), bool)
    vol_t = np.zeros((3, 2, 2), bool)
    vol_p[0] = vol_t[0] = True
    vol_p[1, 0, 0] = True
    # slice 2 is empty in both and left out
    assert slice_dice(vol_p, vol_t) == [1.0, 0.0]
    assert mean_sd([1.0, 3.0]) == {"mean": 2.0, "sd": pytest.approx(np.sqrt(2)), "n": 2}
    assert energy_pj(macs=10, accumulates=10) == pytest.approx(55.0)


def test_losses_known_values():
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    perfect = torch.tensor([20.0, -20.0, 20.0, -20.0])
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(bce_loss(perfect, target)) == pytest.approx(-np.log(1 - 1e-5), rel=1e-2)  # eps floor
    zero = torch.zeros(4)  # p = 0.5 everywhere
    assert float(bce_loss(zero, target)) == pytest.approx(np.log(2), rel=1e-5)
    assert float(dice_loss(zero, target)) == pytest.approx(1 - 2 * 1.0 / (2 + 2), abs=1e-5)
    assert float(bce_dice_loss(zero, target)) == pytest.approx(0.3 * np.log(2) + 0.7 * 0.5, rel=1e-5)
    # eps smoothing keeps BCE finite for confident mistakes
    assert torch.isfinite(bce_loss(-perfect * 10, target))


def test_nifti_4d_single_volume_is_accepted(tmp_path):
    root = make_msd_folder(tmp_path / "d", n=1)
    p = root / "imagesTr" / "hippocampus_000.nii.gz"
    img = nib.load(str(p))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[..., None], np.eye(4)), str(p))
    assert load_cases(root)[0].image.ndim == 3


# --------------------------------------------------------------------------------------------------
# Image/label pairs (issue 5: fine-tuning input "MSD layout or image/label pairs")
# --------------------------------------------------------------------------------------------------


def _pairs_from_msd(msd, folder, label_suffix=lambda i: "_label" if i % 2 == 0 else "_seg"):
    """The same cases as ``msd`` as a flat folder of pairs (``_label`` and ``_seg`` mixed)."""
    import shutil

    folder.mkdir(parents=True)
    for i, image in enumerate(sorted((msd / "imagesTr").glob("*.nii.gz"))):
        name = image.name[: -len(".nii.gz")]
        shutil.copy(image, folder / image.name)
        shutil.copy(msd / "labelsTr" / image.name, folder / f"{name}{label_suffix(i)}.nii.gz")
    return folder


def test_pair_folder_and_pair_list_read_like_msd(tmp_path):
    from hipposnn.data import fold_names

    msd = make_msd_folder(tmp_path / "msd", n=5)
    pairs = _pairs_from_msd(msd, tmp_path / "pairs")
    listed = [(img, lab) for _, img, lab in list_cases(pairs)]
    assert [p[1].name for p in listed][:2] == ["hippocampus_000_label.nii.gz", "hippocampus_001_seg.nii.gz"]
    expected = load_cases(msd)
    for source in (pairs, listed[::-1]):  # a folder, and an unsorted list of (image, label) paths
        cases = load_cases(source)
        assert [c.name for c in cases] == [c.name for c in expected]
        for a, b in zip(cases, expected):
            assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert fold_names(source, 1, k=5) == fold_names(msd, 1, k=5)
    assert load_cases(pairs, ["hippocampus_003"])[0].name == "hippocampus_003"


def test_pair_layout_errors(tmp_path):
    msd = make_msd_folder(tmp_path / "msd", n=2)
    pairs = _pairs_from_msd(msd, tmp_path / "pairs", label_suffix=lambda i: "_label")
    (pairs / "hippocampus_001_label.nii.gz").rename(pairs / "hippocampus_001_seg.nii.gz")
    (pairs / "hippocampus_000_seg.nii.gz").write_bytes((pairs / "hippocampus_000_label.nii.gz").read_bytes())
    with pytest.raises(HippoSNNError, match="2 labels for hippocampus_000"):
        list_cases(pairs)
    (pairs / "hippocampus_000_seg.nii.gz").unlink()
    (pairs / "hippocampus_001_seg.nii.gz").unlink()
    with pytest.raises(HippoSNNError, match="label missing for hippocampus_001.nii.gz"):
        list_cases(pairs)
    assert list_cases(pairs, require_labels=False)[1][2] is None
    (pairs / "hippocampus_001.nii.gz").unlink()
    (pairs / "other_label.nii.gz").write_bytes(b"x")
    with pytest.raises(HippoSNNError, match="label without an image"):
        list_cases(pairs)
    image = msd / "imagesTr" / "hippocampus_000.nii.gz"
    label = msd / "labelsTr" / "hippocampus_000.nii.gz"
    with pytest.raises(HippoSNNError, match="not found"):
        list_cases([(image, tmp_path / "nope.nii.gz")])
    with pytest.raises(HippoSNNError, match="unique"):
        list_cases([(image, label), (image, label)])
    with pytest.raises(HippoSNNError, match="empty"):
        list_cases([])


def test_convert_ann_on_pairs_with_progress_and_cancel(tmp_path):
    """pipeline.convert_ann reads a pair folder, reports progress per layer and can be cancelled."""
    from hipposnn.errors import Cancelled
    from hipposnn.pipeline import convert_ann
    from hipposnn.unet import UNet, UNetSpec
    from hipposnn.weights import save_model

    msd = make_msd_folder(tmp_path / "msd", n=3)
    pairs = _pairs_from_msd(msd, tmp_path / "pairs")
    torch.manual_seed(0)
    save_model(UNet(UNetSpec(channels=(4, 8, 8, 8))), tmp_path / "ann.pt", {"stage": "ann"})
    seen = []
    settings = dict(timesteps=3, slices=2, log=lambda m: None)
    snn = convert_ann(tmp_path / "ann.pt", pairs, tmp_path / "out", progress=lambda f, m: seen.append((f, m)) or True,
                      **settings)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert sum(m.startswith("balanced ") for _, m in seen) == len(snn.threshold_dict())
    assert (tmp_path / "out" / "converted.pt").is_file()
    with pytest.raises(Cancelled):
        convert_ann(tmp_path / "ann.pt", pairs, tmp_path / "stopped", progress=lambda f, m: f < 0.5, **settings)
    assert not (tmp_path / "stopped" / "converted.pt").exists()
