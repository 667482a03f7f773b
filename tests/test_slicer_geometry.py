"""Volume <-> array <-> RAS geometry of HippoSNNLib.geometry with real vtk matrices on real volumes."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from HippoSNNLib import geometry
from vtk.util import numpy_support


def _parent() -> vtk.vtkMatrix4x4:
    transform = vtk.vtkTransform()
    transform.Translate(12.5, -7.0, 3.25)
    transform.RotateWXYZ(17.0, 0.3, 0.8, 0.5)
    return transform.GetMatrix()


@pytest.mark.shared
@pytest.mark.parametrize(
    "relative",
    ["wholebrain/bert/norm.mgz", "wholebrain/colin27/ch2.nii.gz", "msd_hippocampus/imagesTr/hippocampus_001.nii.gz"],
)
def test_volume_array_ras_round_trip_on_real_volumes(shared_data, relative):
    from hipposnn.io import load_image

    image = load_image(shared_data / relative)
    # What Slicer holds for this file: KJI array and IJKToRAS = the voxel-to-RAS matrix.
    arrayKJI = np.ascontiguousarray(image.array.transpose(2, 1, 0))
    ijkToRAS = geometry.vtkMatrixFromArray(image.affine)
    parent = _parent()
    core = geometry.imageFromVolumeArrays(arrayKJI, ijkToRAS, parent, source=relative)
    assert core.array.shape == image.array.shape
    assert np.array_equal(core.array, image.array.astype(np.float32))
    # world affine = parent @ IJKToRAS, checked point by point with vtk's own multiplication
    rng = np.random.default_rng(0)
    for ijk in rng.integers(0, image.shape, size=(5, 3)):
        local = ijkToRAS.MultiplyPoint([*map(float, ijk), 1.0])
        world = parent.MultiplyPoint(local)
        assert np.allclose(core.affine @ np.r_[ijk, 1.0], world, atol=1e-9)
        # KJI order: the voxel (i, j, k) of vtkImageData is array[k, j, i]
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(*image.shape)
    imageData.GetPointData().SetScalars(numpy_support.numpy_to_vtk(arrayKJI.ravel(), deep=True))
    for i, j, k in rng.integers(0, image.shape, size=(5, 3)):
        assert imageData.GetScalarComponentAsDouble(int(i), int(j), int(k), 0) == pytest.approx(
            float(core.array[i, j, k])
        )
    # and back to what a volume node under the same parent needs: identical array, same IJKToRAS
    backKJI, backIJKToRAS = geometry.volumeArraysFromImage(core, parent)
    assert np.array_equal(backKJI, arrayKJI)
    assert np.allclose(geometry.arrayFromVTKMatrix(backIJKToRAS), image.affine, rtol=0, atol=1e-9)
    without = geometry.imageFromVolumeArrays(arrayKJI, ijkToRAS, None)
    assert np.array_equal(without.affine, image.affine)


def test_matrix_conversion_is_exact_and_kji_is_a_transpose():
    values = np.arange(16, dtype=np.float64).reshape(4, 4) / 7.0
    assert np.array_equal(geometry.arrayFromVTKMatrix(geometry.vtkMatrixFromArray(values)), values)
    array = np.arange(24).reshape(2, 3, 4)
    assert geometry.ijkFromKJI(array).shape == (4, 3, 2)
    assert geometry.ijkFromKJI(array)[3, 1, 0] == array[0, 1, 3]
    assert np.array_equal(geometry.kjiFromIJK(geometry.ijkFromKJI(array)), array)


def test_roi_box_to_markups_roi_covers_the_same_box():
    from hipposnn.roi import ROI_SHAPE, box_matrix

    rotation = geometry.arrayFromVTKMatrix(_parent())[:3, :3]
    for mirrored in (False, True):
        matrix = box_matrix((20.0, -15.0, -10.0), rotation, mirrored)
        objectToWorld, size = geometry.roiObjectToWorld(matrix, ROI_SHAPE)
        assert np.isclose(np.linalg.det(objectToWorld[:3, :3]), 1.0)
        assert np.allclose(size, ROI_SHAPE)
        corners_box = {
            tuple(np.round(matrix[:3, :3] @ (np.array(c) * (np.array(ROI_SHAPE) - 1)) + matrix[:3, 3], 6))
            for c in np.ndindex(2, 2, 2)
        }
        half = (np.array(ROI_SHAPE) - 1) / 2.0  # voxel-centre corners
        corners_roi = {
            tuple(np.round(objectToWorld[:3, :3] @ ((np.array(c) * 2 - 1) * half) + objectToWorld[:3, 3], 6))
            for c in np.ndindex(2, 2, 2)
        }
        assert corners_box == corners_roi
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    assert geometry.sideFromCentre((30, 0, 0), affine, (1, 1, 1)) == "right"
    assert geometry.sideFromCentre((-30, 0, 0), affine, (1, 1, 1)) == "left"
