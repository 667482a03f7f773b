"""Dice scores, spike statistics and the energy estimate that every reported Dice comes with.

2D Dice is computed per slice over the slices where the ground truth or the prediction contains
hippocampus (a slice empty in both has no defined Dice and is left out); 3D Dice per volume.

Energy follows the common 45 nm CMOS convention (Horowitz 2014, as used by Rathi et al. 2020):
a multiply-accumulate (ANN) costs 4.6 pJ, an accumulate (SNN synaptic operation) 0.9 pJ. Only the
arithmetic of the weighted layers is counted: no memory access, no neuron update, no pooling; the
SNN's first layer is fed Poisson spikes, so it costs accumulates too.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

MAC_PJ = 4.6
AC_PJ = 0.9


def dice(pred: np.ndarray, truth: np.ndarray, empty: float = 1.0) -> float:
    """Dice of two binary arrays; ``empty`` when both are empty."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return empty
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def slice_dice(pred: np.ndarray, truth: np.ndarray, axis: int = 0) -> List[float]:
    """Per-slice Dice along ``axis`` for slices where either array is non-empty."""
    p = np.moveaxis(np.asarray(pred, dtype=bool), axis, 0)
    t = np.moveaxis(np.asarray(truth, dtype=bool), axis, 0)
    out = []
    for ps, ts in zip(p, t):
        if ps.any() or ts.any():
            out.append(dice(ps, ts))
    return out


def mean_sd(values: Sequence[float]) -> Dict[str, float]:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def ann_macs(layers, spec, height: int, width: int) -> Dict[str, float]:
    """Multiply-accumulates per slice of each ANN layer (a pooled input counts at pooled size)."""
    macs: Dict[str, float] = {}
    sizes = {"input": (height, width)}
    for layer in layers:
        h, w = sizes[layer.inputs[0]]
        if layer.pool:
            h, w = h // 2, w // 2
        if layer.kind == "up":
            macs[layer.name] = float(layer.in_channels * layer.out_channels * 4 * h * w)
            h, w = 2 * h, 2 * w
        else:
            k = 1 if layer.kind == "out" else spec.kernel_size
            macs[layer.name] = float(layer.in_channels * layer.out_channels * k * k * h * w)
        sizes[layer.name] = (h, w)
    return macs


def energy_pj(macs: float = 0.0, accumulates: float = 0.0) -> float:
    return macs * MAC_PJ + accumulates * AC_PJ
