"""Site augmentation: make the MSD training crops look like scans from other scanners and pipelines.

Why: the network has only seen one site's tight 1 mm crops. On whole-head IXI scans (2 mm, 3 T) and on
LPBA40 (skull-stripped, cerebellum removed, rescaled to 0..1) it found too little hippocampus even with
the box in the right place (docs/segmentation.md). Each transform below imitates one such difference and
is applied to the raw crop *before* the per-volume normalisation, exactly where the difference arises in
a real scan:

* bias field: a smooth multiplicative field (receive-coil inhomogeneity, no N4 at the site);
* gamma: a monotone contrast change between grey and white matter (sequence, field strength);
* resolution: block-average to 1.5-3 mm along all axes, or to 1.5-``thick_mm`` mm along one axis (thick
  slices; 3 mm unless raised), and interpolate back to 1 mm, as a coarse scan looks after the ROI resampling;
* noise: Gaussian noise relative to the robust intensity range;
* masking: zero everything beyond a random plane that stays clear of the hippocampus (brain extraction,
  cerebellum removal), which inference treats as "no content" like the training padding.

The geometry (in-plane rotation, scale, shift) stays in :func:`hipposnn.training.augment_batch`. All
draws come from one seeded ``numpy.random.Generator``, so an epoch's augmented set is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SiteAugmentation:
    """Probabilities and ranges of each transform (defaults measured to keep MSD validation Dice)."""

    p_bias: float = 0.5
    bias_strength: float = 0.3  # max |log gain| of the field
    p_gamma: float = 0.5
    log_gamma: float = 0.4  # gamma in exp(+-0.4) = 0.67..1.49
    p_resolution: float = 0.4
    spacing_mm: Tuple[float, float] = (1.5, 3.0)
    # Thickest one-axis voxel (thick-slice scans); None: the top of spacing_mm, the draws of the models trained
    # before this field existed. tools/eval_stress.py measured 3-5 mm slices costing 0.04-0.37 Dice without it.
    thick_mm: Optional[float] = None
    p_noise: float = 0.3
    noise_std: float = 0.05  # fraction of the 1-99 % intensity range
    p_mask: float = 0.25
    mask_margin_vox: float = 2.0  # the cut plane stays this far from every label voxel


def _smooth_field(shape: Sequence[int], rng: np.random.Generator, strength: float) -> np.ndarray:
    coarse = torch.from_numpy(rng.uniform(-strength, strength, size=(1, 1, 3, 3, 3)).astype(np.float32))
    field = F.interpolate(coarse, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True)
    return np.exp(field[0, 0].numpy())


def _resample_coarse(volume: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Average into voxels of ``spacing`` mm (from 1 mm) and interpolate back to the original grid."""
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    small = [max(2, int(round(n / s))) for n, s in zip(volume.shape, spacing)]
    x = F.interpolate(x, size=small, mode="area")
    x = F.interpolate(x, size=tuple(volume.shape), mode="trilinear", align_corners=False)
    return x[0, 0].numpy()


def _mask_plane(volume: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, margin: float) -> np.ndarray:
    """Zero the voxels beyond a random plane that keeps ``margin`` voxels from the label (or the centre)."""
    grid = np.indices(volume.shape, dtype=np.float32).reshape(3, -1).T
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal) + 1e-12
    distance = grid @ normal
    if label is not None and label.any():
        inner = float((np.argwhere(label > 0).astype(np.float32) @ normal).max()) + margin
    else:
        inner = float(((np.asarray(volume.shape) - 1) / 2.0) @ normal) + margin
    far = float(distance.max())
    if far <= inner + 1.0:
        return volume
    cut = rng.uniform(inner, far)
    out = volume.copy()
    out.reshape(-1)[distance > cut] = 0.0
    return out


def augment_volume(
    volume: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, cfg: SiteAugmentation = SiteAugmentation()
) -> np.ndarray:
    """One random site-like version of a raw crop (float32, same shape; the label is unchanged)."""
    x = np.asarray(volume, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(x, [1.0, 99.0]))
    if not hi > lo:
        return x.copy()
    x = np.clip((x - lo) / (hi - lo), 0.0, None)  # robust [0, ~1]; scale is undone by normalisation anyway
    if rng.random() < cfg.p_bias:
        x = x * _smooth_field(x.shape, rng, cfg.bias_strength)
    if rng.random() < cfg.p_gamma:
        x = np.power(x, float(np.exp(rng.uniform(-cfg.log_gamma, cfg.log_gamma))))
    if rng.random() < cfg.p_resolution:
        coarse = float(rng.uniform(*cfg.spacing_mm))
        if rng.random() < 0.5:
            spacing = [coarse, coarse, coarse]
        else:
            # The same draw stretched onto [lo, thick_mm]: with thick_mm at the top of the range nothing changes.
            lo, hi = cfg.spacing_mm
            top = hi if cfg.thick_mm is None else cfg.thick_mm
            spacing = [1.0, 1.0, 1.0]
            stretched = coarse if top == hi or not hi > lo else lo + (coarse - lo) * (top - lo) / (hi - lo)
            spacing[int(rng.integers(3))] = stretched
        x = _resample_coarse(x, spacing)
    if rng.random() < cfg.p_noise:
        x = x + rng.normal(0.0, rng.uniform(0.0, cfg.noise_std), size=x.shape).astype(np.float32)
        x = np.clip(x, 0.0, None)
    # Keep a strictly positive floor so that only the masking below makes exact zeros ("no content").
    x = np.maximum(x, 1e-3).astype(np.float32)
    if rng.random() < cfg.p_mask:
        x = _mask_plane(x, label, rng, cfg.mask_margin_vox)
    return x.astype(np.float32)


def augment_cases(cases: Sequence, seed: int, cfg: SiteAugmentation = SiteAugmentation()) -> List:
    """Site-augmented copies of :class:`hipposnn.data.Case` objects (images replaced, labels kept)."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    return [replace(case, image=augment_volume(case.image, case.label, rng, cfg)) for case in cases]
