"""Automatic placement of the hippocampus regions of interest (ROIs) the model segments.

The network sees a fixed grid of ``ROI_SHAPE`` voxels at 1 mm. An ROI is described by a 4x4 matrix
mapping ROI voxel indices (i, j, k) to the input scan's RAS millimetres (:class:`RoiBox`), so that
:func:`extract_roi` and :func:`paste_back` are exact inverses through one matrix and every other module
stays in the (array, voxel-to-RAS affine) convention of :mod:`hipposnn.io`.

Model axes: what the training crops really are
-----------------------------------------------
The MSD Task04 crops have placeholder affines, so their axes were checked against the FreeSurfer /
AAL labels of the five whole-brain cases (reoriented to RAS 1 mm, no resampling needed):

* the mean MSD label mask (all 200 crops, centroid-aligned) was correlated with each whole-brain
  hippocampus under the 8 axis flips. For all 5 RIGHT hippocampi the best match is RAS with axis 0
  REVERSED (overlap 0.31-0.56 vs 0.24-0.47 unflipped); for all 5 LEFT hippocampi the best match is
  plain RAS. Axes 1 and 2 agree with RAS (anterior = +axis 1, superior = +axis 2) in all 10.
* the hippocampal head is medial to the tail: in RAS the right head lies at lower x (-0.7..-1.6 mm
  from the posterior half in FreeSurfer), the left head at higher x (+2.9..+4.6 mm). In the MSD
  crops the anterior part lies +2.1 mm along axis 0, i.e. like a left hippocampus in RAS.

So the README claim ("RAS voxel axes, right hippocampus") is only half right: axis 0 of the MSD crops
runs from LATERAL to MEDIAL. A crop is a right hippocampus with the x axis mirrored (LAS), or
equivalently a left hippocampus in RAS. Consequently this module mirrors the RIGHT side
(``MIRRORED_SIDE``): the extracted right ROI is flipped in x, the left ROI is plain RAS, and both then
look like the training crops. Axis 1 runs posterior -> anterior, axis 2 inferior -> superior.

Placement
---------
The scan is registered to a 2 mm copy of the ICBM 2009a template shipped in ``resources/`` in two
stages: a global affine at 4 mm with the metric restricted to the (dilated) template brain, which
copes with whole-head scans, and then, for each side, a local affine refinement at 2 mm with the
metric restricted to a 60 mm cube around that hippocampus. The global stage alone lands up to 17 mm
off on whole-head scans; the local stage brings the template centroid within about 1-4 mm of the
labelled centroid. The box is centred on the template hippocampus centroid mapped into the scan and
keeps the rotation part of the local affine (polar decomposition; scale and shear dropped, so the ROI
voxels stay 1 mm in the subject): this gives an anatomically standardised crop even for oblique
acquisitions, and is nearly axis-aligned for usual head positions, like the training crops.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, TypeVar, Union

import numpy as np
import SimpleITK as sitk

from .errors import HippoSNNError
from .io import Image, from_sitk, load_image, ras_affine_to_itk, swap_ras_lps, to_sitk

#: ROI grid of the model (voxels at 1 mm): axis 0 lateral->medial, 1 posterior->anterior, 2 inferior->superior.
ROI_SHAPE: Tuple[int, int, int] = (24, 56, 48)
ROI_SPACING_MM = 1.0
#: The side whose ROI is mirrored along x so that both sides look like the MSD training crops.
MIRRORED_SIDE = "right"
SIDES = ("right", "left")

TEMPLATE_PATH = Path(__file__).resolve().parent / "resources" / "icbm2009a_t1_2mm.nii.gz"

#: Hippocampus centroids in ICBM 2009a sym RAS mm, derived once from the CoBrALab subfield labels on the
#: 1 mm template grid (not shipped, non-commercial licence): mean RAS position of voxels with labels
#: 88..92 (right CA1, subiculum, CA4/DG, CA2/CA3, strata) and 7..11 (same subfields, left).
TEMPLATE_CENTROID_RAS: Dict[str, Tuple[float, float, float]] = {
    "right": (26.92, -22.82, -14.92),
    "left": (-26.90, -22.81, -14.94),
}

#: A crop (MSD: at most 43 x 59 x 47 mm) is far smaller than a brain (>= 120 mm along every axis): inputs
#: no larger than this along their largest axis are crops, inputs larger along every axis are not.
CROP_MAX_EXTENT_MM = 100.0
_LOCAL_HALF_WIDTH_MM = 30.0
#: Coarse search grid (LPS mm offsets from the centre of mass; degrees), see _coarse_initial_transform.
_COARSE_SHIFTS_MM = ((0.0,), (-20.0, 0.0, 20.0), tuple(float(v) for v in range(-60, 61, 15)))
_COARSE_ANGLES_DEG = (-30.0, -15.0, 15.0, 30.0)
#: Multi-start of the global affine: template scalings x superior shifts (mm) of the coarse start, each run
#: at 8 mm, the best metric refined at 4 mm. From the coarse start alone, 21 of 40 whole-head IXI scans and
#: two FreeSurfer T1.mgz settled with the brain-only template stretched over the whole head (eTIV > 1.25x
#: hippodeep's, docs/results/localisation/etiv_vs_hippodeep_single_start.json): the boxes were rescued by
#: the local stage, the eTIV was not.
_GLOBAL_START_SCALES = (1.0, 0.8, 0.65)
_GLOBAL_START_SHIFTS_MM = (-15.0, 0.0)
#: Second search (see register_to_template): a global metric weaker than this triggers it. On the 55 labelled
#: scans as they come every global metric is -0.46 or stronger (none triggers, so no time is added to them);
#: pitched by 20 degrees or cut to 5 mm slices, three whole-head IXI scans ended at -0.19 to -0.32 with their
#: boxes 8-100 mm off (tools/eval_stress.py, docs/results/stress/before_94f6f2d/).
_SECOND_SEARCH_METRIC = -0.42
#: Pitch angles (degrees, about the left-right axis) searched jointly with the translation grid in the second
#: search, and how many of its best starts each get the global multi-start.
_SECOND_SEARCH_PITCHES_DEG = (-30.0, -15.0, 0.0, 15.0, 30.0)
_SECOND_SEARCH_STARTS = 2
#: The second search's result replaces the first only when its global metric is stronger by this much. A
#: slightly stronger metric is no proof (the brain-only template stretched over a whole head can score a
#: little better): on fst-sub-02 with a bias field (first -0.40) it found -0.43 with the template scaled 1.23
#: and lost the right hippocampus by 29 mm; the real rescues above gained 0.24-0.35
#: (tools/probe_second_search.py, docs/results/stress/second_search_probe.json).
_SECOND_SEARCH_MARGIN = 0.1
#: One ITK thread: the multi-threaded Mattes metric sums its histogram in a varying order, which moved the
#: box by ~1e-4 mm between calls and changed a few voxels of the label map; one thread is bit-identical
#: within and across processes (tests/test_roi.py) and, measured on fst-sub-01, no slower under load.
_THREADS = 1
#: Independent registrations (the global starts, the two local stages) run side by side on this many threads.
_WORKERS = max(1, min(2, os.cpu_count() or 1))
# Quality thresholds, from the reference cases (global scale 0.93-1.10, local metric <= -0.40):
_SCALE_RANGE = (0.7, 1.4)
_MAX_LOCAL_SHIFT_MM = 25.0
_MAX_LOCAL_METRIC = -0.2
#: Each local stage sees the scan only this far (mm) around where the global transform puts its template cube:
#: the largest plausible local shift plus three sigmas of the stage's 2 mm smoothing (see _moving_region).
_LOCAL_MOVING_MARGIN_MM = _MAX_LOCAL_SHIFT_MM + 6.0

Mode = Union[str, Sequence[float]]
T = TypeVar("T")


@dataclass
class RoiBox:
    """One ROI: ``matrix`` maps ROI voxel (i, j, k) to the input image's RAS mm.

    ``mirrored`` tells that the matrix reverses x (right side), so extracted data look like a training crop.
    ``qc`` holds numbers a user or report can check (registration metric, flags, shifts).
    """

    side: str
    matrix: np.ndarray
    shape: Tuple[int, int, int] = ROI_SHAPE
    mirrored: bool = False
    qc: Dict[str, Any] = field(default_factory=dict)

    @property
    def centre_ras(self) -> np.ndarray:
        """RAS mm of the geometric centre of the ROI grid."""
        centre = (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0
        return self.matrix[:3, :3] @ centre + self.matrix[:3, 3]


@dataclass
class RegistrationResult:
    """Template-to-image mapping from :func:`register_to_template`.

    Matrices map template RAS mm to image RAS mm: ``global_matrix`` from the whole-brain stage,
    ``local_matrices[side]`` from the refinement around each hippocampus. ``quality`` is "good" or
    "poor"; ``warnings`` explains a poor result in words.
    """

    global_matrix: np.ndarray
    local_matrices: Dict[str, np.ndarray]
    metric: float
    local_metrics: Dict[str, float]
    quality: str
    seconds: float
    warnings: List[str] = field(default_factory=list)
    side_warnings: Dict[str, List[str]] = field(default_factory=dict)
    #: the second, pitched search (:func:`register_to_template`) ran / replaced the first search's result
    second_search: bool = False
    second_search_used: bool = False

    def warnings_for(self, side: str) -> List[str]:
        """The warnings that concern ``side``: its own and the global ones."""
        own = self.side_warnings.get(side, [])
        others = {w for s, ws in self.side_warnings.items() if s != side for w in ws}
        return [w for w in self.warnings if w in own or w not in others]

    def map_point(self, point_ras: Sequence[float], side: str | None = None) -> np.ndarray:
        """Map a template RAS point into the image (with the local refinement of ``side`` if given)."""
        m = self.local_matrices[side] if side else self.global_matrix
        return m[:3, :3] @ np.asarray(point_ras, dtype=np.float64) + m[:3, 3]


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _template() -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """Template at 2 mm, template at 4 mm and its dilated brain mask at 4 mm (cached: read once)."""
    if not TEMPLATE_PATH.exists():
        raise HippoSNNError(f"Template resource missing: {TEMPLATE_PATH} (reinstall hipposnn)")
    tpl = load_image(TEMPLATE_PATH)
    fixed = to_sitk(tpl.array, tpl.affine)
    brain = sitk.Cast(fixed > 0.15 * float(tpl.array.max()), sitk.sitkUInt8)
    brain = sitk.BinaryDilate(brain, [3, 3, 3])
    fixed4 = sitk.BinShrink(fixed, [2, 2, 2])
    mask4 = sitk.Cast(sitk.BinShrink(sitk.Cast(brain, sitk.sitkFloat32), [2, 2, 2]) > 0.5, sitk.sitkUInt8)
    return fixed, fixed4, mask4


def _shrink_to(img: sitk.Image, target_mm: float) -> sitk.Image:
    """Block-average to about ``target_mm`` voxels: fast and anti-aliased, enough for registration."""
    factors = [max(1, int(round(target_mm / s))) for s in img.GetSpacing()]
    return sitk.Cast(sitk.BinShrink(img, factors), sitk.sitkFloat32)


def _as_affine(tx: sitk.Transform) -> sitk.AffineTransform:
    """Unwrap the (composite) transform a registration returns into its single affine."""
    if tx.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(tx)
        if composite.GetNumberOfTransforms() != 1:
            raise RuntimeError("expected a single affine transform")
        tx = composite.GetNthTransform(0)
    return sitk.AffineTransform(tx.Downcast())


def _transform_to_ras_matrix(tx: sitk.Transform) -> np.ndarray:
    """4x4 RAS->RAS matrix of an affine SimpleITK transform (which works in LPS)."""
    affine = _as_affine(tx)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(affine.GetMatrix()).reshape(3, 3)
    centre = np.asarray(affine.GetCenter())
    lps[:3, 3] = np.asarray(affine.GetTranslation()) + centre - lps[:3, :3] @ centre
    return swap_ras_lps(lps)


def _run_registration(
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
    mask: sitk.Image,
    shrink: Sequence[int],
    sigmas: Sequence[float],
    sampling: float,
    iterations: int,
) -> Tuple[sitk.Transform, float]:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed=1)
    reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    result = reg.Execute(fixed, moving)
    return result, float(reg.GetMetricValue())


def _in_parallel(calls: Sequence[Callable[[], T]]) -> List[T]:
    """Run independent registrations on up to :data:`_WORKERS` threads; results in the order given.

    Each registration keeps its one ITK thread (bit-identical results); SimpleITK releases the GIL
    while it runs, so the six global starts and the two local stages overlap on a 2-core machine.
    """
    if len(calls) < 2 or _WORKERS < 2:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(calls))) as pool:
        return list(pool.map(lambda call: call(), calls))


def _index_box(
    image: sitk.Image, points_lps: Sequence[Sequence[float]], margin_mm: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Voxel index range ``[lo, hi)`` of ``image`` covering ``points_lps`` and ``margin_mm`` around them, clipped."""
    index = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point))
                      for point in points_lps])
    margin = margin_mm / np.asarray(image.GetSpacing())
    size = np.asarray(image.GetSize())
    lo = np.clip(np.floor(index.min(axis=0) - margin), 0, size).astype(int)
    hi = np.clip(np.ceil(index.max(axis=0) + margin) + 1, 0, size).astype(int)
    return lo, hi


def _local_mask(fixed: sitk.Image, centre_ras: Sequence[float], half_width_mm: float) -> sitk.Image:
    """Binary cube around a template point, used to restrict the local stage's metric."""
    lo, hi = _index_box(fixed, [swap_ras_lps(np.asarray(centre_ras, dtype=np.float64))], half_width_mm)
    arr = np.zeros(tuple(np.asarray(fixed.GetSize())[::-1]), dtype=np.uint8)
    arr[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = 1
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(fixed)
    return mask


def _moving_region(
    moving: sitk.Image, transform: sitk.Transform, centre_ras: Sequence[float], half_width_mm: float, margin_mm: float
) -> sitk.Image:
    """The part of ``moving`` a local stage can reach: its template cube mapped by ``transform``, plus a margin.

    Why: a local stage's cost was mostly spent on the whole scan, not on the 60 mm cube it matches (the
    registration smooths the moving image and takes its gradient everywhere, once per stage). Cropped to what
    the cube can reach (the transform maps template points to scan points), the two stages take 0.26-0.30 s
    instead of 0.42-1.0 s one after the other, and the mapped hippocampus moves by 0.005 mm (median; at most
    0.26 mm, on a 2 mm IXI scan) on the 55 labelled scans (``tools/probe_local_crop.py``,
    docs/results/localisation/local_crop_probe.json; ``tests/test_robustness.py``). A cube mapped (almost)
    entirely outside the scan gets the whole scan, as before.
    """
    centre = swap_ras_lps(np.asarray(centre_ras, dtype=np.float64))
    corners = [transform.TransformPoint(tuple(float(v) for v in centre + half_width_mm * np.asarray(signs)))
               for signs in itertools.product((-1.0, 1.0), repeat=3)]
    lo, hi = _index_box(moving, corners, margin_mm)
    if np.any(hi - lo < 4):
        return moving
    return sitk.RegionOfInterest(moving, [int(v) for v in hi - lo], [int(v) for v in lo])


def _standardise_intensities(image: sitk.Image) -> sitk.Image:
    """Map the robust intensity range (1st-99.5th percentile) to [0, 1] and clip.

    Why: Mattes mutual information spreads its 32 bins over the sampled min-max range, so one bright
    artefact (MSD-style maxima up to 1e6), a negative background (z-scored or offset integer scans) or a
    0..1 rescaled scan would otherwise change which bins the brain falls into.
    """
    array = sitk.GetArrayViewFromImage(image)
    sample = np.asarray(array[::2, ::2, ::2], dtype=np.float64)
    lo, hi = np.percentile(sample, [1.0, 99.5])
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        raise HippoSNNError("The image is constant: there is nothing to register")
    scaled = sitk.Clamp((sitk.Cast(image, sitk.sitkFloat32) - float(lo)) / float(hi - lo), sitk.sitkFloat32, 0.0, 1.0)
    return scaled


class _CoarseGrid:
    """The masked mutual information of rigid starts at 8 mm, around the intensity centre of mass."""

    def __init__(self, fixed4: sitk.Image, mask4: sitk.Image, moving4: sitk.Image) -> None:
        self.fixed8 = sitk.BinShrink(fixed4, [2, 2, 2])
        mask8 = sitk.Cast(sitk.BinShrink(sitk.Cast(mask4, sitk.sitkFloat32), [2, 2, 2]) > 0.5, sitk.sitkUInt8)
        self.moving8 = _shrink_to(moving4, 8.0)
        moments = sitk.CenteredTransformInitializer(
            self.fixed8, self.moving8, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        start = sitk.Euler3DTransform(moments)
        self.centre = start.GetCenter()
        self.base = np.asarray(start.GetTranslation(), dtype=np.float64)
        # one metric per worker: a registration method holds the transform it evaluates, so threads cannot share one
        self._methods = [self._method(mask8) for _ in range(_WORKERS)]

    @staticmethod
    def _method(mask8: sitk.Image) -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricFixedMask(mask8)
        reg.SetInterpolator(sitk.sitkLinear)
        return reg

    def rigid(self, angles: Sequence[float], shift: Sequence[float]) -> sitk.Euler3DTransform:
        return sitk.Euler3DTransform(self.centre, *[float(a) for a in angles],
                                     tuple(float(v) for v in self.base + np.asarray(shift)))

    def metric(self, angles: Sequence[float], shift: Sequence[float], worker: int = 0) -> float:
        reg = self._methods[worker]
        reg.SetInitialTransform(self.rigid(angles, shift), inPlace=False)
        return float(reg.MetricEvaluate(self.fixed8, self.moving8))

    def metrics(self, starts: Sequence[Tuple[Sequence[float], Sequence[float]]]) -> List[float]:
        """The metric of each ``(angles, shift)`` start, in order.

        Why: a grid is 27, 12 or 135 independent evaluations (0.2-0.65 s per search on one core). Each is
        deterministic on its one ITK thread and SimpleITK releases the GIL while it runs, so contiguous shares of
        the list go to the workers (:func:`_in_parallel`), each with its own metric, and the values are those of
        one loop, bit for bit.
        """
        shares = [list(part) for part in np.array_split(np.arange(len(starts)), len(self._methods)) if len(part)]
        parts = _in_parallel([lambda k=k, share=share: [self.metric(*starts[i], worker=k) for i in share]
                              for k, share in enumerate(shares)])
        return [value for part in parts for value in part]

    def shifts(self) -> List[np.ndarray]:
        return [np.array([dx, dy, dz], dtype=np.float64) for dx in _COARSE_SHIFTS_MM[0]
                for dy in _COARSE_SHIFTS_MM[1] for dz in _COARSE_SHIFTS_MM[2]]

    def affine(self, angles: Sequence[float], shift: Sequence[float]) -> sitk.AffineTransform:
        rigid = self.rigid(angles, shift)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(self.centre)
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        return affine


def _coarse_initial_transform(grid: _CoarseGrid) -> sitk.Transform:
    """Global start for the affine stage: a coarse exhaustive search instead of the centre of mass alone.

    Why: on whole-head scans with neck and shoulders the intensity centre of mass lies 30-45 mm below
    the brain centre, and the affine optimiser started there stays in the neck (13 of 40 IXI scans,
    docs/segmentation.md). The search evaluates the masked mutual information at 8 mm for translations
    over -60..60 mm in 15 mm steps (superior-inferior) and 0 / +-20 mm (anterior-posterior) around the
    centre of mass, then for rotations of up to 30 degrees about each axis at the best translation (a
    tilted head or a rotated header), and returns the best rigid transform (the first, in this order, of
    equal metrics). About 0.2 s on one core; the evaluations are shared between the workers
    (:meth:`_CoarseGrid.metrics`).
    """
    unrotated = (0.0, 0.0, 0.0)
    shifts = grid.shifts()
    best = (np.inf, unrotated, np.zeros(3))
    for value, shift in zip(grid.metrics([(unrotated, shift) for shift in shifts]), shifts):
        if value < best[0]:
            best = (value, unrotated, shift)
    rotations = []
    for axis in range(3):
        for degrees in _COARSE_ANGLES_DEG:
            angles = [0.0, 0.0, 0.0]
            angles[axis] = float(np.deg2rad(degrees))
            rotations.append(tuple(angles))
    for value, angles in zip(grid.metrics([(angles, best[2]) for angles in rotations]), rotations):
        if value < best[0]:
            best = (value, angles, best[2])
    _, angles, shift = best
    return grid.affine(angles, shift)


def _pitched_starts(grid: _CoarseGrid, count: int) -> List[sitk.Transform]:
    """The ``count`` best rigid starts of a joint search over pitch and translation (the second search).

    Why: the first search picks the translation with the head unrotated and only then tries rotations.
    With a head pitched by 20 degrees (or a 5 mm-slice whole-head scan) the unrotated template matched the
    neck best on some IXI scans, and no rotation at that translation recovered. Searching the translation
    grid at every pitch of :data:`_SECOND_SEARCH_PITCHES_DEG` (135 evaluations, ~0.65 s on one core, shared
    between the workers) finds the brain. It evaluates on the first search's grid (same images at 8 mm, same
    centre of mass).
    """
    starts = [((float(np.deg2rad(degrees)), 0.0, 0.0), shift)
              for degrees in _SECOND_SEARCH_PITCHES_DEG for shift in grid.shifts()]
    values = grid.metrics(starts)
    order = sorted(range(len(starts)), key=lambda i: (values[i], i))
    return [grid.affine(*starts[i]) for i in order[:count]]


def _moved_start(transform: sitk.AffineTransform, scale: float, shift_s_mm: float) -> sitk.AffineTransform:
    """The start with the template scaled about the transform's centre and shifted superiorly."""
    out = sitk.AffineTransform(transform)
    out.SetMatrix(tuple((np.asarray(transform.GetMatrix(), dtype=np.float64) * scale).ravel()))
    translation = np.asarray(transform.GetTranslation(), dtype=np.float64)
    translation[2] += shift_s_mm  # LPS and RAS share the superior axis
    out.SetTranslation(tuple(float(v) for v in translation))
    return out


def _global_affine(
    fixed4: sitk.Image, mask4: sitk.Image, moving4: sitk.Image, start: sitk.AffineTransform
) -> Tuple[sitk.Transform, float]:
    """Global affine from several starts (:data:`_GLOBAL_START_SCALES` x :data:`_GLOBAL_START_SHIFTS_MM`).

    Why: the brain-only template also fits a whole head well enough for a local optimum (brain stretched
    over skull and scalp) that a single start often falls into; each start costs one 8 mm run (~0.2 s),
    and only the best is refined at 4 mm. The ties are broken by order, so the result is deterministic.
    """
    starts = [_moved_start(start, scale, shift) for scale in _GLOBAL_START_SCALES for shift in _GLOBAL_START_SHIFTS_MM]
    candidates = _in_parallel(
        [lambda tx=tx: _run_registration(fixed4, moving4, tx, mask4, (2,), (4.0,), 0.2, 50) for tx in starts]
    )
    best = min(candidates, key=lambda candidate: candidate[1])[0]
    return _run_registration(fixed4, moving4, _as_affine(best), mask4, (1,), (2.0,), 0.2, 100)


def register_to_template(image: Image, sides: Sequence[str] = SIDES) -> RegistrationResult:
    """Affinely register ``image`` to the ICBM 2009a template; global stage plus one local stage per side.

    Takes about 1.05-1.1 s for a 256^3 scan on 2 cores (``bench/bench_segment.py``; one ITK thread per
    registration, for bit-identical results; independent ones side by side, :func:`_in_parallel`). The quality flag is
    "poor" when the global scale is implausible, a local stage moved the hippocampus far from the global
    estimate or its metric is weak: the ROI may then be misplaced and should be checked. The start is a
    coarse exhaustive search (:func:`_coarse_initial_transform`), so whole-head scans with neck and
    tilted heads or headers (tested to 30 degrees about each axis) start near the brain. When the global
    match is still weak (metric above :data:`_SECOND_SEARCH_METRIC`), a second search over pitch and
    translation jointly (:func:`_pitched_starts`) gives more starts; its best global metric replaces the
    first only when it is stronger by :data:`_SECOND_SEARCH_MARGIN`.
    """
    start = time.perf_counter()
    previous_threads = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(_THREADS)
    try:
        fixed, fixed4, mask4 = _template()
        full = _standardise_intensities(to_sitk(image.array, image.affine))
        moving4 = _shrink_to(full, 4.0)
        moving2 = _shrink_to(full, 2.0)
        try:
            grid = _CoarseGrid(fixed4, mask4, moving4)
            init = _coarse_initial_transform(grid)
            global_tx, metric = _global_affine(fixed4, mask4, moving4, init)
            second = metric > _SECOND_SEARCH_METRIC
            used = False
            if second:  # a weak whole-brain match: search again with the head pitched (rare, ~2 s)
                first = metric
                for start_tx in _pitched_starts(grid, _SECOND_SEARCH_STARTS):
                    candidate, value = _global_affine(fixed4, mask4, moving4, start_tx)
                    if value < min(metric, first - _SECOND_SEARCH_MARGIN):
                        global_tx, metric, used = candidate, value, True
            stages = _in_parallel([lambda side=side: _local_stage(fixed, moving2, global_tx, side) for side in sides])
            local = {side: _transform_to_ras_matrix(tx) for side, (tx, _) in zip(sides, stages)}
            local_metrics = {side: value for side, (_, value) in zip(sides, stages)}
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else type(exc).__name__
            raise HippoSNNError(f"Registration to the template failed: {reason}") from None
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(previous_threads)
    global_matrix = _transform_to_ras_matrix(global_tx)
    result = RegistrationResult(
        global_matrix=global_matrix,
        local_matrices=local,
        metric=metric,
        local_metrics=local_metrics,
        quality="good",
        seconds=time.perf_counter() - start,
        second_search=second,
        second_search_used=used,
    )
    _assess(result)
    return result


def _local_stage(
    fixed: sitk.Image, moving2: sitk.Image, global_tx: sitk.Transform, side: str
) -> Tuple[sitk.Transform, float]:
    """Affine refinement around one hippocampus: the metric restricted to a cube around its template centroid."""
    centre = TEMPLATE_CENTROID_RAS[side]
    mask = _local_mask(fixed, centre, _LOCAL_HALF_WIDTH_MM)
    moving = _moving_region(moving2, global_tx, centre, _LOCAL_HALF_WIDTH_MM, _LOCAL_MOVING_MARGIN_MM)
    return _run_registration(fixed, moving, _as_affine(global_tx), mask, (1,), (2.0,), 0.1, 40)


def _assess(result: RegistrationResult) -> None:
    """Fill ``quality`` and ``warnings`` from plausibility checks (no ground truth at run time)."""
    scales = np.linalg.svd(result.global_matrix[:3, :3], compute_uv=False)
    if scales.min() < _SCALE_RANGE[0] or scales.max() > _SCALE_RANGE[1]:
        result.warnings.append(f"implausible template scaling {scales.min():.2f}-{scales.max():.2f}")
    for side, matrix in result.local_matrices.items():
        point = TEMPLATE_CENTROID_RAS[side]
        shift = float(np.linalg.norm(result.map_point(point, side) - result.map_point(point)))
        own: List[str] = []
        if shift > _MAX_LOCAL_SHIFT_MM:
            own.append(f"{side} local refinement moved {shift:.0f} mm from the global estimate")
        if result.local_metrics[side] > _MAX_LOCAL_METRIC:
            own.append(f"{side} local match is weak (metric {result.local_metrics[side]:.2f})")
        if np.linalg.det(matrix[:3, :3]) <= 0:
            own.append(f"{side} local refinement flipped the image")
        result.side_warnings[side] = own
        result.warnings.extend(own)
    result.quality = "poor" if result.warnings else "good"


# --------------------------------------------------------------------------------------------------
# ROI boxes
# --------------------------------------------------------------------------------------------------


def _nearest_rotation(linear: np.ndarray) -> np.ndarray:
    """Rotation part of a linear map (polar decomposition), so ROI voxels stay 1 mm cubes."""
    u, _, vt = np.linalg.svd(linear)
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    return rot


def box_matrix(
    centre_ras: Sequence[float],
    rotation: np.ndarray | None = None,
    mirrored: bool = False,
    shape: Sequence[int] = ROI_SHAPE,
    spacing_mm: float = ROI_SPACING_MM,
) -> np.ndarray:
    """ROI-voxel-to-RAS matrix of a box centred on ``centre_ras``; ``mirrored`` reverses its x axis."""
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    axes = rot * spacing_mm
    if mirrored:
        axes = axes @ np.diag([-1.0, 1.0, 1.0])
    half = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    matrix = np.eye(4)
    matrix[:3, :3] = axes
    matrix[:3, 3] = np.asarray(centre_ras, dtype=np.float64) - axes @ half
    return matrix


def _check_side(side: str, allow_both: bool = True) -> List[str]:
    if side == "both" and allow_both:
        return list(SIDES)
    if side in SIDES:
        return [side]
    choices = "'right', 'left' or 'both'" if allow_both else "'right' or 'left'"
    raise HippoSNNError(f"Unknown side '{side}': use {choices}")


def crop_axes(affine: np.ndarray) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """For crop mode: which voxel axis of the input becomes model axis 0, 1, 2, and in which direction.

    The MSD training crops are NIfTI files with identity affines, i.e. their voxel axes ARE the RAS axes
    (0: x, 1: y = posterior -> anterior, 2: z = inferior -> superior). A crop in another storage order is
    brought to that order by taking, for each RAS axis, the voxel axis closest to it (nibabel's
    ``io_orientation``) and reversing it when it points the other way. Identity (RAS) affines are left
    as they are. This matters for DICOM: a series stored with the placeholder geometry "identity in LPS"
    (e.g. ``../shared/data/dicom``) has the RAS affine diag(-1, -1, 1), so its column and row axes are
    reversed; fed as stored, the crops correlated 0.66-0.69 with the mean MSD crop and the network found
    386-1135 mm^3, while reoriented they correlate 0.81-0.86 (MSD crops among themselves: 0.82-0.86)
    and give 2982-3937 mm^3 shaped like the MSD labels (docs/segmentation.md).

    Returns ``(perm, signs)``: model axis m reads voxel axis ``perm[m]``, reversed when ``signs[m]`` is -1.
    """
    import nibabel as nib  # only here: the Slicer path (auto ROI) must not need nibabel

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    perm = [0, 0, 0]
    signs = [1, 1, 1]
    for voxel_axis, (ras_axis, flip) in enumerate(ornt):
        perm[int(ras_axis)] = voxel_axis
        signs[int(ras_axis)] = int(flip)
    return (perm[0], perm[1], perm[2]), (signs[0], signs[1], signs[2])


def _crop_box(image: Image, side: str, shape: Sequence[int]) -> RoiBox:
    """Centre crop/pad of an input that already is a crop, its voxel axes reoriented by :func:`crop_axes`."""
    perm, signs = crop_axes(image.affine)
    shape_arr = np.asarray(shape, dtype=np.float64)
    img_shape = np.asarray(image.shape, dtype=np.float64)[list(perm)]  # extents along the model axes
    spacing = np.asarray(image.spacing)
    matrix = np.eye(4)
    if np.allclose(spacing, ROI_SPACING_MM, atol=1e-3):
        # Whole-voxel offsets and a signed permutation: sampling is then an exact copy, no interpolation.
        offset = np.floor((img_shape - shape_arr) / 2.0)
        to_voxel = np.zeros((4, 4))
        to_voxel[3, 3] = 1.0
        for m, (p, s) in enumerate(zip(perm, signs)):
            to_voxel[p, m] = float(s)
            to_voxel[p, 3] = offset[m] if s > 0 else img_shape[m] - 1.0 - offset[m]
        matrix = image.affine @ to_voxel
    else:
        unit = image.affine[:3, :3] / spacing
        centre = image.affine[:3, :3] @ ((np.asarray(image.shape, dtype=np.float64) - 1.0) / 2.0) + image.affine[:3, 3]
        matrix[:3, :3] = unit[:, list(perm)] * np.asarray(signs, dtype=np.float64) * ROI_SPACING_MM
        matrix[:3, 3] = centre - matrix[:3, :3] @ ((shape_arr - 1.0) / 2.0)
    qc = {"mode": "crop", "voxel_axes": list(perm), "reversed_axes": [m for m in range(3) if signs[m] < 0]}
    return RoiBox(side=side, matrix=matrix, shape=tuple(int(n) for n in shape), mirrored=False, qc=qc)


def place_rois(
    image: Image,
    side: str = "both",
    mode: Mode = "auto",
    shape: Sequence[int] = ROI_SHAPE,
    registration: RegistrationResult | None = None,
) -> List[RoiBox]:
    """Place the model ROI(s) in ``image``.

    ``mode`` is "auto" (template registration), "crop" (the input already is a hippocampus crop like
    the MSD ones: one centred box, voxel axes in RAS order as in the MSD files (:func:`crop_axes`), no
    mirroring, resampled only if the spacing is not 1 mm) or a RAS
    point (x, y, z) in mm giving the centre of one side's box, axis-aligned in scanner RAS (``side``
    must then be "right" or "left"). A precomputed ``registration`` may be passed to avoid redoing it.
    """
    shape = tuple(int(n) for n in shape)
    if isinstance(mode, str):
        if mode == "crop":
            extent = image_extent_mm(image)
            if min(extent) > CROP_MAX_EXTENT_MM:
                size = " x ".join(f"{v:.0f}" for v in extent)
                raise HippoSNNError(
                    f"The input ({size} mm) is larger than a hippocampus crop along every axis: it looks like a "
                    "whole-brain scan, use --roi auto"
                )
            sides = _check_side(side)
            return [_crop_box(image, "right" if len(sides) == 2 else sides[0], shape)]
        if mode != "auto":
            raise HippoSNNError(f"Unknown ROI mode '{mode}': use 'auto', 'crop' or a centre point x,y,z")
        sides = _check_side(side)
        reg = registration if registration is not None else register_to_template(image, sides)
        boxes = []
        for name in sides:
            matrix_t = reg.local_matrices.get(name, reg.global_matrix)
            centre = reg.map_point(TEMPLATE_CENTROID_RAS[name], name if name in reg.local_matrices else None)
            rotation = _nearest_rotation(matrix_t[:3, :3])
            qc = {
                "mode": "auto",
                "registration_seconds": reg.seconds,
                "metric": reg.metric,
                "local_metric": reg.local_metrics.get(name),
                "quality": reg.quality,
                "warnings": list(reg.warnings),
            }
            boxes.append(
                RoiBox(
                    side=name,
                    matrix=box_matrix(centre, rotation, name == MIRRORED_SIDE, shape),
                    shape=shape,
                    mirrored=name == MIRRORED_SIDE,
                    qc=qc,
                )
            )
        _check_inside(image, boxes)
        return boxes
    try:
        centre = np.asarray([float(v) for v in mode], dtype=np.float64)
    except (TypeError, ValueError):
        raise HippoSNNError("ROI centre must be three numbers x,y,z in RAS mm") from None
    if centre.shape != (3,) or not np.all(np.isfinite(centre)):
        raise HippoSNNError("ROI centre must be three finite numbers x,y,z in RAS mm")
    name = _check_side(side, allow_both=False)[0]
    box = RoiBox(
        side=name,
        matrix=box_matrix(centre, None, name == MIRRORED_SIDE, shape),
        shape=shape,
        mirrored=name == MIRRORED_SIDE,
        qc={"mode": "centre"},
    )
    _check_inside(image, [box])
    return [box]


def _check_inside(image: Image, boxes: Sequence[RoiBox]) -> None:
    """Refuse a box whose centre lies outside the scan: the segmentation would be empty and misleading."""
    inverse = np.linalg.inv(image.affine)
    for box in boxes:
        ijk = inverse[:3, :3] @ box.centre_ras + inverse[:3, 3]
        if np.any(ijk < -0.5) or np.any(ijk > np.asarray(image.shape) - 0.5):
            where = ", ".join(f"{v:.1f}" for v in box.centre_ras)
            hint = ""
            extent = image_extent_mm(image)
            if max(extent) <= CROP_MAX_EXTENT_MM:
                size = " x ".join(f"{v:.0f}" for v in extent)
                hint = f"; the input ({size} mm) looks like a hippocampus crop: use --roi crop"
            raise HippoSNNError(f"The {box.side} ROI centre ({where}) mm lies outside the image{hint}")


def image_extent_mm(image: Image) -> Tuple[float, float, float]:
    """Physical size of the scan along its voxel axes (mm)."""
    ext = np.asarray(image.shape, dtype=np.float64) * np.asarray(image.spacing, dtype=np.float64)
    return (float(ext[0]), float(ext[1]), float(ext[2]))


# --------------------------------------------------------------------------------------------------
# Resampling between the scan and the ROI grid
# --------------------------------------------------------------------------------------------------


def _resample(source: sitk.Image, matrix: np.ndarray, shape: Sequence[int], default: float = 0.0) -> np.ndarray:
    origin, spacing, direction = ras_affine_to_itk(matrix)
    out = sitk.Resample(
        source,
        [int(n) for n in shape],
        sitk.Transform(),
        sitk.sitkLinear,
        origin,
        spacing,
        direction,
        default,
        sitk.sitkFloat32,
    )
    array, _ = from_sitk(out)
    return np.ascontiguousarray(array, dtype=np.float32)


def extract_roi(image: Image, box: RoiBox) -> np.ndarray:
    """Sample ``image`` on the ROI grid (linear interpolation, zeros outside the scan).

    The box matrix already contains the mirroring of the right side, so the result always looks like
    a training crop. Only the voxels around the box are handed to SimpleITK (:func:`crop_to_box`): a
    whole 256^3 scan converted for two small boxes, twice each, cost 0.35 s per scan.
    """
    sub = crop_to_box(image, box)
    return _resample(to_sitk(sub.array.astype(np.float32, copy=False), sub.affine), box.matrix, box.shape)


def crop_to_box(image: Image, box: RoiBox, margin: int = 2) -> Image:
    """The part of ``image`` that sampling on ``box``'s grid can read: its voxel bounding box plus ``margin``.

    Linear interpolation reads the 2 neighbours of a sample point along each axis, so with a margin of at
    least one voxel every point of the box that lies inside the scan keeps all its neighbours, and one
    that lies outside stays outside: the resampled values are those of the whole scan. A box entirely
    outside the scan gets a one-voxel piece of it (the result is zeros either way).
    """
    corners = np.array([[i, j, k, 1.0] for i in (0, box.shape[0] - 1) for j in (0, box.shape[1] - 1)
                        for k in (0, box.shape[2] - 1)]).T
    voxels = (np.linalg.inv(image.affine) @ box.matrix @ corners)[:3]
    shape = np.asarray(image.shape[:3])
    lo = np.clip(np.floor(voxels.min(axis=1)).astype(int) - margin, 0, shape - 1)
    hi = np.clip(np.ceil(voxels.max(axis=1)).astype(int) + margin + 1, lo + 1, shape)
    if np.all(lo == 0) and np.all(hi == shape):
        return image
    offset = np.eye(4)
    offset[:3, 3] = lo
    array = image.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return Image(array, image.affine @ offset)


def paste_back(roi_array: np.ndarray, box: RoiBox, image: Image) -> np.ndarray:
    """Resample an ROI-grid array (e.g. probabilities) into ``image``'s voxel grid, zeros outside the box."""
    roi_array = np.asarray(roi_array, dtype=np.float32)
    if tuple(roi_array.shape) != tuple(box.shape):
        raise ValueError(f"ROI array shape {roi_array.shape} differs from the box shape {box.shape}")
    return _resample(to_sitk(roi_array, box.matrix), image.affine, image.shape)


def recenter(
    box: RoiBox,
    roi_probability: np.ndarray,
    threshold: float = 0.5,
    max_shift_mm: float = 12.0,
    min_voxels: int = 50,
) -> RoiBox:
    """Move the box so that the centroid of a first prediction lands at the ROI centre.

    Why: registration error is mostly a translation; recentring on the predicted hippocampus removes
    it before a second, final prediction. The box is kept unchanged when the prediction is too small
    to trust or would move it implausibly far (a false positive elsewhere in the ROI).
    """
    prob = np.asarray(roi_probability, dtype=np.float64)
    if tuple(prob.shape) != tuple(box.shape):
        raise ValueError(f"probability shape {prob.shape} differs from the box shape {box.shape}")
    fg = prob > threshold
    if int(fg.sum()) < min_voxels:
        return box
    weights = prob * fg
    grid = np.indices(prob.shape, dtype=np.float64).reshape(3, -1)
    centroid = grid @ weights.ravel() / weights.sum()
    shift_vox = centroid - (np.asarray(box.shape, dtype=np.float64) - 1.0) / 2.0
    shift_mm = box.matrix[:3, :3] @ shift_vox
    distance = float(np.linalg.norm(shift_mm))
    if distance > max_shift_mm:
        return box
    matrix = box.matrix.copy()
    matrix[:3, 3] += shift_mm
    qc = dict(box.qc)
    qc["recentred_mm"] = distance
    return replace(box, matrix=matrix, qc=qc)
