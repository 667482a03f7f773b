"""Names, colours and standard terminology codes of the segments HippoSNN creates.

Codes are those of 3D Slicer's DICOM master terminology
(``SegmentationCategoryTypeModifier-DICOM-Master.json``): category SCT 123037004 "Anatomical
Structure", type SCT 5366008 "Hippocampus", modifiers SCT 24028007 "Right" and SCT 7771000 "Left".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

CATEGORY = ("SCT", "123037004", "Anatomical Structure")
HIPPOCAMPUS = ("SCT", "5366008", "Hippocampus")
MODIFIERS: Dict[str, Tuple[str, str, str]] = {
    "right": ("SCT", "24028007", "Right"),
    "left": ("SCT", "7771000", "Left"),
}
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
#: Label values in :class:`hipposnn.inference.SegmentationResult` labels.
LABEL_VALUES = {"right": 1, "left": 2}
#: Slicer's hippocampus colour (GenericAnatomyColors, 220 216 20), slightly different per side.
COLORS: Dict[str, Tuple[float, float, float]] = {
    "right": (220 / 255.0, 216 / 255.0, 20 / 255.0),
    "left": (200 / 255.0, 170 / 255.0, 20 / 255.0),
}


@dataclass(frozen=True)
class SegmentDefinition:
    side: str
    name: str
    label: int
    color: Tuple[float, float, float]
    terminologyEntry: str


def _code(code: Tuple[str, str, str]) -> str:
    scheme, value, meaning = code
    return f"{scheme}^{value}^{meaning}"


def terminologyEntry(side: str) -> str:
    """The ``Segmentation.Terminology`` tag of a hippocampus segment: 7 parts joined by ``~``.

    Parts: terminology context, category, type, type modifier, anatomic context, anatomic region,
    anatomic region modifier; an empty code is written ``^^`` (the last two are empty: the type itself is
    the anatomy), as in the examples of Slicer's segmentations developer guide.
    """
    if side not in MODIFIERS:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    parts = [
        TERMINOLOGY_CONTEXT,
        _code(CATEGORY),
        _code(HIPPOCAMPUS),
        _code(MODIFIERS[side]),
        ANATOMIC_CONTEXT,
        "^^",
        "^^",
    ]
    return "~".join(parts)


def segmentDefinition(side: str) -> SegmentDefinition:
    """Name ("Right hippocampus"), label value, colour and terminology tag of one side."""
    entry = terminologyEntry(side)
    return SegmentDefinition(
        side=side,
        name=f"{MODIFIERS[side][2]} hippocampus",
        label=LABEL_VALUES[side],
        color=COLORS[side],
        terminologyEntry=entry,
    )
