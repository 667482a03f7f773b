"""Build the demo T1 shipped in ``hipposnn/resources`` for ``hipposnn segment --demo``.

Why: the demo must run with no download, and the ICBM 2009a template is the one T1 whose licence
allows redistribution (with its notice, resources/TEMPLATE_NOTICE.txt). It is kept at 1 mm, cropped to
the brain's bounding box plus a margin and stored as uint8 so that the file stays below 2 MB.

Usage: python tools/make_demo_t1.py [path/to/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "templates" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
OUTPUT = ROOT / "HippoSNN" / "hipposnn" / "resources" / "demo_t1_icbm2009a_1mm.nii.gz"
MARGIN = 4


def make(source: Path, output: Path) -> None:
    """Crop to the nonzero bounding box (+ margin), scale to 0..255 uint8 and fix the affine's origin."""
    img = nib.load(str(source))
    data = np.asarray(img.dataobj, dtype=np.float64)
    nz = np.argwhere(data > 0.02 * data.max())
    lo = np.maximum(nz.min(axis=0) - MARGIN, 0)
    hi = np.minimum(nz.max(axis=0) + MARGIN + 1, data.shape)
    crop = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    small = np.clip(np.round(crop / crop.max() * 255.0), 0, 255).astype(np.uint8)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    out = nib.Nifti1Image(small, affine)
    out.set_qform(affine, code=4)
    out.set_sform(affine, code=4)
    out.header["descrip"] = b"ICBM 2009a sym T1, 1 mm, (C) MNI/McGill"
    nib.save(out, str(output))
    print(f"wrote {output} {small.shape} {output.stat().st_size} bytes")


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE, OUTPUT)
