"""Surface meshes of the segmented hippocampi, for 3D viewers and Slicer.

Coordinates. The label map lives in the input's voxel grid with a voxel-to-RAS affine. Meshes are
written in RAS millimetres for ``.vtk`` (with ``SPACE=RAS`` in the header, the comment Slicer 5 reads),
``.vtp`` and ``.ply``, and in LPS for ``.stl`` and ``.obj``: those formats carry no coordinate-system
tag and Slicer 5 assumes LPS when it reads them, as do ITK-based tools.

Each mesh is smoothed (windowed-sinc, which keeps the volume, unlike Laplacian smoothing), and its
enclosed volume (vtkMassProperties) is compared with the voxel count: a difference above
``VOLUME_TOLERANCE`` means a broken surface and is reported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from .atomicio import atomic_write
from .errors import HippoSNNError

MESH_SUFFIXES = (".vtk", ".vtp", ".ply", ".stl", ".obj")
LPS_SUFFIXES = (".stl", ".obj")
#: Relative difference between mesh and voxel volume above which a surface counts as broken (a QC warning).
VOLUME_TOLERANCE = 0.15
_SMOOTH_ITERATIONS = 20
_SMOOTH_PASSBAND = 0.1


def label_surface(labels: np.ndarray, affine: np.ndarray, value: int, lps: bool = False):
    """Smoothed triangle surface (vtkPolyData) of ``labels == value``, in RAS (or LPS) mm.

    The mask is padded by one voxel so that a label touching the image edge still gives a closed
    surface; the voxel-to-world affine is applied to the points afterwards, so any orientation and
    anisotropic spacing are handled exactly.
    """
    import vtk
    from vtk.util import numpy_support

    mask = np.pad((np.asarray(labels) == value).astype(np.uint8), 1)
    if not mask.any():
        raise ValueError(f"no voxel has label {value}")
    image = vtk.vtkImageData()
    image.SetDimensions(*mask.shape)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(mask.transpose(2, 1, 0)).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    contour = vtk.vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 1)
    contour.ComputeNormalsOff()
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(contour.GetOutputPort())
    smooth.SetNumberOfIterations(_SMOOTH_ITERATIONS)
    smooth.SetPassBand(_SMOOTH_PASSBAND)
    smooth.BoundarySmoothingOff()
    smooth.FeatureEdgeSmoothingOff()
    smooth.NonManifoldSmoothingOn()
    smooth.NormalizeCoordinatesOn()
    smooth.Update()
    poly = smooth.GetOutput()
    points = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64) - 1.0  # undo the pad
    matrix = np.asarray(affine, dtype=np.float64)
    world = points @ matrix[:3, :3].T + matrix[:3, 3]
    if lps:
        world[:, :2] *= -1.0
    poly.GetPoints().SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(world), deep=True))
    # A mirroring affine (det < 0) turns triangles inside out; auto-orientation makes them face outwards again.
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputData(poly)
    normals.ConsistencyOn()
    normals.SplittingOff()
    normals.AutoOrientNormalsOn()
    normals.Update()
    return normals.GetOutput()


def mesh_volume(poly) -> float:
    """Enclosed volume in mm^3 of a closed triangle surface."""
    import vtk

    mass = vtk.vtkMassProperties()
    mass.SetInputData(poly)
    mass.Update()
    return float(mass.GetVolume())


def check_mesh_suffix(path: Union[str, os.PathLike]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise HippoSNNError(f"Cannot write mesh '{Path(path).name}': use one of {', '.join(MESH_SUFFIXES)}")
    return suffix


def write_mesh(poly, path: Union[str, os.PathLike], atomic: bool = True) -> Path:
    """Write atomically (temporary name in the same folder, then rename); format from the extension.

    ``atomic=False`` writes ``path`` directly (the caller already writes to a temporary name).
    """
    import vtk

    out = Path(path)
    suffix = check_mesh_suffix(out)
    if suffix == ".vtk":
        writer = vtk.vtkPolyDataWriter()
        writer.SetHeader("SPACE=RAS")
        writer.SetFileTypeToBinary()
    elif suffix == ".vtp":
        writer = vtk.vtkXMLPolyDataWriter()
    elif suffix == ".ply":
        writer = vtk.vtkPLYWriter()
    elif suffix == ".stl":
        writer = vtk.vtkSTLWriter()
        writer.SetFileTypeToBinary()
    else:
        writer = vtk.vtkOBJWriter()
    writer.SetInputData(poly)

    def write(name: str) -> None:
        writer.SetFileName(name)
        if not writer.Write():
            raise HippoSNNError(f"Cannot write mesh {out}")

    if atomic:
        atomic_write(out, write, mkdir=False)
    else:
        write(str(out))
    return out


def surfaces(
    labels: np.ndarray, affine: np.ndarray, values: Dict[str, int], suffix: str = ".vtk"
) -> Dict[str, Tuple[object, Dict[str, float]]]:
    """Surface and volume check per side present in ``labels``: {side: (polydata, check)}."""
    lps = suffix.lower() in LPS_SUFFIXES
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    out: Dict[str, Tuple[object, Dict[str, float]]] = {}
    for side, value in values.items():
        count = int((labels == value).sum())
        if count == 0:
            continue
        poly = label_surface(labels, affine, value, lps=lps)
        voxels = count * voxel_mm3
        volume = mesh_volume(poly)
        out[side] = (
            poly,
            {
                "mesh_volume_mm3": volume,
                "voxel_volume_mm3": voxels,
                "relative_difference": abs(volume - voxels) / voxels,
                "points": float(poly.GetNumberOfPoints()),
            },
        )
    return out
