"""Whether the network could skip the columns of each ROI slice that the training frame leaves at zero.

A whole-brain ROI slice is 56 x 48 voxels, but only the training frame (``inference.FRAME_SHAPE``, 50 x 35) holds
tissue: the rest is zeros, as in the zero-padded MSD crops the network learnt from. Cutting the slices to the
smallest window of multiples of 8 that holds the frame (all 56 rows, 40 of the 48 columns) would spend a sixth less
network time, and would be free if those zero columns did not change the answer. This probe measures that: per scan
it segments as ``hipposnn segment`` does (default model), keeps the slices the network sees
(``tools/network_slices.py``), runs the network on the whole slices and on the window, pastes the window's answer
back, and compares the two masks (Dice of the cut against the whole, voxels, foreground the window cannot hold).

    python tools/probe_network_window.py --limit 5 --json docs/results/network_window.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_sets as ev  # noqa: E402
from network_slices import network_slices  # noqa: E402

#: Network input sizes must be multiples of 8 (three 2x2 poolings).
MULTIPLE = 8


def frame_window(shape: Tuple[int, int]) -> Tuple[slice, slice]:
    """The smallest rows x columns window, each a multiple of :data:`MULTIPLE`, that holds the training frame,
    centred on it and inside the slice."""
    from hipposnn.inference import training_window

    keep = training_window((1,) + tuple(shape))[0]
    window = []
    for axis, size in enumerate(shape):
        used = np.flatnonzero(keep.any(axis=1 - axis))
        lo, hi = int(used[0]), int(used[-1]) + 1
        width = min(size, -(-(hi - lo) // MULTIPLE) * MULTIPLE)
        start = min(max(0, lo - (width - (hi - lo)) // 2), size - width)
        window.append(slice(start, start + width))
    return window[0], window[1]


def probe(case: ev.Case, threads: int) -> Dict[str, Any]:
    from hipposnn.inference import SegmentationSettings
    from hipposnn.io import load_image
    from hipposnn.simulate import predict_slices

    x, model, steps = network_slices(load_image(case.image), SegmentationSettings(threads=threads))
    rows, cols = frame_window(x.shape[-2:])
    outside = np.ones(x.shape[-2:], dtype=bool)
    outside[rows, cols] = False
    run = dict(timesteps=steps, batch_size=len(x), chunk=1)
    whole = predict_slices(model.network, x, **run)
    cut = np.zeros_like(whole)
    cut[..., rows, cols] = predict_slices(model.network, np.ascontiguousarray(x[..., rows, cols]), **run)
    a, b = whole > 0.5, cut > 0.5
    return {
        "window": [rows.start, rows.stop, cols.start, cols.stop],
        "input_outside_window_max": float(np.abs(x[..., outside]).max()),
        "voxels_whole": int(a.sum()), "voxels_window": int(b.sum()),
        "foreground_outside_window": int(a[..., outside].sum()),
        "dice_window_vs_whole": round(float(2 * (a & b).sum() / max(1, a.sum() + b.sum())), 4),
        "probability_change_max": round(float(np.abs(whole - cut).max()), 4),
    }


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N scans of each set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    report = ev.start_report("tools/probe_network_window.py")
    for cases in ev.list_cases(args.data, limit=args.limit).values():
        for case in cases:
            report["cases"][case.key] = result = probe(case, args.threads)
            print(case.key, json.dumps(result), flush=True)
    dice = [c["dice_window_vs_whole"] for c in report["cases"].values()]
    ratio = [c["voxels_window"] / max(1, c["voxels_whole"]) for c in report["cases"].values()]
    report["summary"] = {"scans": len(dice), "dice_window_vs_whole_mean": round(float(np.mean(dice)), 4),
                         "dice_window_vs_whole_min": round(float(np.min(dice)), 4),
                         "voxel_ratio_mean": round(float(np.mean(ratio)), 4)}
    print(json.dumps(report["summary"], indent=1))
    ev.finish_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
