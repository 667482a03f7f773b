"""Quality control without ground truth: a verdict per hippocampus, with its reasons, and comparable volumes.

A wrong result must say so. Each side gets ``quality`` "good" or "poor" and the list of ``reasons``
from checks that need no labels:

* the registration's own warnings for that side (implausible template scaling, a local refinement that
  moved far from the global estimate, a weak local match; :func:`hipposnn.roi.register_to_template`);
* the prediction touches the ROI border (the box probably cut the hippocampus);
* an implausible volume (missed or misplaced box, or a network that found little);
* low network confidence: many voxels of the prediction are undecided (probability 0.2-0.8);
* disagreement between the spiking network and its ANN twin (a cheap second opinion, ~0.1 s);
* disagreement between the two sides (one hippocampus far smaller than the other).

Thresholds are deliberately loose (the measured distributions are in docs/segmentation.md): a healthy
asymmetry or an atrophic hippocampus must not be flagged, while the failures seen on other sites'
scans (a few hundred mm^3, a box in the neck, a network that sees an unfamiliar contrast) are.

Volumes users can compare: an estimated total intracranial volume (eTIV) from the determinant of the
global template-to-scan affine, as FreeSurfer's eTIV is derived from its Talairach transform, times the
intracranial volume of the template (the ICBM 2009a brain mask, 1.887 L at 1 mm); volumes normalised by
it; and a left-right asymmetry index.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

#: Volume range (mm^3) of one hippocampus accepted as plausible (adult MSD-protocol volumes 2000-5000).
MIN_PLAUSIBLE_MM3 = 1000.0
MAX_PLAUSIBLE_MM3 = 8000.0
#: Fraction of a side's predicted voxels on the ROI border above which the box probably cut it.
MAX_BORDER_FRACTION = 0.02
#: Undecided voxels (probability in 0.2..0.8) per predicted voxel above which the network is unsure.
MAX_UNDECIDED_FRACTION = 0.6
#: Dice between the SNN's and its ANN twin's masks below which the two disagree.
MIN_TWIN_AGREEMENT = 0.75
#: |asymmetry index| above which the smaller side is suspect (healthy adults: |AI| < 0.1-0.15).
MAX_ABS_ASYMMETRY = 0.45
#: Intracranial volume of the ICBM 2009a template (voxels of its brain mask, 1 mm grid), mm^3.
TEMPLATE_ICV_MM3 = 1_886_539.0


def border_fraction(mask: np.ndarray) -> float:
    """Fraction of the mask's voxels on the outer faces of its grid."""
    n = int(mask.sum())
    if n == 0:
        return 0.0
    border = np.zeros(mask.shape, dtype=bool)
    border[[0, -1], :, :] = True
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    return float((mask & border).sum()) / n


def undecided_fraction(prob: np.ndarray, threshold: float) -> float:
    """Voxels with probability in [0.2, 0.8] per voxel above ``threshold`` (1.0 when nothing is found)."""
    n = int((prob > threshold).sum())
    if n == 0:
        return 1.0
    return float(((prob >= 0.2) & (prob <= 0.8)).sum()) / n


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def side_qc(
    side: str,
    roi_prob: np.ndarray,
    volume_mm3: float,
    threshold: float,
    registration_warnings: Sequence[str] = (),
    twin_prob: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Numbers and verdict of one side; ``twin_prob`` is the ANN twin's ROI probability (SNN runs)."""
    fg = roi_prob > threshold
    reasons: List[str] = list(registration_warnings)
    border = border_fraction(fg)
    undecided = undecided_fraction(roi_prob, threshold)
    if not MIN_PLAUSIBLE_MM3 <= volume_mm3 <= MAX_PLAUSIBLE_MM3:
        reasons.append(f"implausible volume {volume_mm3:.0f} mm3")
    if border > MAX_BORDER_FRACTION:
        reasons.append(f"touches the ROI border ({100 * border:.0f} % of its voxels)")
    if undecided > MAX_UNDECIDED_FRACTION:
        reasons.append(f"low network confidence ({100 * undecided:.0f} % undecided voxels)")
    agreement = None
    if twin_prob is not None:
        agreement = mask_dice(fg, twin_prob > threshold)
        if agreement < MIN_TWIN_AGREEMENT:
            reasons.append(f"spiking and ANN networks disagree (Dice {agreement:.2f})")
    return {
        "quality": "poor" if reasons else "good",
        "reasons": reasons,
        "volume_mm3": float(volume_mm3),
        "border_fraction": border,
        "undecided_fraction": undecided,
        "twin_agreement": agreement,
        # kept for readers of earlier JSON files: True when the volume and border checks passed
        "plausible": MIN_PLAUSIBLE_MM3 <= volume_mm3 <= MAX_PLAUSIBLE_MM3 and border <= MAX_BORDER_FRACTION,
    }


def asymmetry_index(volumes: Mapping[str, float]) -> Optional[float]:
    """(left - right) / mean of the two; None unless both sides were segmented and are non-empty."""
    if "right" not in volumes or "left" not in volumes:
        return None
    right, left = float(volumes["right"]), float(volumes["left"])
    if right + left <= 0:
        return None
    return (left - right) / ((left + right) / 2.0)


def compare_sides(sides: Dict[str, Dict[str, Any]], volumes: Mapping[str, float]) -> Optional[float]:
    """Flag the smaller side when the two differ far more than hippocampi do; returns the index."""
    index = asymmetry_index(volumes)
    if index is not None and abs(index) > MAX_ABS_ASYMMETRY:
        smaller = "right" if index > 0 else "left"
        other = "left" if smaller == "right" else "right"
        ratio = 100.0 * volumes[smaller] / max(volumes[other], 1e-9)
        sides[smaller]["reasons"].append(f"{ratio:.0f} % of the {other} side's volume")
        sides[smaller]["quality"] = "poor"
    return index


def etiv_mm3(template_to_image: np.ndarray) -> float:
    """Estimated total intracranial volume: |det| of the global affine times the template's ICV."""
    return float(abs(np.linalg.det(np.asarray(template_to_image, dtype=np.float64)[:3, :3])) * TEMPLATE_ICV_MM3)


def overall(sides: Mapping[str, Mapping[str, Any]], registration_quality: Optional[str]) -> str:
    """"poor" when any side is poor or the registration as a whole is."""
    if registration_quality not in (None, "good"):
        return "poor"
    return "poor" if any(s["quality"] != "good" for s in sides.values()) else "good"
