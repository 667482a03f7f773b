"""Whole-scan segmentation: the single entry point behind ``hipposnn segment`` and the Slicer module.

:func:`segment_image` takes a T1 :class:`~hipposnn.io.Image` in any orientation and returns a label map
in that image's own voxel grid (0 background, 1 right, 2 left hippocampus). The steps are:

1. **ROI placement** (:mod:`hipposnn.roi`): template registration ("auto"), the input taken as an
   existing crop ("crop": voxel axes brought to the RAS order of the MSD files, which reverses the
   in-plane axes of DICOM series stored with identity LPS geometry, see :func:`hipposnn.roi.crop_axes`)
   or a user-given RAS centre. The auto ROI is ``ROI_WIDTH`` = 32 voxels wide,
   not the 24 of the training crops: the network is slice-wise (one sagittal 56 x 48 slice plus its
   neighbours), so a wider box only adds slices, and on the reference whole-brain cases a 24 mm width
   left up to 7 % of the labelled hippocampus outside while 32 mm keeps >= 97 % (docs/segmentation.md).
2. **Normalisation per ROI** with :func:`hipposnn.data.normalise`, exactly as each training crop was
   normalised (percentiles of its own nonzero voxels), so the network sees the intensity statistics
   it was trained on whatever the scanner's units.
3. **Locating pass** (``refine``): the fast ANN twin predicts once, each box is recentred on its
   prediction (:func:`hipposnn.roi.recenter`), which removes most of the residual registration
   translation before the final spiking pass. The ANN costs ~0.1 s where a second SNN pass would cost
   several seconds.
4. **Inference**: the slices of all ROIs go through :func:`hipposnn.simulate.predict_slices` in one
   batch (one seeded generator: deterministic for a seed).
5. **Back to the scan**: probabilities are resampled (linear) into the sub-block of the scan that the
   box covers, thresholded, and each side keeps its largest connected component.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

from .data import normalise, to_slices
from .encoding import CODINGS
from .errors import Cancelled, HippoSNNError
from .io import Image
from .options import AUTO_ROI_SHAPE, check_device, coding_notice, validate_threshold
from .options import resolve_device as _resolve_device
from .qc import compare_sides, etiv_mm3, overall, side_qc
from .readout import check_sigma, largest_component, readout_sigma, smooth_readout
from .roi import (
    ROI_SPACING_MM,
    SIDES,
    RoiBox,
    _resample,
    crop_axes,
    crop_to_box,
    extract_roi,
    place_rois,
    recenter,
    register_to_template,
)
from .unet import SpikingUNet, UNet
from .weights import chosen_model_path, model_from_payload, model_kind, read_payload, resolve_choice, sha256_file

Progress = Callable[[float, str], bool]

#: Auto-ROI grid: ``AUTO_ROI_SHAPE`` = (``ROI_WIDTH``, 56, 48) voxels at 1 mm, defined in hipposnn.options
#: (imported above) so that the Slicer module reads the same numbers without importing torch.
LABELS = {"right": 1, "left": 2}
#: In-plane tissue window (axes 1, 2) the network is shown, and where the hippocampus sits in it. The
#: training crops are ~35 x 50 x 35 mm (median of the 200 MSD crops) zero-padded to 56 x 48, with the
#: hippocampus centroid at (+1.3, -2.3) voxels from the crop centre along axes 1, 2. The network learnt
#: that framing: showing it a 56 x 48 window full of tissue instead drops the mean Dice on the
#: whole-brain cases from 0.72 to 0.44 (ANN, measured), so the ROI is framed the same way.
FRAME_SHAPE: Tuple[int, int] = (50, 35)
FRAME_OFFSET: Tuple[float, float] = (1.26, -2.32)
#: Slices per SNN batch and timesteps per chunk: measured fastest on a 2-core CPU (docs/segmentation.md).
#: With the fused C++ IF kernels (hipposnn.native) chunk 4 beat 32 (64 slices, T=32: 2.05 vs 3.37 s), and
#: chunk 1 beats 4 on both shipped SNNs (network time per whole-brain scan, bench/bench_segment.py:
#: T=8 0.52 vs 0.57-0.59 s, T=32 1.98-2.07 vs 2.12-2.14 s; docs/results/bench_segment_models*.json).
#: The chunk does not change the result (same spike stream, probabilities equal to 4e-7); the batch does
#: (one seeded generator per batch), so it stays 16.
SNN_BATCH = 16
SNN_CHUNK = 1
#: A direct-input SNN draws nothing, so its batch cannot change its result: 32 slices per batch ran the
#: whole-brain default's 64 slices in 0.48-0.51 s against 0.51-0.55 s at 16 and 0.54-0.59 s at 64 (bert,
#: 2 threads, five alternating repeats, chunk 1, identical probabilities; tools/time_snn_batch.py,
#: docs/results/snn_batch_direct.txt).
SNN_BATCH_DIRECT = 32


@dataclass
class SegmentationSettings:
    """What the user can choose; everything else is fixed by the model file."""

    side: str = "both"  # "right" | "left" | "both"
    roi: object = "auto"  # "auto" | "crop" | (x, y, z) RAS mm centre
    model: str = "snn"  # an options.MODEL_CHOICES name: "snn" (the default SNN), "snn-t8", "snn-t32" or "ann"
    timesteps: int | None = None  # None: the model's own
    coding: str | None = None  # None: a custom file's own, else options.default_coding (binary SNN for whole brains)
    threshold: float = 0.5
    smooth: float | None = None  # readout smoothing sigma (voxels); None: 1 for an SNN, 0 for the ANN (readout.py)
    seed: int = 0
    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    checkpoint: str | None = None  # custom weights file
    probabilities: bool = False
    refine: bool = False  # measured: no gain on the reference cases (docs/segmentation.md)
    threads: int | None = None  # torch CPU threads; None: all cores (at most 8)
    twin_check: bool = True  # SNN runs: compare with the ANN twin for QC (~0.1 s)

    def validate(self) -> None:
        """Raise :class:`HippoSNNError` for a setting no run could use, before any work starts."""
        if self.side not in ("right", "left", "both"):
            raise HippoSNNError(f"Unknown side '{self.side}': use right, left or both")
        resolve_choice(self.model)  # the one rule for model names (hipposnn.options)
        if self.timesteps is not None and (not isinstance(self.timesteps, int) or self.timesteps < 1):
            raise HippoSNNError(f"timesteps must be a positive whole number, got {self.timesteps!r}")
        if self.coding is not None and self.coding not in CODINGS:
            raise HippoSNNError(f"Unknown coding '{self.coding}': use binary or ternary")
        validate_threshold(self.threshold)  # the one rule (hipposnn.options), shared with Slicer
        if self.smooth is not None:
            check_sigma(self.smooth)
        check_device(self.device)
        if isinstance(self.roi, str):
            if self.roi not in ("auto", "crop"):
                raise HippoSNNError(f"Unknown ROI mode '{self.roi}': use auto, crop or a centre x,y,z")
        else:
            try:
                centre = [float(v) for v in self.roi]  # type: ignore[attr-defined]
            except (TypeError, ValueError):
                raise HippoSNNError("ROI centre must be three numbers x,y,z in RAS mm") from None
            if len(centre) != 3 or not all(math.isfinite(v) for v in centre):
                raise HippoSNNError("ROI centre must be three finite numbers x,y,z in RAS mm")
            if self.side == "both":
                raise HippoSNNError("A ROI centre point locates one hippocampus: give side right or left")


@dataclass
class SegmentationResult:
    """Everything a caller shows or saves; arrays are in the input image's voxel grid."""

    labels: np.ndarray  # uint8, input grid (i, j, k): 0 background, 1 right, 2 left
    probabilities: np.ndarray | None  # float32 input grid or None
    volumes_mm3: Dict[str, float]  # {"right": ..., "left": ...} for the sides done
    boxes: List[RoiBox]
    qc: Dict[str, Any]  # registration metric, quality flag, warnings (list of str)
    timings: Dict[str, float]  # seconds per step
    settings: Dict[str, Any]
    model_sha256: str
    affine: np.ndarray | None = None  # the input's voxel-to-RAS affine (for writers)
    roi_probabilities: Dict[str, np.ndarray] = field(default_factory=dict)  # per side, ROI grid
    etiv_mm3: float | None = None  # estimated total intracranial volume (auto ROI only)
    asymmetry_index: float | None = None  # (left - right) / mean, both sides only

    @property
    def volumes_per_etiv(self) -> Dict[str, float]:
        """Volumes as fractions of the eTIV (empty without an eTIV)."""
        if not self.etiv_mm3:
            return {}
        return {k: float(v) / self.etiv_mm3 for k, v in self.volumes_mm3.items()}

    def summary(self) -> Dict[str, Any]:
        """JSON-ready summary: settings, model hash, timings, QC, boxes and volumes (no arrays)."""
        boxes = []
        for box in self.boxes:
            boxes.append(
                {
                    "side": box.side,
                    "shape": [int(n) for n in box.shape],
                    "mirrored": bool(box.mirrored),
                    "centre_ras_mm": [round(float(v), 3) for v in box.centre_ras],
                    "roi_to_ras": [[float(v) for v in row] for row in box.matrix],
                    "qc": _jsonable(box.qc),
                }
            )
        return {
            "volumes_mm3": {k: round(float(v), 1) for k, v in self.volumes_mm3.items()},
            "etiv_mm3": None if self.etiv_mm3 is None else round(float(self.etiv_mm3), 0),
            "volumes_per_etiv": {k: round(v, 6) for k, v in self.volumes_per_etiv.items()},
            "asymmetry_index": None if self.asymmetry_index is None else round(float(self.asymmetry_index), 4),
            "boxes": boxes,
            "qc": _jsonable(self.qc),
            "timings_s": {k: round(float(v), 3) for k, v in self.timings.items()},
            "settings": _jsonable(self.settings),
            "model_sha256": self.model_sha256,
            "shape": [int(n) for n in self.labels.shape],
        }


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain JSON types (recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A network ready to run, with the settings stored in its file and the file's checksum."""

    network: Union[UNet, SpikingUNet]
    kind: str
    path: Path
    sha256: str
    timesteps: int
    coding: str
    device: str

    @property
    def context(self) -> int:
        return self.network.spec.context


_CACHE: Dict[Tuple[str, str, str, float], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: str = "cpu") -> str:
    """'auto' picks CUDA when available; asking for CUDA without it is a user error, not a silent fallback.

    The rule lives in :func:`hipposnn.options.resolve_device` (shared with the Slicer module).
    """
    return _resolve_device(device)


def load_segmentation_model(
    model: str = "snn", checkpoint: str | None = None, device: str = "cpu", coding: str | None = None,
    roi: object = "auto",
) -> LoadedModel:
    """Load (once per file, kind and device) the network to segment with.

    Without ``coding`` the shipped model is the default for the input ``roi`` describes
    (:func:`hipposnn.options.resolve_choice` and :func:`~hipposnn.options.default_coding`: the binary
    T = 8 SNN for "snn" on whole-brain scans, the ternary T = 32 SNN on crops).

    Cached because the Slicer module segments several scans in one session and reading/building the
    network costs ~0.3 s; the cache key includes the file's modification time so a retrained file is
    picked up.
    """
    kind = model_kind(model)  # refuses an unknown name in one line (hipposnn.options)
    device = resolve_device(device)
    path = chosen_model_path(model, checkpoint, coding, roi)
    if not path.is_file():
        raise HippoSNNError(f"model file not found: {path}")
    key = (str(path.resolve()), model, device, path.stat().st_mtime)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    payload = read_payload(path)
    if checkpoint and kind == "snn" and payload.get("kind") == "ann":
        raise HippoSNNError(f"{path.name} holds an ANN: pass --model ann or convert it first")
    network = model_from_payload(payload, kind, source=str(path))
    network.eval()
    network.to(device)
    meta = payload.get("meta", {}) or {}
    loaded = LoadedModel(
        network=network,
        kind=kind,
        path=path,
        sha256=sha256_file(path),
        timesteps=int(meta.get("timesteps", 32)),
        coding=str(meta.get("coding", "binary")),
        device=device,
    )
    with _CACHE_LOCK:
        _CACHE[key] = loaded
    return loaded


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def _box_block(box: RoiBox, image: Image, margin: int = 1) -> Tuple[slice, slice, slice]:
    """Index ranges of ``image`` that the box touches (its corners mapped into the scan, plus a margin)."""
    inverse = np.linalg.inv(image.affine)
    corners = np.array(
        [[a, b, c] for a in (-0.5, box.shape[0] - 0.5) for b in (-0.5, box.shape[1] - 0.5)
         for c in (-0.5, box.shape[2] - 0.5)]
    )
    ras = corners @ box.matrix[:3, :3].T + box.matrix[:3, 3]
    ijk = ras @ inverse[:3, :3].T + inverse[:3, 3]
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - margin, 0, image.shape)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + margin + 1, 0, image.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _paste_block(roi_array: np.ndarray, box: RoiBox, image: Image) -> Tuple[Tuple[slice, slice, slice], np.ndarray]:
    """Resample an ROI-grid array into the part of the scan the box covers (not the whole 256^3 grid)."""
    from .io import to_sitk

    block = _box_block(box, image)
    offset = np.eye(4)
    offset[:3, 3] = [s.start for s in block]
    sub_affine = image.affine @ offset
    shape = [s.stop - s.start for s in block]
    if min(shape) <= 0:
        return block, np.zeros(shape, dtype=np.float32)
    values = _resample(to_sitk(np.asarray(roi_array, dtype=np.float32), box.matrix), sub_affine, shape)
    return block, values


def roi_coverage(box: RoiBox, image_affine: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ``mask`` voxels (a label in the image grid) whose centre lies inside the box."""
    ijk = np.argwhere(mask)
    if ijk.size == 0:
        return float("nan")
    ras = ijk @ image_affine[:3, :3].T + image_affine[:3, 3]
    inverse = np.linalg.inv(box.matrix)
    roi = ras @ inverse[:3, :3].T + inverse[:3, 3]
    inside = np.all((roi >= -0.5) & (roi <= np.asarray(box.shape) - 0.5), axis=1)
    return float(inside.mean())


def training_window(shape: Sequence[int]) -> np.ndarray:
    """Bool mask of the MSD-like tissue window (see ``FRAME_SHAPE``) in an ROI of ``shape``, placed as
    the hippocampus sits in the training crops.

    Assumes the hippocampus centroid is at the ROI centre (true after registration or recentring).
    """
    lo = []
    for axis, (size, offset) in enumerate(zip(FRAME_SHAPE, FRAME_OFFSET), start=1):
        centre = (shape[axis] - 1) / 2.0 - offset
        lo.append(int(round(centre - (size - 1) / 2.0)))
    keep = np.zeros(tuple(int(n) for n in shape), dtype=bool)
    j0, k0 = max(lo[0], 0), max(lo[1], 0)
    keep[:, j0 : lo[0] + FRAME_SHAPE[0], k0 : lo[1] + FRAME_SHAPE[1]] = True
    return keep


def frame_like_training(roi: np.ndarray) -> np.ndarray:
    """Zero the ROI outside :func:`training_window`."""
    out = np.array(roi, dtype=np.float32, copy=True)
    out[~training_window(out.shape)] = 0.0
    return out


def model_inputs(image: Image, boxes: Sequence[RoiBox], crop: bool) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The ROIs the network sees, each with the mask of voxels that carry image content.

    Whole-brain boxes are framed like the training crops (:func:`training_window`); a crop input
    (``crop=True``) keeps its own extent, and the padding the box adds around it is not content.
    Normalising over the masks (``data.normalise(..., valid=mask)``) then matches training, which
    normalised each crop before zero-padding it.
    """
    rois, valids = [], []
    for box in boxes:
        near = crop_to_box(image, box)  # the voxels this box can read, not the whole scan (4 copies of it)
        roi = extract_roi(near, box)
        if crop:
            inside = _resample_ones(near, box) > 0.5
        else:
            # Exact zeros inside a scan are masking (skull stripping, cerebellum removal, defacing), not
            # tissue: counted as content they pull a ternary ROI's mean down and the network finds little
            # (LPBA40 left: Dice 0.10 -> 0.32 on S11, docs/segmentation.md).
            inside = training_window(roi.shape) & (extract_roi(_nonzero(near), box) > 0.5)
            roi[~inside] = 0.0
        rois.append(roi)
        valids.append(inside)
    return rois, valids


def _nonzero(image: Image) -> Image:
    return Image((image.array != 0).astype(np.float32), image.affine)


def _resample_ones(image: Image, box: RoiBox) -> np.ndarray:
    ones = Image(np.ones(image.shape, dtype=np.float32), image.affine)
    return extract_roi(ones, box)


def _crop_shape(image: Image) -> Tuple[int, int, int]:
    """ROI for an input that already is a crop: its whole extent, in-plane at least the training 56 x 48.

    Extents are taken along the model axes, i.e. after the RAS reordering of :func:`roi.crop_axes`.

    In-plane sizes are rounded up to a multiple of 8 (three poolings of the U-Net).
    """
    perm, _ = crop_axes(image.affine)  # model axis m is the input's voxel axis perm[m]
    extent = (np.asarray(image.shape) * np.asarray(image.spacing) / ROI_SPACING_MM)[list(perm)]
    n0 = max(3, int(math.ceil(extent[0] - 1e-3)))
    n1 = max(56, int(math.ceil(extent[1] / 8 - 1e-3)) * 8)
    n2 = max(48, int(math.ceil(extent[2] / 8 - 1e-3)) * 8)
    return (n0, n1, n2)


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


class _Steps:
    """Maps each step's own 0..1 progress onto the whole run and turns a False answer into Cancelled."""

    WEIGHTS = {"load": 0.02, "register": 0.2, "locate": 0.05, "infer": 0.68, "paste": 0.05}

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0.0

    def report(self, step: str, fraction: float, message: str) -> None:
        if self.progress is None:
            return
        total = self.done + self.WEIGHTS[step] * max(0.0, min(1.0, fraction))
        if self.progress(min(1.0, total), message) is False:
            raise Cancelled("cancelled by the user")

    def finish(self, step: str, message: str) -> None:
        self.report(step, 1.0, message)
        self.done += self.WEIGHTS[step]

    def sub(self, step: str) -> Progress:
        def callback(fraction: float, message: str) -> bool:
            self.report(step, fraction, message)
            return True

        return callback


def _predict(
    model: LoadedModel,
    rois: Sequence[np.ndarray],
    valids: Sequence[np.ndarray],
    timesteps: int,
    coding: str,
    seed: int,
    progress: Progress | None,
) -> List[np.ndarray]:
    """Probabilities on each ROI grid; the slices of all ROIs run together (one seeded stream)."""
    stacks = [to_slices(normalise(roi, coding, valid=v), model.context) for roi, v in zip(rois, valids)]
    counts = [len(s) for s in stacks]
    if len(set(s.shape[1:] for s in stacks)) == 1:
        groups = [(np.concatenate(stacks), list(range(len(stacks))))]
    else:  # crop boxes of different in-plane sizes cannot share a batch
        groups = [(s, [i]) for i, s in enumerate(stacks)]
    out: List[np.ndarray | None] = [None] * len(rois)
    for images, members in groups:
        probs = predict_slices_safe(
            model,
            images,
            timesteps=timesteps,
            coding=coding,
            seed=seed,
            batch_size=_batch_size(model.network, len(images)),
            progress=progress,
        )
        start = 0
        for i in members:
            out[i] = probs[start : start + counts[i], 0]
            start += counts[i]
    return [np.asarray(p) for p in out]


def _batch_size(network: Any, slices: int) -> int:
    """Slices per forward pass: all of them for the ANN; for an SNN the measured fastest batch that keeps
    its seeded input spikes what they were (:data:`SNN_BATCH`, :data:`SNN_BATCH_DIRECT`)."""
    if not isinstance(network, SpikingUNet):
        return max(1, slices)
    return SNN_BATCH_DIRECT if network.input_encoding == "direct" else SNN_BATCH


def predict_slices_safe(model: LoadedModel, images: np.ndarray, **kwargs: Any) -> np.ndarray:
    """:func:`predict_slices` with CUDA out-of-memory turned into a plain user error."""
    from .simulate import predict_slices

    try:
        return predict_slices(model.network, images, device=model.device, chunk=SNN_CHUNK, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise HippoSNNError("The GPU ran out of memory: use --device cpu or fewer timesteps") from None


def _settings_dict(settings: SegmentationSettings) -> Dict[str, Any]:
    data = asdict(settings)
    if not isinstance(settings.roi, str):
        data["roi"] = [float(v) for v in settings.roi]  # type: ignore[attr-defined]
    return data


def segment_image(
    image: Image, settings: SegmentationSettings = SegmentationSettings(), progress: Progress | None = None
) -> SegmentationResult:
    """Segment the hippocampus/hippocampi of ``image``; see the module docstring for the steps.

    ``progress(fraction, message)`` is called with the overall fraction done; returning False stops
    the run with :class:`~hipposnn.errors.Cancelled` (nothing is returned, nothing written).
    """
    settings.validate()
    steps = _Steps(progress)
    timings: Dict[str, float] = {}
    warnings: List[str] = []
    previous_threads = torch.get_num_threads()
    threads = settings.threads or min(8, os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(threads)))
    try:
        t0 = time.perf_counter()
        steps.report("load", 0.0, "loading the model")
        model = load_segmentation_model(settings.model, settings.checkpoint, settings.device, settings.coding,
                                        settings.roi)
        timesteps = int(settings.timesteps or model.timesteps)
        coding = settings.coding or model.coding
        notice = coding_notice(settings.model, coding, settings.roi, custom=settings.checkpoint is not None)
        if notice:
            warnings.append(notice)
        timings["model"] = time.perf_counter() - t0
        steps.finish("load", "model ready")

        t0 = time.perf_counter()
        registration = None
        if settings.roi == "auto":
            steps.report("register", 0.0, "registering to the template")
            sides = list(SIDES) if settings.side == "both" else [settings.side]
            registration = register_to_template(image, sides)
            boxes = place_rois(image, settings.side, "auto", AUTO_ROI_SHAPE, registration)
            warnings.extend(registration.warnings)
        elif settings.roi == "crop":
            boxes = place_rois(image, settings.side, "crop", _crop_shape(image))
        else:
            boxes = place_rois(image, settings.side, settings.roi, AUTO_ROI_SHAPE)  # type: ignore[arg-type]
        timings["registration"] = time.perf_counter() - t0
        steps.finish("register", "ROI placed")

        t0 = time.perf_counter()
        refine = settings.refine and settings.roi != "crop"
        if refine:
            boxes = _locate(image, boxes, settings, coding)
        timings["refine"] = time.perf_counter() - t0
        steps.finish("locate", "ROI recentred" if refine else "ROI kept")

        t0 = time.perf_counter()
        rois, valids = model_inputs(image, boxes, crop=settings.roi == "crop")
        timings["roi_inputs"] = time.perf_counter() - t0  # resampling the boxes; "inference" is the network's
        t0 = time.perf_counter()
        raw = _predict(model, rois, valids, timesteps, coding, settings.seed, steps.sub("infer"))
        timings["inference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sigma = readout_sigma(model.kind == "snn", settings.smooth)
        probs = [smooth_readout(p, sigma, settings.threshold) for p in raw]
        timings["readout"] = time.perf_counter() - t0
        steps.finish("infer", "slices segmented")

        twins: List[np.ndarray | None] = [None] * len(boxes)
        if settings.twin_check and model.kind == "snn":
            t0 = time.perf_counter()
            twin = load_segmentation_model("ann", None, settings.device, coding)
            twins = list(_predict(twin, rois, valids, 1, coding, settings.seed, None))
            timings["twin_check"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        labels = np.zeros(image.shape, dtype=np.uint8)
        best = np.zeros(image.shape, dtype=np.float32)
        volumes: Dict[str, float] = {}
        voxel_mm3 = float(abs(np.linalg.det(image.affine[:3, :3])))
        qc_sides: Dict[str, Dict[str, Any]] = {}
        for box, prob, raw_prob, twin_prob in zip(boxes, probs, raw, twins):
            block, values = _paste_block(prob, box, image)
            current = best[block]
            mask = largest_component(values > settings.threshold)
            take = mask & (values > current)
            labels[block][take] = LABELS.get(box.side, 1)
            best[block] = np.maximum(current, values)
            volumes[box.side] = float((labels == LABELS.get(box.side, 1)).sum()) * voxel_mm3
            reg_warnings = registration.warnings_for(box.side) if registration is not None else []
            # QC reads the network's own map: its limits were set on raw maps, and smoothing makes voxels "undecided"
            qc_sides[box.side] = side_qc(box.side, raw_prob, volumes[box.side], settings.threshold, reg_warnings,
                                         twin_prob)
            qc_sides[box.side]["recentred_mm"] = box.qc.get("recentred_mm", 0.0)
        timings["paste"] = time.perf_counter() - t0
        steps.finish("paste", "done")
    finally:
        torch.set_num_threads(previous_threads)

    asymmetry = compare_sides(qc_sides, volumes)
    for side, side_result in qc_sides.items():  # registration warnings are in the list already
        reg_warnings = registration.warnings if registration is not None else []
        warnings.extend(f"{side} hippocampus: {r}" for r in side_result["reasons"] if r not in reg_warnings)
    quality = overall(qc_sides, registration.quality if registration is not None else None)
    qc: Dict[str, Any] = {
        "quality": quality,
        "warnings": warnings,
        "registration_metric": registration.metric if registration is not None else None,
        "local_metrics": dict(registration.local_metrics) if registration is not None else {},
        # whether the weak first match made the registration search again with the head pitched (roi.py)
        "registration_second_search": ({"ran": registration.second_search, "used": registration.second_search_used}
                                       if registration is not None else None),
        "sides": qc_sides,
    }
    timings["total"] = sum(timings.values())
    used = _settings_dict(settings)
    # the shipped variant "snn" stood for here (None for a custom file: checkpoint_used names it)
    used.update({"model_used": None if settings.checkpoint else resolve_choice(settings.model, settings.roi),
                 "timesteps_used": timesteps, "coding_used": coding, "device_used": model.device,
                 "smooth_used": sigma,
                 # what the SNN's first layer received (None for the ANN): a property of the model file
                 "input_used": getattr(model.network, "input_encoding", None),
                 "checkpoint_used": str(model.path), "roi_shape": [int(n) for n in boxes[0].shape]})
    return SegmentationResult(
        labels=labels,
        probabilities=best if settings.probabilities else None,
        volumes_mm3=volumes,
        boxes=list(boxes),
        qc=qc,
        timings=timings,
        settings=used,
        model_sha256=model.sha256,
        affine=np.asarray(image.affine, dtype=np.float64).copy(),
        roi_probabilities={box.side: p for box, p in zip(boxes, probs)},
        etiv_mm3=etiv_mm3(registration.global_matrix) if registration is not None else None,
        asymmetry_index=asymmetry,
    )


def _locate(image: Image, boxes: List[RoiBox], settings: SegmentationSettings, coding: str) -> List[RoiBox]:
    """Recentre each box on a quick ANN prediction (the registration's residual shift is mostly translation)."""
    ann = load_segmentation_model("ann", None, settings.device, coding)
    rois, valids = model_inputs(image, boxes, crop=False)
    probs = _predict(ann, rois, valids, 1, ann.coding, settings.seed, None)
    return [recenter(box, prob, threshold=0.5) for box, prob in zip(boxes, probs)]
