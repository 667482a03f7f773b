"""Hippocampus crops: reading, the fixed model ROI, normalisation and subject-wise folds.

Labelled data come as an MSD-layout folder (``imagesTr/``, ``labelsTr/``), a folder of image/label
pairs (``<case>.nii.gz`` + ``<case>_label.nii.gz`` or ``<case>_seg.nii.gz``) or a list of
``(image, label)`` paths; :func:`list_cases` turns each into the same case list.

Axis convention (the model's grid). A crop's voxel axes are used as they are stored. In the MSD
Task04 crops axis 1 runs posterior -> anterior and axis 2 inferior -> superior; axis 0 runs
left-right across the hippocampus, and comparing the crops' label shapes with the FreeSurfer
hippocampi of ``../shared/data/wholebrain`` shows it runs lateral -> medial for these right
hippocampi (see :mod:`hipposnn.roi`, which samples whole-brain ROIs on exactly this grid). The model
ROI is ``ROI_SHAPE = (24, 56, 48)`` voxels at 1 mm along axes (0, 1, 2). The network sees one
*sagittal* slice at a time: slices run along axis 0, so each slice is a 56 x 48
(anterior-posterior x inferior-superior) image, and a crop gives 24 slices.

A pre-cropped volume is brought to the ROI by centring: each axis is cropped symmetrically when
longer and zero-padded symmetrically when shorter (the extra voxel of an odd difference goes to the
end). :func:`crop_loss` measures how much of the label this loses.

Intensities are normalised per volume, robust to outliers (the crops' maxima range from ~100 to
1.7e6): the 1st..99th percentiles of the volume's nonzero voxels map to [0, 1] with clipping
(binary coding). Ternary coding subtracts the mean of that [0, 1] volume and divides by the 99th
percentile of the absolute deviation, clipped to [-1, 1]: zero-mean input, so Poisson coding emits
positive spikes for bright and negative spikes for dark tissue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import HippoSNNError

ROI_SHAPE: Tuple[int, int, int] = (24, 56, 48)
SLICE_AXIS = 0
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class Case:
    """One crop: its name, image (float32) and binary hippocampus mask (uint8), in stored order."""

    name: str
    image: np.ndarray
    label: Optional[np.ndarray]


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


#: The label values of the MSD Task04 crops: 0 background, 1 anterior, 2 posterior hippocampus.
LABEL_VALUES = (0, 1, 2)


def _load_image(path: Path) -> np.ndarray:
    """A crop as float32, read exactly as inference reads a T1 (:func:`hipposnn.io.load_image`)."""
    from .io import load_image

    try:
        return load_image(path).array
    except HippoSNNError as exc:
        raise HippoSNNError(f"{exc} [{path}]") from None


def _load_label(path: Path) -> np.ndarray:
    """A label map as the binary hippocampus mask (uint8, label > 0); any value but 0, 1, 2 is refused.

    A foreign label (another structure, a 0/255 mask, an interpolated float map) would otherwise
    silently become hippocampus.
    """
    from .io import read_volume

    data, _ = read_volume(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise HippoSNNError(f"{path} is not a 3D label map (shape {data.shape})")
    values = np.unique(data)
    extra = values[~np.isin(values, LABEL_VALUES)]
    if extra.size:
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
        raise HippoSNNError(
            f"{path}: label values {shown}; expected only 0 (background), 1 and 2 (hippocampus, as in MSD Task04)"
        )
    return (data > 0).astype(np.uint8)


#: A labelled case may be given as an (image, label) pair of paths; ``DataSource`` is what every
#: reader below accepts: an MSD-layout folder, a folder of image/label pairs, or a list of pairs.
PairList = Sequence[Tuple["os.PathLike[str] | str", "os.PathLike[str] | str"]]
DataSource = Union["os.PathLike[str]", str, PairList]
#: Name endings that mark the label of ``<case>.nii.gz`` in a folder of pairs.
LABEL_SUFFIXES = ("_label", "_seg")
CaseList = List[Tuple[str, Path, Optional[Path]]]


def list_cases(root: DataSource, require_labels: bool = True) -> CaseList:
    """(name, image path, label path) of every case, sorted by name, from any of three layouts.

    * an MSD-layout folder: ``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz``;
    * a folder of image/label pairs: ``<case>.nii.gz`` with ``<case>_label.nii.gz`` or
      ``<case>_seg.nii.gz`` next to it (``.nii`` too), see :func:`list_pair_folder`;
    * a list of ``(image, label)`` paths, see :func:`list_pairs`.

    All layouts give the same ``Case`` data (labels 0, 1, 2 with label > 0 = hippocampus; any other label
    value is refused), so the training, conversion and
    evaluation code does not care which one the user has.
    """
    if not isinstance(root, (str, os.PathLike)):
        return list_pairs(root)
    root = Path(root)
    if not root.is_dir():
        raise HippoSNNError(f"data folder not found: {root}")
    images = root / "imagesTr"
    labels = root / "labelsTr"
    if not images.is_dir():
        if any(_is_nifti(p) for p in root.iterdir()):
            return list_pair_folder(root, require_labels)
        raise HippoSNNError(
            f"{root} has no imagesTr/ folder and no image/label pairs (expected the MSD layout imagesTr/, "
            "labelsTr/ or <case>.nii.gz with <case>_label.nii.gz)"
        )
    found = sorted(p for p in images.iterdir() if _is_nifti(p))
    if not found:
        raise HippoSNNError(f"no NIfTI images in {images}")
    cases: CaseList = []
    for img in found:
        lab = labels / img.name
        if not lab.exists() and require_labels:
            raise HippoSNNError(f"label missing for {img.name} (expected {lab})")
        cases.append((_case_name(img), img, lab if lab.exists() else None))
    return cases


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def list_pair_folder(root: os.PathLike, require_labels: bool = True) -> CaseList:
    """Cases of a flat folder of pairs: ``<case>.nii[.gz]`` + ``<case>_label.nii[.gz]`` (or ``_seg``).

    A file whose name (without the NIfTI suffix) ends with a label suffix is a label; every other NIfTI
    file is an image. A label without its image, or an image with two labels, is an error rather than
    a silently skipped case.
    """
    root = Path(root)
    files = sorted(p for p in root.iterdir() if _is_nifti(p))
    labels: Dict[str, List[Path]] = {}
    images: Dict[str, Path] = {}
    for path in files:
        name = _case_name(path)
        suffix = next((s for s in LABEL_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)
        if suffix is not None:
            labels.setdefault(name[: -len(suffix)], []).append(path)
        elif name in images:
            raise HippoSNNError(f"two images for case {name} in {root}: {images[name].name}, {path.name}")
        else:
            images[name] = path
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise HippoSNNError(f"label without an image in {root}: {labels[orphans[0]][0].name}")
    if not images:
        raise HippoSNNError(f"no images in {root} (only labels)")
    cases: CaseList = []
    for name in sorted(images):
        found = labels.get(name, [])
        if len(found) > 1:
            raise HippoSNNError(f"{len(found)} labels for {images[name].name}: {', '.join(p.name for p in found)}")
        if not found and require_labels:
            raise HippoSNNError(
                f"label missing for {images[name].name} (expected {name}_label.nii.gz or {name}_seg.nii.gz)"
            )
        cases.append((name, images[name], found[0] if found else None))
    return cases


def list_pairs(pairs: PairList) -> CaseList:
    """Cases from explicit ``(image, label)`` paths; the case name is the image file name without suffix."""
    cases: CaseList = []
    seen: Dict[str, Path] = {}
    try:
        items = [(Path(img), Path(lab)) for img, lab in pairs]
    except (TypeError, ValueError):
        raise HippoSNNError("data must be a folder or a list of (image, label) paths") from None
    if not items:
        raise HippoSNNError("empty list of (image, label) pairs")
    for img, lab in items:
        for path in (img, lab):
            if not path.is_file():
                raise HippoSNNError(f"file not found: {path}")
        name = _case_name(img)
        if name in seen:
            raise HippoSNNError(f"two images named {name}: {seen[name]} and {img} (case names must be unique)")
        seen[name] = img
        cases.append((name, img, lab))
    return sorted(cases, key=lambda case: case[0])


def describe_source(root: DataSource) -> str:
    """Short text for logs and model metadata: the folder, or how many pairs and where the first is."""
    if isinstance(root, (str, os.PathLike)):
        return str(root)
    pairs = list(root)
    first = str(Path(pairs[0][0]).parent) if pairs else "-"
    return f"{len(pairs)} image/label pairs ({first}, ...)"


def load_cases(root: DataSource, names: Optional[Iterable[str]] = None, require_labels: bool = True) -> List[Case]:
    """Read the crops of a data source (see :func:`list_cases`; optionally only ``names``)."""
    wanted = set(names) if names is not None else None
    out = []
    for name, img_path, lab_path in list_cases(root, require_labels):
        if wanted is not None and name not in wanted:
            continue
        image = _load_image(img_path)
        label = None
        if lab_path is not None:
            label = _load_label(lab_path)
            if label.shape != image.shape:
                raise HippoSNNError(f"{name}: label shape {label.shape} differs from image shape {image.shape}")
        out.append(Case(name, image, label))
    if wanted is not None and len(out) != len(wanted):
        missing = sorted(wanted - {c.name for c in out})
        raise HippoSNNError(f"cases not found in {describe_source(root)}: {', '.join(missing[:5])}")
    return out


def centre_slices(size: int, target: int) -> Tuple[slice, slice]:
    """(source, destination) slices that centre-crop or centre-pad ``size`` to ``target``."""
    if size >= target:
        start = (size - target) // 2
        return slice(start, start + target), slice(0, target)
    start = (target - size) // 2
    return slice(0, size), slice(start, start + size)


def centre_crop(volume: np.ndarray, shape: Sequence[int] = ROI_SHAPE) -> np.ndarray:
    """Centre crop / zero-pad ``volume`` to ``shape`` (see the module docstring)."""
    out = np.zeros(tuple(shape), dtype=volume.dtype)
    pairs = [centre_slices(s, t) for s, t in zip(volume.shape, shape)]
    out[tuple(p[1] for p in pairs)] = volume[tuple(p[0] for p in pairs)]
    return out


def crop_loss(cases: Sequence[Case], shape: Sequence[int] = ROI_SHAPE) -> Dict[str, float]:
    """How many label voxels a centre crop to ``shape`` loses, overall and for the worst case."""
    total = kept = 0
    worst, worst_name, affected = 0.0, "", 0
    for case in cases:
        if case.label is None:
            continue
        n = int(case.label.sum())
        k = int(centre_crop(case.label, shape).sum())
        total, kept = total + n, kept + k
        frac = 1.0 - k / n if n else 0.0
        affected += frac > 0
        if frac > worst:
            worst, worst_name = frac, case.name
    return {
        "label_voxels": float(total),
        "lost_fraction": 1.0 - kept / total if total else 0.0,
        "cases_losing_voxels": float(affected),
        "worst_case_lost_fraction": worst,
        "worst_case": worst_name,  # type: ignore[dict-item]
    }


def normalise(
    volume: np.ndarray, coding: str = "binary", low: float = 1.0, high: float = 99.0, valid: Optional[np.ndarray] = None
) -> np.ndarray:
    """Per-volume robust intensity normalisation to [0, 1] (binary) or zero-mean [-1, 1] (ternary).

    ``valid`` (bool mask, default all voxels): the voxels that hold image content; the statistics come
    from them alone and every other voxel becomes 0. Training normalises each crop and *then* pads it
    with zeros, so inference must treat its padding and framing the same way: for ternary coding a
    zero voxel normalised with the rest would become negative, i.e. look like dark tissue.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != vol.shape:
            raise ValueError(f"valid mask shape {valid.shape} differs from the volume's {vol.shape}")
        if not valid.any():
            raise HippoSNNError("no image content to normalise (the ROI lies outside the scan)")
        out = np.zeros(vol.shape, dtype=np.float32)
        out[valid] = normalise(vol[valid], coding, low, high)
        return out
    if not np.all(np.isfinite(vol)):
        raise HippoSNNError("image contains NaN or infinite values")
    fg = vol[vol != 0]
    if fg.size < 10:
        fg = vol.ravel()
    lo, hi = (float(v) for v in np.percentile(fg, [low, high]))
    if hi <= lo:
        hi = float(fg.max())
        lo = float(fg.min())
    if hi <= lo:
        raise HippoSNNError("image has constant intensity; cannot normalise it")
    x = np.clip((vol - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)
    if coding == "binary":
        return x
    if coding != "ternary":
        raise ValueError(f"unknown coding {coding!r}")
    x = x - np.float32(x.mean())
    spread = float(np.percentile(np.abs(x), 99.0))
    if spread <= 0:
        spread = float(np.abs(x).max()) or 1.0
    return np.clip(x / np.float32(spread), -1.0, 1.0).astype(np.float32)


def prepare(case: Case, coding: str = "binary") -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Normalise then centre the crop on the model ROI: image (24,56,48) float32, label uint8."""
    # Exact zeros are masking (site augmentation, stripped inputs), not tissue: inference treats them the
    # same way (hipposnn.inference.model_inputs). The MSD crops themselves hold no zero voxels.
    content = case.image != 0
    image = centre_crop(normalise(case.image, coding, valid=content if content.any() else None))
    label = centre_crop(case.label) if case.label is not None else None
    return image, label


def to_slices(volume: np.ndarray, context: int = 0) -> np.ndarray:
    """(24, 56, 48) ROI -> (24, 1 + 2 * context, 56, 48) stack of sagittal slices for the 2D network.

    ``context`` > 0 adds that many neighbouring slices on each side as extra input channels
    (zeros beyond the ROI), a cheap way to give a 2D network some through-plane information.
    """
    stack = np.moveaxis(volume, SLICE_AXIS, 0)
    if context == 0:
        return np.ascontiguousarray(stack[:, None])
    padded = np.pad(stack, [(context, context)] + [(0, 0)] * (stack.ndim - 1))
    n = stack.shape[0]
    return np.ascontiguousarray(np.stack([padded[i : i + n] for i in range(2 * context + 1)], axis=1))


def from_slices(slices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_slices` (centre channel) for (24, C, 56, 48) or (24, 56, 48) arrays."""
    if slices.ndim == 4:
        slices = slices[:, slices.shape[1] // 2]
    return np.moveaxis(slices, 0, SLICE_AXIS)


@dataclass
class SliceSet:
    """All slices of a set of cases as arrays, with the case each slice came from."""

    images: np.ndarray  # (N, 1 + 2 * context, 56, 48) float32
    labels: np.ndarray  # (N, 1, 56, 48) float32
    case_index: np.ndarray  # (N,) int
    names: List[str]

    def __len__(self) -> int:
        return len(self.images)


def build_slices(cases: Sequence[Case], coding: str = "binary", context: int = 0) -> SliceSet:
    images, labels, index = [], [], []
    for i, case in enumerate(cases):
        img, lab = prepare(case, coding)
        if lab is None:
            lab = np.zeros_like(img, dtype=np.uint8)
        images.append(to_slices(img, context))
        labels.append(to_slices(lab.astype(np.float32)))
        index.append(np.full(img.shape[SLICE_AXIS], i))
    return SliceSet(np.concatenate(images), np.concatenate(labels), np.concatenate(index), [c.name for c in cases])


def make_folds(names: Sequence[str], k: int = 5, seed: int = 0) -> List[Dict[str, List[str]]]:
    """Deterministic subject-wise K-fold split: each name is tested exactly once.

    One MSD crop is one subject's right hippocampus, so splitting by case is splitting by subject.
    """
    if k < 2:
        raise HippoSNNError("need at least 2 folds")
    names = sorted(names)
    if len(names) < k:
        raise HippoSNNError(f"cannot make {k} folds from {len(names)} cases")
    order = np.random.default_rng(seed).permutation(len(names))
    folds = []
    for f in range(k):
        test = sorted(names[i] for i in order[f::k])
        train = sorted(set(names) - set(test))
        folds.append({"fold": f, "train": train, "test": test})  # type: ignore[dict-item]
    return folds


def save_folds(folds: List[Dict[str, List[str]]], path: os.PathLike, seed: int) -> None:
    from .weights import atomic_write_text

    atomic_write_text(Path(path), json.dumps({"seed": seed, "k": len(folds), "folds": folds}, indent=1))


def load_folds(path: os.PathLike) -> List[Dict[str, List[str]]]:
    try:
        return json.loads(Path(path).read_text())["folds"]
    except (OSError, ValueError, KeyError) as exc:
        raise HippoSNNError(f"cannot read folds file {path}: {exc}") from None


def fold_names(root: DataSource, fold: Optional[int], k: int = 5, seed: int = 0) -> Tuple[List[str], List[str]]:
    """(train, test) case names of ``fold`` (None: everything is training, nothing is tested)."""
    names = [n for n, _, _ in list_cases(root)]
    if fold is None:
        return names, []
    if not 0 <= fold < k:
        raise HippoSNNError(f"--fold must be between 0 and {k - 1}")
    split = make_folds(names, k, seed)[fold]
    return list(split["train"]), list(split["test"])
