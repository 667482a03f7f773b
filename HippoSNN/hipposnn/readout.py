"""The readout step: a Gaussian over the network's probability map that keeps the mask's volume.

Why: a spiking U-Net run for T = 8 steps reads out a sum of eight spike-driven steps, so neighbouring voxels
carry coarse, noisy probabilities and the mask's surface is ragged. A small Gaussian (sigma in voxels of the
1 mm ROI grid) smooths the surface, but thresholded where the raw map was it also shrinks a thin structure
like the hippocampus (on whole-brain scans: volume ratio 0.77 -> 0.72, docs/models.md). So the smoothed
map is cut where it keeps the raw mask's voxel count, which makes the step a change of shape only: the
volume a user's threshold gives stays the raw map's. Measured on the cross-validated default's path and
the whole-brain sets (docs/models.md, "Smoothing the readout at constant volume").

The map returned is the smoothed map shifted so that the caller's threshold cuts it at that level; values
are clipped to 0..1, so it stays a map that thresholds, pastes and saves like a probability.

:func:`largest_component` is the readout's last step: the thresholded mask keeps its largest piece.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .errors import HippoSNNError

#: sigma (voxels of the 1 mm ROI grid) of the pipeline's readout smoothing for spiking models; 0 turns it off
READOUT_SIGMA = 1.0
#: the largest sigma accepted: beyond ~3 voxels the Gaussian is wider than the hippocampus' body
MAX_SIGMA = 3.0


def readout_sigma(spiking: bool, sigma: Optional[float] = None) -> float:
    """The sigma a run uses: ``sigma`` if given, else :data:`READOUT_SIGMA` for a spiking model and 0 for an ANN.

    Why only spiking models by default: an ANN's map is already smooth, and on the cross-validated crops the
    step gains it nothing measurable (docs/models.md); the SNN's T-step readout is where it pays.
    """
    if sigma is None:
        return READOUT_SIGMA if spiking else 0.0
    return check_sigma(sigma)


def check_sigma(sigma: object) -> float:
    """``sigma`` as a float in 0..:data:`MAX_SIGMA` voxels, else a one-line :class:`HippoSNNError`."""
    try:
        value = float(sigma)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HippoSNNError(f"readout smoothing must be a number of voxels, got {sigma!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= MAX_SIGMA):
        raise HippoSNNError(f"readout smoothing must be between 0 and {MAX_SIGMA:g} voxels, got {sigma!r}")
    return value


def gaussian(prob: np.ndarray, sigma: float) -> np.ndarray:
    """``prob`` after a Gaussian of ``sigma`` voxels (SimpleITK's DiscreteGaussian; unchanged for 0)."""
    if sigma <= 0:
        return prob
    import SimpleITK as sitk  # here, not at import: the Slicer module checks settings with this module first

    image = sitk.GetImageFromArray(np.asarray(prob, dtype=np.float32))
    return sitk.GetArrayFromImage(sitk.DiscreteGaussian(image, float(sigma) ** 2, 32, 0.01, False))


def smooth_readout(prob: np.ndarray, sigma: float = READOUT_SIGMA, threshold: float = 0.5) -> np.ndarray:
    """``prob`` smoothed by ``sigma`` voxels and shifted so that ``> threshold`` keeps the raw mask's volume.

    The raw mask (``prob > threshold``) has n voxels; the smoothed map's n highest voxels become the mask:
    the map is shifted so that ``threshold`` falls halfway between its n-th and (n+1)-th highest values.
    An empty raw mask, or ``sigma`` 0, returns ``prob`` unchanged.
    """
    prob = np.asarray(prob, dtype=np.float32)
    n = int(np.count_nonzero(prob > threshold))
    if sigma <= 0 or n == 0:
        return prob
    return keep_volume(gaussian(prob, sigma), n, threshold)


def keep_volume(smoothed: np.ndarray, n: int, threshold: float = 0.5) -> np.ndarray:
    """``smoothed`` shifted so that ``> threshold`` keeps its ``n`` (>= 1) highest voxels: :func:`smooth_readout`'s
    cut, for a caller that already holds the smoothed map."""
    smoothed = np.asarray(smoothed, dtype=np.float32)
    flat = smoothed.ravel()
    if n >= flat.size:
        return np.clip(smoothed - flat.min() + threshold + 1e-3, 0.0, 1.0).astype(np.float32)
    top = np.partition(flat, flat.size - n - 1)[flat.size - n - 1:]  # the n + 1 highest, the (n+1)-th first
    below, nth = float(top[0]), float(np.min(top[1:]))
    cut = 0.5 * (below + nth)
    return np.clip(smoothed + (threshold - cut), 0.0, 1.0).astype(np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component: a hippocampus is one piece, stray blobs are errors."""
    if not mask.any():
        return mask
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))
