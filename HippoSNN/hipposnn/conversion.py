"""Early-stop ANN -> SNN conversion by threshold balancing (Sengupta et al. 2019, "spike-norm").

Layer by layer in network order, the SNN (earlier layers already balanced) runs on training slices
for T steps, and the layer's threshold becomes the largest input current seen at that layer over
all steps and neurons (``percentile=None``) or a high percentile of its positive currents, times
``scale``. "Early stop" means a small T (200 in the paper) instead of the thousands of steps a full
conversion needs.

Because a layer's input current does not depend on its own threshold, one multi-step forward pass
over all T steps balances every layer: the pass pauses at each layer, sets its threshold from the
currents it is about to integrate, then lets its neurons fire. The scale is applied as each layer is
balanced (as in Rathi et al.'s code), so later layers see the scaled earlier ones.

Memory: the pass holds one layer's currents for all ``T x slices`` at once, about
``4 * T * slices * 16 * 56 * 48`` bytes for the widest layer (1.1 GB at T = 200, 32 slices).

An ANN trained with a quantised clip (:mod:`hipposnn.quant`) needs no balancing:
:func:`convert_from_clip` takes its thresholds from the learned clips.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from .encoding import make_generator
from .errors import Cancelled
from .unet import LayerDef, SpikingUNet, UNet

MAX_SAMPLES = 4_000_000


def _positive_percentile(current: Tensor, percentile: float, generator: torch.Generator) -> float:
    """Percentile of the positive entries of ``current`` (subsampled when there are very many)."""
    flat = current.reshape(-1)
    pos = flat[flat > 0]
    if pos.numel() == 0:
        return 0.0
    if pos.numel() > MAX_SAMPLES:
        idx = torch.randint(0, pos.numel(), (MAX_SAMPLES,), generator=generator, device=pos.device)
        pos = pos[idx]
    k = max(1, int(round(percentile / 100.0 * pos.numel())))
    return float(pos.kthvalue(min(k, pos.numel())).values)


@torch.no_grad()
def balance_thresholds(
    snn: SpikingUNet,
    images: np.ndarray,
    timesteps: int = 200,
    scale: float = 0.7,
    percentile: Optional[float] = None,
    coding: str = "binary",
    seed: int = 0,
    log: Optional[Callable[[str, float, float], None]] = None,
    device: str = "cpu",
    progress: Optional[Callable[[float, str], bool]] = None,
) -> Dict[str, float]:
    """Set every hidden layer's threshold of ``snn`` from a run on ``images`` (N, C, H, W).

    Returns the thresholds. ``log(layer, raw_statistic, threshold)`` is told each layer's result.
    ``progress(fraction, message)`` is called after each balanced layer; returning False stops with
    :class:`~hipposnn.errors.Cancelled` (the network is then left half balanced: discard it).
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    if percentile is not None and not 0 < percentile <= 100:
        raise ValueError("percentile must be in (0, 100]")
    snn.eval()
    snn.to(device)
    gen = make_generator(seed, torch.device(device))
    sample_gen = make_generator(seed + 1, torch.device(device))
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    spikes = snn.encode(x, timesteps, gen, coding)
    names = list(snn.threshold_dict())
    for name in names:
        snn.set_threshold(name, 1.0)
    done = []

    def hook(layer: LayerDef, current: Tensor) -> None:
        if percentile is None:
            raw = float(current.max())
        else:
            raw = _positive_percentile(current, percentile, sample_gen)
        # a silent layer keeps a unit threshold rather than a zero one
        theta = raw * scale if raw > 0 else 1.0
        snn.set_threshold(layer.name, theta)
        if log is not None:
            log(layer.name, raw, theta)
        done.append(layer.name)
        if progress is not None and progress(len(done) / max(1, len(names)), f"balanced {layer.name}") is False:
            raise Cancelled("conversion cancelled")

    snn(spikes, current_hook=hook)
    return snn.threshold_dict()


def convert(
    ann: UNet,
    images: np.ndarray,
    timesteps: int = 200,
    scale: float = 0.7,
    percentile: Optional[float] = None,
    coding: str = "binary",
    seed: int = 0,
    output_scaling: str = "mean",
    log: Optional[Callable[[str, float, float], None]] = None,
    device: str = "cpu",
    progress: Optional[Callable[[float, str], bool]] = None,
    reset: str = "subtract",
    input_encoding: str = "poisson",
) -> SpikingUNet:
    """Early-stop conversion: a spiking twin of ``ann`` with balanced thresholds (``progress``: see above)."""
    snn = SpikingUNet.from_ann(ann, output_scaling=output_scaling, reset=reset, input_encoding=input_encoding)
    balance_thresholds(snn, images, timesteps, scale, percentile, coding, seed, log, device, progress)
    return snn


#: Start potential of clip conversion, as a fraction of the threshold: the "shift" of clip-floor-shift.
CLIP_SHIFT = 0.5


def convert_from_clip(
    ann: UNet, output_scaling: str = "mean", reset: str = "subtract", input_encoding: str = "poisson"
) -> SpikingUNet:
    """Conversion of a quantised-clip ANN (:mod:`hipposnn.quant`): no simulation, no data.

    Each hidden layer's threshold is its learned clip and its membrane starts at half the threshold,
    so an IF neuron run for ``T = L`` steps on a constant current emits the ANN's quantised level
    (reset by subtraction). ``reset="zero"`` gives the hard-reset variant of the same network;
    ``input_encoding`` chooses the first layer's input (Poisson, regular or direct; see :class:`SpikingUNet`).
    """
    if ann.spec.quant_levels <= 0:
        raise ValueError("conversion from the clip needs an ANN trained with quantisation levels (--quant-levels)")
    snn = SpikingUNet.from_ann(ann, output_scaling=output_scaling, initial_membrane=CLIP_SHIFT, reset=reset,
                               input_encoding=input_encoding)
    for name, clip in ann.clip_dict().items():
        snn.set_threshold(name, clip)
    return snn
