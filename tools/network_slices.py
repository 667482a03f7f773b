"""The slices the network sees when ``hipposnn segment`` segments a scan: one helper for the probes.

``tools/probe_input_encoding.py`` and ``tools/time_snn_batch.py`` rerun networks on exactly the ROI slices
of a real segmentation (boxes, framing, normalisation and context as the product makes them). Rather than
copy that preparation, the segmentation runs once and its network input is kept at the call into the network.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HippoSNN"))

import hipposnn.inference as inference  # noqa: E402


def network_slices(image: Any, settings: inference.SegmentationSettings) -> Tuple[np.ndarray, Any, int]:
    """Segment ``image`` with ``settings`` and return its network input: (slices [N, C, H, W], the loaded
    model, the timesteps it ran at). The hook is removed again before returning."""
    seen: Dict[str, Any] = {}
    original = inference.predict_slices_safe

    def keep(model, images, **kwargs):
        if "images" not in seen:  # the first call is the segmenting network (the QC twin comes after)
            seen.update(images=images.copy(), model=model, timesteps=kwargs["timesteps"])
        return original(model, images, **kwargs)

    inference.predict_slices_safe = keep
    try:
        inference.segment_image(image, settings)
    finally:
        inference.predict_slices_safe = original
    return seen["images"], seen["model"], int(seen["timesteps"])
