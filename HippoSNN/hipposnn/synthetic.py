"""Synthetic MSD-layout data: bright ellipsoids ("hippocampi") in noisy crops, for tests and smoke runs.

Each case has its own intensity scale (the real crops' maxima span four orders of magnitude) and a
label split into an anterior (2) and a posterior (1) part, like the MSD Task04 labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def write_synthetic_msd(root: Path, n: int = 6, seed: int = 0, shape: Sequence[int] = (30, 50, 40)) -> Path:
    """Write ``n`` deterministic cases into ``root/imagesTr`` and ``root/labelsTr``; returns ``root``."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    for i in range(n):
        centre = np.array(shape) / 2 + rng.uniform(-3, 3, 3)
        radii = np.array([6.0, 14.0, 8.0]) * rng.uniform(0.8, 1.2, 3)
        inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        image = rng.normal(40, 8, shape).astype(np.float32) * rng.uniform(0.5, 50)
        image[inside] *= 2.5
        label = inside.astype(np.uint8) * (1 + (grid[..., 1] > centre[1]).astype(np.uint8))
        affine = np.eye(4)
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"hippocampus_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"hippocampus_{i:03d}.nii.gz"))
    return root
