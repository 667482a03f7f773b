"""Build the reduced ICBM 2009a template shipped in ``hipposnn/resources`` for automatic ROI placement.

Why: the full 1 mm template (197x233x189) is larger than needed; registration runs at 2-4 mm, so a
2 mm copy keeps the package small (< 1 MB) while losing nothing the registration uses. The licence of
the ICBM 2009a template permits redistribution with its copyright notice (resources/TEMPLATE_NOTICE.txt).

Usage: python tools/make_template.py [path/to/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "templates" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
OUTPUT = ROOT / "HippoSNN" / "hipposnn" / "resources" / "icbm2009a_t1_2mm.nii.gz"
FACTOR = 2


def reduce(source: Path, output: Path, factor: int = FACTOR) -> None:
    """Average ``factor``^3 blocks (anti-aliased downsampling) and fix the affine to the block centres."""
    img = nib.load(str(source))
    data = np.asarray(img.dataobj, dtype=np.float64)
    shape = [n // factor * factor for n in data.shape]
    data = data[: shape[0], : shape[1], : shape[2]]
    blocks = data.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor)
    small = blocks.mean(axis=(1, 3, 5))
    small = np.clip(np.round(small / small.max() * 255.0), 0, 255).astype(np.uint8)
    affine = img.affine.copy()
    # New voxel 0 is the centre of old voxels 0..factor-1.
    affine[:3, 3] = img.affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + img.affine[:3, 3]
    affine[:3, :3] = img.affine[:3, :3] * factor
    out = nib.Nifti1Image(small, affine)
    out.set_qform(affine, code=4)  # MNI152 space
    out.set_sform(affine, code=4)
    out.header["descrip"] = b"ICBM 2009a sym T1, 2 mm, (C) MNI/McGill"
    output.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(output))
    print(f"wrote {output} {small.shape} {output.stat().st_size} bytes")


if __name__ == "__main__":
    reduce(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE, OUTPUT)
