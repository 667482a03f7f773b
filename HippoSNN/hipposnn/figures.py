"""PNG quality-check overlay: three orthogonal views through each segmented hippocampus.

Why a picture: a volume number cannot show a box on the wrong structure; one glance at the overlay
can. The image and labels are reoriented to the closest RAS voxel order first (no resampling), so
the views look the same whatever the scan's storage order: coronal and axial views in radiological
convention (the subject's right on the panel's left, as in most clinical viewers), sagittal with
anterior to the right. matplotlib runs on the Agg backend: no display needed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, Union

import numpy as np

from .atomicio import atomic_write_bytes

_COLOURS = {1: (1.0, 0.25, 0.2), 2: (0.2, 0.6, 1.0)}
_HALF_FOV_MM = 40.0


def _to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    return nib.orientations.apply_orientation(np.asarray(volume), ornt)


def overlay_png(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    path: Union[str, os.PathLike[str]],
    values: Dict[str, int] | None = None,
    title: str = "",
    atomic: bool = True,
) -> Path:
    """Write a PNG with one row per side present: sagittal, coronal and axial slices through its centroid.

    Written atomically, or directly to ``path`` with ``atomic=False`` (the caller uses a temporary name).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    values = values or {"right": 1, "left": 2}
    img = _to_ras(image, affine).astype(np.float32)
    lab = _to_ras(labels, affine)
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[ornt[:, 0].astype(int).argsort()]
    lo, hi = np.percentile(img[img > 0] if (img > 0).any() else img, [1, 99.5])
    rows = [(side, v) for side, v in values.items() if (lab == v).any()]
    if not rows:
        rows = [("none", 0)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows)), squeeze=False)
    for r, (side, value) in enumerate(rows):
        centre = np.argwhere(lab == value).mean(axis=0) if value else np.asarray(lab.shape) / 2.0
        c = np.round(centre).astype(int)
        views = [
            ("sagittal", img[c[0], :, :], lab[c[0], :, :], (zooms[1], zooms[2]), (c[1], c[2])),
            ("coronal", img[:, c[1], :], lab[:, c[1], :], (zooms[0], zooms[2]), (c[0], c[2])),
            ("axial", img[:, :, c[2]], lab[:, :, c[2]], (zooms[0], zooms[1]), (c[0], c[1])),
        ]
        for col, (name, sl, sl_lab, zoom, centre2d) in enumerate(views):
            ax = axes[r][col]
            half = [int(_HALF_FOV_MM / z) for z in zoom]
            a0 = max(centre2d[0] - half[0], 0)
            b0 = max(centre2d[1] - half[1], 0)
            sl = sl[a0 : centre2d[0] + half[0], b0 : centre2d[1] + half[1]]
            sl_lab = sl_lab[a0 : centre2d[0] + half[0], b0 : centre2d[1] + half[1]]
            extent = (0, sl.shape[0] * zoom[0], 0, sl.shape[1] * zoom[1])
            ax.imshow(sl.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent, interpolation="nearest")
            rgba = np.zeros(sl_lab.T.shape + (4,), dtype=np.float32)
            for v, colour in _COLOURS.items():
                rgba[sl_lab.T == v] = (*colour, 0.45)
            ax.imshow(rgba, origin="lower", extent=extent, interpolation="nearest")
            if name != "sagittal":
                ax.invert_xaxis()  # radiological display: the subject's right on the left of the panel
            ax.set_title(f"{side} - {name}", fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    out = Path(path)
    if atomic:
        atomic_write_bytes(out, buffer.getvalue())
    else:
        out.write_bytes(buffer.getvalue())
    return out
