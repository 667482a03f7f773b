"""The readout step (hipposnn.readout): a Gaussian over the network's map that keeps the mask's volume."""

from __future__ import annotations

import numpy as np
import pytest
from hipposnn.errors import HippoSNNError
from hipposnn.metrics import dice
from hipposnn.readout import READOUT_SIGMA, check_sigma, gaussian, readout_sigma, smooth_readout


def _ragged_ellipsoid(seed: int = 0):
    """A near-binary map of a thin ellipsoid (the truth) whose surface voxels flip at random, as a T = 8
    readout's do, plus scattered single-voxel false positives."""
    rng = np.random.default_rng(seed)
    grid = np.indices((24, 40, 24)).transpose(1, 2, 3, 0).astype(np.float32)
    r = np.sqrt((((grid - [12, 20, 12]) / [5.0, 14.0, 4.0]) ** 2).sum(-1))
    truth = r <= 1.0
    prob = np.where(truth, 0.9, 0.1).astype(np.float32)
    shell = (r > 0.8) & (r < 1.2)
    flip = shell & (rng.random(truth.shape) < 0.35)
    prob[flip] = 1.0 - prob[flip]
    speckle = (rng.random(truth.shape) < 0.003) & ~shell
    prob[speckle] = 0.9
    return prob, truth


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.7])
def test_the_smoothed_mask_keeps_the_raw_masks_volume_and_is_closer_to_the_truth(threshold):
    prob, truth = _ragged_ellipsoid()
    out = smooth_readout(prob, 1.0, threshold)
    raw_mask, smooth_mask = prob > threshold, out > threshold
    assert smooth_mask.sum() == raw_mask.sum()  # the step changes shape, not volume
    assert dice(smooth_mask, truth) > dice(raw_mask, truth) + 0.02  # a ragged surface and speckle smoothed away
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    # a plain Gaussian cut at the same threshold shrinks the thin shape: what the volume cut is there for
    assert (gaussian(prob, 1.0) > 0.5).sum() < raw_mask.sum()


def test_nothing_to_keep_or_no_sigma_returns_the_map_itself():
    prob, _ = _ragged_ellipsoid()
    assert smooth_readout(prob, 0.0) is prob
    empty = np.full((8, 8, 8), 0.2, np.float32)
    assert smooth_readout(empty, 1.0) is empty  # an empty mask stays empty (QC reports it)
    full = np.full((8, 8, 8), 0.8, np.float32)
    assert (smooth_readout(full, 1.0) > 0.5).all()


def test_the_default_sigma_is_for_spiking_models_and_bad_values_are_refused():
    assert readout_sigma(True) == READOUT_SIGMA == 1.0 and readout_sigma(False) == 0.0
    assert readout_sigma(False, 0.7) == 0.7 and readout_sigma(True, 0) == 0.0
    for bad in (-1, 3.5, float("nan"), "wide", None):
        with pytest.raises(HippoSNNError, match="readout smoothing"):
            check_sigma(bad)


def test_largest_component_keeps_the_biggest_piece_only() -> None:
    """The pipeline's last readout step: stray blobs go, the hippocampus (the largest 26-connected piece) stays."""
    from hipposnn.readout import largest_component

    mask = np.zeros((8, 12, 12), bool)
    mask[1:4, 1:5, 1:5] = True  # 48 voxels
    mask[6, 9, 9] = True  # a stray voxel
    mask[4, 5, 5] = True  # touches the big piece at a corner only: 26-connected, so it belongs to it
    kept = largest_component(mask)
    assert kept.sum() == 49 and kept[4, 5, 5] and not kept[6, 9, 9]
    empty = np.zeros((3, 3, 3), bool)
    assert not largest_component(empty).any()
