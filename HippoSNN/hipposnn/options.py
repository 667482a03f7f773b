"""Rules for the user's segmentation options, in one place for the command line, the API and Slicer.

Each rule is written once here and called by :class:`hipposnn.inference.SegmentationSettings`, the
CLI and the 3D Slicer module, so that a value accepted in one place is accepted everywhere. This
module imports neither torch nor numpy nor nibabel: the Slicer module reads it at start-up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from . import DEFAULT_CODING
from .errors import HippoSNNError

#: Auto-ROI grid (voxels at 1 mm): axis 0 lateral->medial (the slices), 1 posterior->anterior,
#: 2 inferior->superior. 32 slices, not the 24 of the training crops (see hipposnn.inference).
ROI_WIDTH = 32
AUTO_ROI_SHAPE: Tuple[int, int, int] = (ROI_WIDTH, 56, 48)

#: The output threshold is a probability strictly between 0 and 1 (0 would keep every voxel of the
#: box, 1 none). User interfaces offer this closed range, which lies inside the open one.
THRESHOLD_RANGE: Tuple[float, float] = (0.01, 0.99)

DEVICES = ("auto", "cpu", "cuda")

#: Training: the site augmentation's thickest one-axis voxel (mm) unless ``--site-thick-mm`` says otherwise, the
#: top of ``hipposnn.augment.SiteAugmentation.spacing_mm`` (every model trained before the option existed); the
#: whole-brain default was trained with 6.
SITE_THICK_MM = 3.0
#: Training: the percentile of a layer's ReLU activations a warm-started quantised-clip ANN's clip starts at unless
#: ``--clip-percentile`` says otherwise (every quantised ANN trained before the option existed: 99.9).
CLIP_PERCENTILE = 99.9

#: The shipped models a user picks by name: the default SNN ("snn"), each SNN by its latency, the ANN.
#: "snn-t32" is the paper's path (balanced at T = 200, fine-tuned at T = 32); "snn-t8" the low-latency
#: path (quantised-clip ANN converted from its clips, fine-tuned at T = 8; docs/models.md).
MODEL_CHOICES = ("snn", "snn-t8", "snn-t32", "ann")
#: What an SNN's first layer can receive (SpikingUNet.input_encoding; hipposnn.encoding draws each).
INPUT_ENCODINGS = ("poisson", "direct", "regular")
#: The timesteps each shipped SNN was fine-tuned at (its model file says the same: tests/test_options.py).
MODEL_TIMESTEPS = {"snn-t8": 8, "snn-t32": 32}
#: What "snn" means on MSD-like crops (``--roi crop``, ``hipposnn evaluate``) and wherever no scan is
#: segmented (teaching view, training): the SNN the cross-validation supports (ternary T = 32: CV 0.9047).
DEFAULT_SNN = "snn-t32"
#: What "snn" means on whole-brain scans: the binary low-latency SNN (direct input, distilled from its
#: quantised ANN) was chosen ahead of the binary T = 32 SNN on the FreeSurfer cases (0.801 vs 0.785) and IXI
#: (0.807 vs 0.800), 0.004 behind on LPBA40 (0.593 vs 0.597), at a quarter of the timesteps
#: (tools/eval_sets.py; docs/segmentation.md, "The whole-brain default"); retrained since with thicker slices in
#: its augmentation (0.795 / 0.812 / 0.602) and then with its clips starting at the 90th percentile: 0.801 / 0.819 /
#: 0.603 (docs/results/wholebrain_eval/table_snn-t8_binary.md).
WHOLE_BRAIN_SNN = "snn-t8"


def is_whole_brain(roi: object) -> bool:
    """Whether a segmentation's ROI mode means a whole-brain scan ("auto" or a centre point), not a crop.

    ``None`` means no scan (teaching, training, model files by name): not a whole brain."""
    return roi is not None and not (isinstance(roi, str) and roi == "crop")


def resolve_choice(choice: str, roi: object = None) -> str:
    """The shipped variant a model name stands for, or a one-line error.

    "snn" is :data:`WHOLE_BRAIN_SNN` for a whole-brain ``roi`` ("auto" or a point) and :data:`DEFAULT_SNN`
    for a crop or no scan (``roi`` None)."""
    if choice not in MODEL_CHOICES:
        raise HippoSNNError(f"unknown model {choice!r} (choose {', '.join(MODEL_CHOICES)})")
    if choice != "snn":
        return choice
    return WHOLE_BRAIN_SNN if is_whole_brain(roi) else DEFAULT_SNN


#: The coding of the SNNs that segment whole-brain scans by default (any ROI mode but "crop"). The
#: site-robust binary SNNs are ahead of the ternary ones on every labelled whole-brain set
#: (tools/eval_sets.py, docs/segmentation.md; T = 32: IXI 0.800 vs 0.677 with 0 vs 8 failures, LPBA40
#: 0.597 vs 0.534, FreeSurfer 0.785 vs 0.763; T = 8, IXI / LPBA40 / FreeSurfer: 0.807 / 0.593 / 0.801 vs
#: 0.711 / 0.571 / 0.770 for the ternary T = 8 SNN shipped until 2026-12-07, 0.635 / 0.499 / 0.749 for the
#: direct-input one since, which leads the old one on crops: docs/models.md),
#: while on MSD-like crops the ternary one stays ahead (validation 0.8982 vs 0.8950; cross-validation
#: of their predecessors 0.9047 vs 0.8973): crops keep DEFAULT_CODING.
WHOLE_BRAIN_SNN_CODING = "binary"
#: Input coding choices of the user interfaces: "auto" is :func:`default_coding` for segmentation and
#: DEFAULT_CODING where a concrete coding is needed (training, the teaching view).
CODING_CHOICES = ("auto", "binary", "ternary")


def default_coding(choice: str, roi: object = "auto") -> str:
    """The spike coding of the shipped model a user gets when they do not choose one.

    ``roi`` is the ROI mode ("auto", "crop" or a centre point): a crop is an MSD-like input, anything
    else a whole-brain scan. Both SNNs take :data:`WHOLE_BRAIN_SNN_CODING` on whole-brain scans; the ANN
    and every model on crops keep DEFAULT_CODING.
    """
    variant = resolve_choice(choice, roi)
    if variant in MODEL_TIMESTEPS and is_whole_brain(roi):
        return WHOLE_BRAIN_SNN_CODING
    return DEFAULT_CODING


def coding_notice(choice: str, coding: Optional[str], roi: object, custom: bool = False) -> Optional[str]:
    """A warning for a shipped SNN asked to run in the coding that is behind on the input's kind, else None.

    The ternary SNNs were trained and chosen for MSD-like crops; on whole-brain scans the binary ones lead on
    every labelled set (:data:`WHOLE_BRAIN_SNN_CODING`). A user who picks ternary there gets what they asked
    for, with this line in the result's warnings (CLI, JSON, Slicer log) rather than a silent loss. A custom
    file (``custom``) is the user's own: no notice.
    """
    if custom or coding != "ternary" or model_kind(choice) != "snn" or not is_whole_brain(roi):
        return None
    return ("ternary SNNs are made for MSD-like crops: on whole-brain scans the binary SNNs (the default coding) "
            "segment better on every labelled set (docs/segmentation.md, 'The whole-brain default')")


def interface_coding(choice: str, concrete: bool = False) -> Optional[str]:
    """A :data:`CODING_CHOICES` value as the core takes it: "auto" is None (segmentation picks
    :func:`default_coding`) or, with ``concrete``, DEFAULT_CODING (training, teaching)."""
    if choice not in CODING_CHOICES:
        raise HippoSNNError(f"unknown coding {choice!r} (choose {', '.join(CODING_CHOICES)})")
    if choice == "auto":
        return DEFAULT_CODING if concrete else None
    return choice


def model_kind(choice: str) -> str:
    """'snn' or 'ann': what the model a user picked by name is."""
    return "ann" if resolve_choice(choice) == "ann" else "snn"


#: Files of a training run folder; the first three mean a run is there (finished or interrupted).
RUN_FILES = ("last.pt", "best.pt", "final.pt", "log.json", "log.csv", "settings.json")


def existing_run_files(folder: object) -> List[str]:
    """Checkpoints of a training run already in ``folder``: replacing them needs the user's consent
    (``--overwrite`` on the command line, a question in Slicer)."""
    out = Path(str(folder)).expanduser()
    return [name for name in RUN_FILES[:3] if (out / name).exists()]


def validate_threshold(value: object) -> float:
    """The threshold as a float; :class:`HippoSNNError` unless it lies strictly between 0 and 1."""
    try:
        threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HippoSNNError(f"threshold must be a number between 0 and 1, got {value!r}") from None
    if not (math.isfinite(threshold) and 0.0 < threshold < 1.0):
        raise HippoSNNError(f"threshold must lie strictly between 0 and 1, got {value}")
    return threshold


def check_device(device: Optional[str]) -> str:
    """The device name ('auto' for None or ''); :class:`HippoSNNError` for a name no run could use."""
    name = "auto" if device in (None, "") else str(device)
    if name not in DEVICES and not name.startswith("cuda:"):
        raise HippoSNNError(f"Unknown device '{name}': use cpu, cuda or auto")
    return name


def _torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: Optional[str] = "cpu", cuda_available: Optional[Callable[[], bool]] = None) -> str:
    """'auto' (or None) picks CUDA when a CUDA GPU is usable, else the CPU; 'cpu' stays.

    Asking for 'cuda' (or 'cuda:N') without a usable GPU is a user error, not a silent fallback: a run
    that the user asked to put on the GPU would otherwise take many times longer without saying why.
    ``cuda_available`` replaces the torch query (tests, callers that already know).
    """
    name = check_device(device)
    if name == "cpu":
        return name
    available = (cuda_available or _torch_cuda_available)()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise HippoSNNError("CUDA was requested but no CUDA GPU is available: use device cpu or auto")
    return name
