"""Reading and writing 3D images in the one geometry convention of the core.

Everywhere in ``hipposnn`` an image is a numpy array indexed ``(i, j, k)`` plus a 4x4 affine that maps
voxel indices to RAS millimetres (the nibabel convention). ITK, SimpleITK, NRRD and DICOM use LPS
physical coordinates and (k, j, i) array order instead; :func:`ras_affine_to_itk` and
:func:`itk_to_ras_affine` are the only places where that conversion happens, so that a sign error can
only live in one (tested) spot.

:func:`load_image` is strict on purpose: a wrong input (a label map picked instead of the T1, a 4D
series, a corrupted download) would otherwise produce a silently meaningless segmentation, so every
such case stops with a :class:`~hipposnn.errors.HippoSNNError` that says what is wrong in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .atomicio import atomic_write
from .errors import HippoSNNError

PathLike = Union[str, "os.PathLike[str]"]

#: Flip between RAS and LPS (x and y change sign, z stays).
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: Formats :func:`save_image` can write atomically (single-file formats only).
WRITE_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".nrrd", ".mha")

MIN_SPACING_MM = 0.1
#: Smallest image accepted, along every axis: the smallest MSD training crop is 31 x 40 x 24 voxels, and
#: a smaller scan cannot hold a hippocampus (registration's image pyramid also needs a few voxels).
MIN_VOXELS_PER_AXIS = 16
MAX_SPACING_MM = 10.0
#: A label map has integer values, few distinct values and large uniform regions; an MRI does not.
#: Measured on the reference data: among non-background neighbour pairs, 78-89 % are equal in label
#: maps (aseg, aparc+aseg, AAL, MSD labels) and 3-11 % in T1 images (uint8 and int16 included).
_LABEL_MAX_DISTINCT = 512
_LABEL_NEIGHBOUR_EQUAL = 0.5
_SAMPLE_VOXELS = 2_000_000


@dataclass
class Image:
    """A 3D scalar image: ``array`` indexed (i, j, k) and its voxel-to-RAS ``affine``.

    ``source`` records where it came from, for messages and provenance in reports.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        norms = np.linalg.norm(np.asarray(self.affine, dtype=np.float64)[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Number of voxels along i, j, k."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Geometry conversion (the single RAS <-> LPS place)
# --------------------------------------------------------------------------------------------------


def ras_affine_to_itk(affine: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]:
    """Convert a voxel-to-RAS affine into ITK ``(origin, spacing, direction)`` in LPS.

    ``direction`` is the row-major flattened 3x3 matrix whose columns are the unit axis directions,
    as SimpleITK's ``SetDirection`` expects. Shear cannot be represented by ITK and is rejected.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError("affine must be a finite 4x4 matrix")
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero-length axis")
    direction = _RAS_TO_LPS @ (linear / spacing)
    origin = _RAS_TO_LPS @ affine[:3, 3]
    return (
        tuple(float(v) for v in origin),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.ravel()),
    )


def itk_to_ras_affine(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """Convert ITK ``(origin, spacing, direction)`` (LPS) into a 4x4 voxel-to-RAS affine."""
    dir_lps = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ dir_lps @ np.diag(np.asarray(spacing, dtype=np.float64))
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(origin, dtype=np.float64)
    return affine


def swap_ras_lps(matrix_or_point: np.ndarray) -> np.ndarray:
    """Re-express a 4x4 world-to-world matrix or a 3-vector point between RAS and LPS (self-inverse)."""
    value = np.asarray(matrix_or_point, dtype=np.float64)
    if value.shape == (3,):
        return _RAS_TO_LPS @ value
    if value.shape == (4, 4):
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        return flip @ value @ flip
    raise ValueError("expected a 3-vector or a 4x4 matrix")


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """Wrap an (i, j, k) array and RAS affine as a SimpleITK image (which stores (k, j, i))."""
    origin, spacing, direction = ras_affine_to_itk(affine)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def from_sitk(img: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(array (i, j, k), voxel-to-RAS affine)`` of a 3D SimpleITK image."""
    array = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    affine = itk_to_ras_affine(img.GetOrigin(), img.GetSpacing(), img.GetDirection())
    return array, affine


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in NIBABEL_SUFFIXES + SITK_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _read_nibabel(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    import nibabel as nib  # only where files are read: Slicer's Python has no nibabel, and needs none

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    return data, np.asarray(img.affine, dtype=np.float64)


def _read_sitk_file(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    img = sitk.ReadImage(str(path))
    return _sitk_to_ijk(img)


def _sitk_to_ijk(img: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """Convert a SimpleITK image that may be 2D, 3D or 4D, keeping the dimension for validation."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise HippoSNNError(f"{img.GetNumberOfComponentsPerPixel()}-component (vector/RGB) image: need a scalar T1")
    dim = img.GetDimension()
    if dim == 3:
        return from_sitk(img)
    array = sitk.GetArrayFromImage(img)
    return np.transpose(array), np.eye(4)


#: Names of files that a DICOM folder may hold and that must then belong to the series.
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: Largest relative deviation of a slice gap from the median gap before the series counts as incomplete.
_MAX_GAP_DEVIATION = 0.1


def _looks_like_dicom_file(path: Path) -> bool:
    """A DICOM-named file, or any file with the 'DICM' marker after the 128-byte preamble (not DICOMDIR)."""
    if path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom_folder(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Read the single DICOM series of a folder, refusing a damaged or incomplete series.

    GDCM silently leaves out files it cannot parse (a truncated or corrupted slice) and ITK then stacks
    the remaining slices with only a console warning, which would give a volume with a missing slice and
    a wrong slice spacing. So every DICOM-looking file of the folder must belong to the series, and the
    slice positions along the slice normal must be evenly spaced.
    """
    reader = sitk.ImageSeriesReader()
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's multi-line warnings; we report one line
    try:
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise HippoSNNError(f"No DICOM series found in folder {path}")
        if len(series) > 1:
            raise HippoSNNError(f"Folder {path} holds {len(series)} DICOM series: put one series per folder")
        # GDCM sorts the file names by slice position along the slice normal, not by file name.
        files = reader.GetGDCMSeriesFileNames(str(path), series[0])
        in_series = {Path(f).resolve() for f in files}
        left_out = sorted(
            f.name for f in path.iterdir() if f.is_file() and f.resolve() not in in_series and _looks_like_dicom_file(f)
        )
        if left_out:
            raise HippoSNNError(
                f"DICOM series in {path} is damaged: {len(left_out)} file(s) unreadable, truncated or corrupted "
                f"({', '.join(left_out[:3])}{', ...' if len(left_out) > 3 else ''})"
            )
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
        img = reader.Execute()
        if img.GetDimension() == 3 and img.GetSize()[2] == 1:
            raise HippoSNNError(f"DICOM series in {path} has a single slice: need a 3D volume")
        _check_slice_positions(path, reader, len(files))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    return _sitk_to_ijk(img)


def _check_slice_positions(path: Path, reader: sitk.ImageSeriesReader, count: int) -> None:
    """Refuse missing or duplicated slices: positions along the slice normal must be evenly spaced."""
    try:
        positions = [[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(count)]
        cosines = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
    except (RuntimeError, ValueError):
        return  # no usable position tags: nothing to check against
    if len(cosines) != 6 or any(len(p) != 3 for p in positions):
        return
    normal = np.cross(cosines[:3], cosines[3:])
    gaps = np.diff(np.sort(np.asarray(positions) @ normal))
    if gaps.size == 0:
        return
    median = float(np.median(gaps))
    if median <= 0 or np.any(np.abs(gaps - median) > _MAX_GAP_DEVIATION * median):
        raise HippoSNNError(
            f"DICOM series in {path} has missing or duplicated slices (slice gaps {gaps.min():.3g}-"
            f"{gaps.max():.3g} mm, median {median:.3g} mm): incomplete or corrupted series"
        )


def _looks_like_label_map(array: np.ndarray) -> bool:
    """Integer values, few distinct ones, and large uniform regions: a segmentation, not an MRI."""
    flat = array.ravel(order="K")  # a view in the array's own memory order (MGZ/NIfTI data are Fortran-ordered)
    if flat.size > _SAMPLE_VOXELS:
        flat = flat[:: flat.size // _SAMPLE_VOXELS + 1]
    if not np.array_equal(flat, np.floor(flat)):  # integers only (np.mod is ~10x slower)
        return False
    values, counts = np.unique(flat, return_counts=True)
    if values.size > _LABEL_MAX_DISTINCT:
        return False
    # The background is the most frequent value, not necessarily 0: an integer T1 may have been
    # shifted (T1 - 300) or rescaled, and its uniform background then must not count as a label.
    background = values[int(np.argmax(counts))]
    # neighbours along the axis that is slowest in memory: contiguous blocks, ~5x faster than axis 0 of
    # Fortran-ordered data (a uniform region is uniform along any axis)
    along = np.moveaxis(array, int(np.argmax(np.abs(array.strides))), 0)
    if along.size > 8 * _SAMPLE_VOXELS:  # every other row and column is plenty for "uniform regions"
        along = along[:, ::2, ::2]
    a, b = along[1:], along[:-1]
    foreground = (a != background) | (b != background)
    n = int(foreground.sum())
    if n == 0:
        return True
    return float(((a == b) & foreground).sum()) / n > _LABEL_NEIGHBOUR_EQUAL


def validate_image(array: np.ndarray, affine: np.ndarray, source: str) -> Image:
    """Check that ``array``/``affine`` form a usable 3D T1 image and return it as an :class:`Image`.

    Raises :class:`HippoSNNError` with a one-line reason otherwise.
    """
    name = Path(source).name or source
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        raise HippoSNNError(f"{name} is 4D with {array.shape[3]} volumes: give a single 3D T1 volume")
    if array.ndim != 3:
        raise HippoSNNError(f"{name} is {array.ndim}D (shape {array.shape}): need a 3D volume")
    if min(array.shape) < 3:
        raise HippoSNNError(f"{name} has shape {array.shape}: too thin to be a 3D volume")
    if min(array.shape) < MIN_VOXELS_PER_AXIS:
        shown = " x ".join(str(n) for n in array.shape)
        raise HippoSNNError(f"{name} is too small ({shown} voxels): need at least {MIN_VOXELS_PER_AXIS} voxels "
                            "along each axis (a whole-brain T1, or a hippocampus crop with --roi crop)")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise HippoSNNError(f"{name} has voxel type {array.dtype}: need real scalar values")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise HippoSNNError(f"{name} has an invalid (non-finite) voxel-to-world matrix")
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(linear)) < 1e-6 * float(np.prod(spacing)):
        raise HippoSNNError(f"{name} has a degenerate voxel-to-world matrix (axes collapsed)")
    if np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        shown = ", ".join(f"{s:.3g}" for s in spacing)
        raise HippoSNNError(
            f"{name} has voxel size ({shown}) mm, outside {MIN_SPACING_MM}-{MAX_SPACING_MM} mm: check the header"
        )
    data = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(data)):
        raise HippoSNNError(f"{name} contains NaN or infinite voxel values")
    if float(data.max()) == float(data.min()):
        raise HippoSNNError(f"{name} is constant (every voxel is {float(data.min()):g}): not an MRI")
    if _looks_like_label_map(data):
        raise HippoSNNError(f"{name} looks like a label map (few integer values in uniform regions): give the T1 image")
    # The memory order is kept: NIfTI/MGZ data come Fortran-ordered, which is exactly the (k, j, i) C order
    # SimpleITK wants (io.to_sitk then copies nothing); a C-order copy here cost ~0.4 s per 256^3 scan twice.
    return Image(array=data, affine=affine, source=str(source))


def load_image(path: PathLike) -> Image:
    """Read a T1 image (NIfTI, MGZ, NRRD, MHA/MHD or a folder holding one DICOM series).

    Files are read with nibabel where it supports the format (SimpleITK cannot read MGZ) and with
    SimpleITK otherwise; ITK geometry is converted to the RAS affine convention of the core.
    """
    path = Path(path).expanduser()
    array, affine = read_volume(path)
    return validate_image(array, affine, str(path))


def read_volume(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``(array (i, j, k) as stored, voxel-to-RAS affine)`` of any image file or DICOM folder, unvalidated.

    The one reader of the package: :func:`load_image` adds the T1 checks to it and is what training
    (:func:`hipposnn.data.load_cases`) and inference read images with; label maps, which those checks
    refuse, are read with this directly. Unreadable files raise a one-line :class:`HippoSNNError`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise HippoSNNError(f"Input not found: {path}")
    try:
        if path.is_dir():
            array, affine = _read_dicom_folder(path)
        else:
            suffix = _suffix(path)
            if suffix in NIBABEL_SUFFIXES:
                array, affine = _read_nibabel(path)
            elif suffix in SITK_SUFFIXES or suffix in (".dcm", ".ima"):
                array, affine = _read_sitk_file(path)
            else:
                raise HippoSNNError(
                    f"Unsupported file type '{path.name}': use .nii/.nii.gz, .mgz, .nrrd, .mha or a DICOM folder"
                )
    except HippoSNNError:
        raise
    except MemoryError:
        raise HippoSNNError(f"Not enough memory to read {path.name}") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HippoSNNError(
            f"Cannot read {path.name}: file is unreadable, truncated or corrupted ({reason[:120]})"
        ) from None
    return array, affine


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def check_output_path(path: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> Path:
    """Refuse an output path that would destroy an input, an existing file, or cannot be written.

    Called before long computations so that the user learns about a bad output path immediately.
    """
    out = Path(path).expanduser()
    if out.is_dir():
        raise HippoSNNError(f"Output {out} is a folder: give a file name")
    suffix = _suffix(out)
    if suffix not in WRITE_SUFFIXES:
        raise HippoSNNError(f"Cannot write '{out.name}': output must end in {', '.join(WRITE_SUFFIXES)}")
    resolved = out.resolve()
    for item in inputs:
        if Path(item).expanduser().resolve() == resolved:
            raise HippoSNNError(f"Output {out} is also an input: choose another output name")
    folder = resolved.parent
    if not folder.is_dir():
        raise HippoSNNError(f"Output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HippoSNNError(f"Output folder is not writable: {folder}")
    if out.exists() and not overwrite:
        raise HippoSNNError(f"Output {out} exists: pass --overwrite to replace it")
    return out


def _is_label_array(array: np.ndarray) -> bool:
    if array.dtype == np.bool_:
        return True
    if np.issubdtype(array.dtype, np.integer):
        return array.size == 0 or (int(array.min()) >= 0 and int(array.max()) <= 255)
    return False


def save_image(
    array: np.ndarray,
    affine: np.ndarray | None,
    path: PathLike,
    like: Image | None = None,
    atomic: bool = True,
) -> Path:
    """Write a 3D array atomically; the format follows the extension.

    Integer or boolean arrays in 0..255 (label maps) are stored as uint8, anything else as float32.
    ``affine`` may be None when ``like`` gives the geometry. The file is first written to a temporary
    name in the destination folder and then renamed (:mod:`hipposnn.atomicio`), so a crash never
    leaves a half-written output under the final name; ``atomic=False`` writes ``path`` directly, for
    a caller that already writes to a temporary name (:class:`~hipposnn.atomicio.OutputGroup`).
    """
    out = Path(path).expanduser()
    if affine is None:
        if like is None:
            raise ValueError("save_image needs an affine or a reference image")
        affine = like.affine
    affine = np.asarray(affine, dtype=np.float64)
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"save_image expects a 3D array, got shape {array.shape}")
    if like is not None and tuple(array.shape) != like.shape:
        raise ValueError(f"array shape {array.shape} differs from the reference image {like.shape}")
    data = array.astype(np.uint8) if _is_label_array(array) else array.astype(np.float32)
    suffix = _suffix(out)
    if suffix not in WRITE_SUFFIXES:
        raise HippoSNNError(f"Cannot write '{out.name}': output must end in {', '.join(WRITE_SUFFIXES)}")

    def write(name: str) -> None:
        import nibabel as nib  # imported where files are written (see _read_nibabel)

        if suffix in (".nii", ".nii.gz"):
            img = nib.Nifti1Image(data, affine)
            img.header.set_xyzt_units("mm")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, name)
        elif suffix == ".mgz":
            nib.save(nib.MGHImage(data, affine), name)
        else:
            sitk.WriteImage(to_sitk(data, affine), name, True)

    try:
        if atomic:
            atomic_write(out, write, mkdir=False)
        else:
            write(str(out))
    except OSError as exc:
        raise HippoSNNError(f"Cannot write {out}: {exc.strerror or exc}") from None
    return out
