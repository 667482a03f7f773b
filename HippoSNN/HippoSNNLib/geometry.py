"""Volume <-> array <-> RAS geometry between MRML nodes and the hipposnn core, in one place.

Slicer side: ``slicer.util.arrayFromVolume`` gives a numpy array indexed ``[k, j, i]`` (KJI), the
volume's ``GetIJKToRASMatrix`` maps (i, j, k) to the volume's *local* RAS, and a linear parent
transform maps local RAS to world RAS (``GetMatrixTransformToWorld``). Core side
(:class:`hipposnn.io.Image`): an array indexed ``[i, j, k]`` plus one 4x4 voxel-to-world-RAS affine.

So ``Image.array = arrayKJI.transpose(2, 1, 0)`` and ``Image.affine = parentToWorld @ IJKToRAS``,
and back: ``IJKToRAS = inverse(parentToWorld) @ affine``. Nothing here assumes an axis order or a
direction; it only multiplies the matrices. This module needs numpy and vtk but not Slicer, so pytest
checks it with real ``vtkMatrix4x4`` objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np
import vtk

if TYPE_CHECKING:  # the core imports nibabel/SimpleITK: only load it when a conversion needs it
    from hipposnn.io import Image


def arrayFromVTKMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A float64 (4, 4) numpy copy of a vtkMatrix4x4."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def vtkMatrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A new vtkMatrix4x4 holding a (4, 4) array."""
    values = np.asarray(array, dtype=np.float64)
    if values.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {values.shape}")
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(values[r, c]))
    return matrix


def ijkFromKJI(arrayKJI: np.ndarray) -> np.ndarray:
    """Slicer's [k, j, i] volume array as the core's [i, j, k] array (a view, no copy)."""
    array = np.asarray(arrayKJI)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D scalar volume array, got shape {array.shape}")
    return array.transpose(2, 1, 0)


def kjiFromIJK(arrayIJK: np.ndarray) -> np.ndarray:
    """The core's [i, j, k] array in Slicer's [k, j, i] order, C-contiguous (ready for updateVolumeFromArray)."""
    array = np.asarray(arrayIJK)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def worldAffine(ijkToRAS: vtk.vtkMatrix4x4, parentToWorld: Optional[vtk.vtkMatrix4x4] = None) -> np.ndarray:
    """Voxel (i, j, k) -> world RAS affine of a volume, including its linear parent transform."""
    affine = arrayFromVTKMatrix(ijkToRAS)
    if parentToWorld is not None:
        affine = arrayFromVTKMatrix(parentToWorld) @ affine
    return affine


def localIJKToRAS(affine: np.ndarray, parentToWorld: Optional[vtk.vtkMatrix4x4] = None) -> vtk.vtkMatrix4x4:
    """The IJKToRAS matrix a volume under ``parentToWorld`` needs so that its world affine is ``affine``."""
    local = np.asarray(affine, dtype=np.float64)
    if parentToWorld is not None:
        local = np.linalg.inv(arrayFromVTKMatrix(parentToWorld)) @ local
    return vtkMatrixFromArray(local)


def imageFromVolumeArrays(
    arrayKJI: np.ndarray,
    ijkToRAS: vtk.vtkMatrix4x4,
    parentToWorld: Optional[vtk.vtkMatrix4x4] = None,
    source: str = "",
) -> Image:
    """A core :class:`~hipposnn.io.Image` (float32 [i, j, k], world affine) from a volume's array and matrices."""
    from hipposnn.io import Image

    array = np.ascontiguousarray(ijkFromKJI(arrayKJI), dtype=np.float32)
    return Image(array=array, affine=worldAffine(ijkToRAS, parentToWorld), source=source)


def volumeArraysFromImage(
    image: Image, parentToWorld: Optional[vtk.vtkMatrix4x4] = None
) -> Tuple[np.ndarray, vtk.vtkMatrix4x4]:
    """(KJI array, local IJKToRAS) that put ``image`` into a volume node under ``parentToWorld``."""
    return kjiFromIJK(image.array), localIJKToRAS(image.affine, parentToWorld)


def rasToIJK(affine: np.ndarray, pointRAS: Sequence[float]) -> np.ndarray:
    """Continuous voxel index (i, j, k) of a RAS point."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return inverse[:3, :3] @ np.asarray(pointRAS, dtype=np.float64) + inverse[:3, 3]


# ---------------------------------------------------------------------------------------------------
# ROI boxes <-> markups ROI
# ---------------------------------------------------------------------------------------------------


def roiObjectToWorld(boxMatrix: np.ndarray, shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(objectToWorld 4x4, size mm) of a markups ROI covering an ROI box.

    ``boxMatrix`` maps ROI voxels to RAS (possibly mirrored in x). A markups ROI needs a proper
    rotation (det +1) and its centre: the mirrored axis is flipped back, which describes the same box.
    The size is the extent between the outer voxel faces (``shape`` times the voxel size).
    """
    matrix = np.asarray(boxMatrix, dtype=np.float64)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    axes = matrix[:3, :3] / spacing
    if np.linalg.det(axes) < 0:
        axes = axes @ np.diag([-1.0, 1.0, 1.0])
    centre = matrix[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0) + matrix[:3, 3]
    objectToWorld = np.eye(4)
    objectToWorld[:3, :3] = axes
    objectToWorld[:3, 3] = centre
    return objectToWorld, spacing * np.asarray(shape, dtype=np.float64)


def sideFromCentre(centreRAS: Sequence[float], imageAffine: np.ndarray, imageShape: Sequence[int]) -> str:
    """'right' or 'left': on which side of the image's mid-sagittal plane (image centre x) a point lies.

    Used only when the user gives one ROI but asks for "both" sides: a user ROI covers one side.
    """
    affine = np.asarray(imageAffine, dtype=np.float64)
    centre = affine[:3, :3] @ ((np.asarray(imageShape, dtype=np.float64) - 1.0) / 2.0) + affine[:3, 3]
    return "right" if float(centreRAS[0]) >= float(centre[0]) else "left"


def roiSliceAffine(boxMatrix: np.ndarray, sliceIndex: int) -> np.ndarray:
    """Voxel -> RAS affine of a one-voxel-thick image holding ROI slice ``sliceIndex`` (axis 0) as (1, H, W)."""
    shift = np.eye(4)
    shift[0, 3] = float(sliceIndex)
    return np.asarray(boxMatrix, dtype=np.float64) @ shift
