"""What the teaching view shows for one slice: spikes in, spikes inside, probability out, energy.

The 3D Slicer module (and a notebook) call :func:`teaching_view` on one sagittal slice of a
hippocampus ROI and display the numbers it returns; nothing here imports Slicer or Qt.

* :func:`input_spike_trains` - the spike train that the network's input layer receives (Poisson, or
  the regular spikes of a model that takes them), for binary coding (intensities in [0, 1] give spikes
  {0, 1}) and ternary coding (zero-mean intensities in [-1, 1] give spikes {-1, 0, +1}), drawn with the
  same seed so that the two can be compared side by side.
* :func:`probability_trace` - the output probability after every timestep t = 1..T: the SNN's output
  layer integrates current over time, so its estimate starts noisy and settles as T grows.
* :func:`energy_comparison` - synaptic operations (accumulates) of the SNN against the
  multiply-accumulates of the equivalent ANN for the same slice, with the 45 nm energy estimate of
  :mod:`hipposnn.metrics` (4.6 pJ per MAC, 0.9 pJ per accumulate).

All randomness comes from ``seed``: the same call gives the same spikes and the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from . import DEFAULT_CODING
from .data import normalise, to_slices
from .encoding import CODINGS, InputStream, make_generator
from .metrics import AC_PJ, MAC_PJ, ann_macs, energy_pj
from .simulate import snn_logits
from .unet import SpikeStats, SpikingUNet

#: Default number of timesteps shown (the shipped SNN is evaluated at T = 32).
DEFAULT_TIMESTEPS = 32


@dataclass
class TeachingView:
    """Everything the teaching view displays for one slice (numpy arrays, plain dicts).

    ``image``: the normalised input slice (H, W) for ``coding``. ``input_spikes``: coding -> (T, H, W)
    int8 spike trains. ``probability``: (T, H, W) float32, the output probability after t+1 steps.
    ``firing_rates``: layer -> spikes per neuron per timestep. ``synops``: layer -> accumulates for
    the slice over all T steps. ``macs``: layer -> ANN multiply-accumulates for the slice.
    ``energy``: totals in pJ and their ratio (see :func:`energy_comparison`). ``input_encoding``: what
    the model's first layer receives (:data:`hipposnn.options.INPUT_ENCODINGS`); for ``"direct"`` (the
    image itself at every step) ``input_spikes`` illustrate rate coding, they are not what the model saw.
    """

    slice_index: int
    coding: str
    timesteps: int
    seed: int
    image: np.ndarray
    input_spikes: Dict[str, np.ndarray]
    probability: np.ndarray
    firing_rates: Dict[str, float]
    synops: Dict[str, float]
    macs: Dict[str, float]
    energy: Dict[str, float]
    layer_order: List[str] = field(default_factory=list)
    input_encoding: str = "poisson"

    def summary(self) -> Dict[str, Any]:
        """JSON-ready numbers (no arrays): what a report or a table node shows."""
        final = self.probability[-1]
        return {
            "slice_index": self.slice_index,
            "coding": self.coding,
            "timesteps": self.timesteps,
            "seed": self.seed,
            "input_encoding": self.input_encoding,
            "firing_rates": {k: float(self.firing_rates[k]) for k in self.layer_order if k in self.firing_rates},
            "mean_input_spikes_per_pixel": {k: float(np.abs(v).sum(0).mean()) for k, v in self.input_spikes.items()},
            "foreground_pixels_final": int((final > 0.5).sum()),
            "energy": dict(self.energy),
        }


def normalised_slices(
    roi_volume: np.ndarray, coding: str, context: int = 0, valid: Optional[np.ndarray] = None
) -> np.ndarray:
    """Normalise an ROI volume (24, 56, 48) for ``coding`` and cut it into network inputs (N, C, H, W).

    ``valid``: voxels with image content (``inference.model_inputs``), as segmentation uses them.
    """
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    volume = np.asarray(roi_volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D ROI volume, got shape {volume.shape}")
    return to_slices(normalise(volume, coding, valid=valid), context)


def input_spike_trains(
    roi_volume: np.ndarray,
    slice_index: int,
    timesteps: int = DEFAULT_TIMESTEPS,
    seed: int = 0,
    valid: Optional[np.ndarray] = None,
    encoding: str = "poisson",
) -> Dict[str, np.ndarray]:
    """Input spike trains (T, H, W) of one slice for binary and ternary coding, as int8.

    Each coding normalises the volume its own way (binary: [0, 1]; ternary: zero mean, [-1, 1]),
    then each pixel fires with probability |x| per step carrying sign(x) (``encoding="poisson"``), or
    evenly spaced at that rate from a random phase (``"regular"``). Same seed for both codings.
    """
    _check_steps(timesteps)
    if encoding not in ("poisson", "regular"):
        raise ValueError(f"input spikes are drawn 'poisson' or 'regular', not {encoding!r}")
    out: Dict[str, np.ndarray] = {}
    for coding in CODINGS:
        slices = normalised_slices(roi_volume, coding, valid=valid)
        _check_index(slice_index, len(slices))
        x = torch.from_numpy(np.ascontiguousarray(slices[slice_index : slice_index + 1, 0]))
        spikes = InputStream(x, make_generator(seed), coding, encoding)(timesteps)
        out[coding] = spikes[:, 0].numpy().astype(np.int8)
    return out


@torch.no_grad()
def probability_trace(
    model: SpikingUNet,
    slice_input: np.ndarray,
    timesteps: int = DEFAULT_TIMESTEPS,
    coding: str = DEFAULT_CODING,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    stats: Optional[SpikeStats] = None,
) -> np.ndarray:
    """Output probability (T, H, W) after each of ``timesteps`` steps for one input (C, H, W).

    Runs the SNN one step at a time (``chunk=1``), so entry t is exactly what a run stopped after
    t+1 steps would output. ``stats`` (optional) collects firing rates and synaptic operations.
    """
    _check_steps(timesteps)
    x = np.asarray(slice_input, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected one slice input (C, H, W), got shape {x.shape}")
    model.eval()
    model.to(device)
    trace: List[torch.Tensor] = []
    tensor = torch.from_numpy(np.ascontiguousarray(x[None])).to(device)
    snn_logits(model, tensor, timesteps, make_generator(seed, torch.device(device)), coding, 1, stats, trace)
    return torch.sigmoid(torch.cat(trace, 0)[:, 0]).cpu().numpy().astype(np.float32)


def energy_comparison(model: SpikingUNet, stats: SpikeStats, height: int, width: int) -> Dict[str, float]:
    """SNN accumulates vs ANN multiply-accumulates per slice, and the estimated energies in pJ.

    ``stats`` must come from a run on single slices of ``height`` x ``width`` (it is divided by the
    number of samples it saw). ``ratio`` is ANN energy / SNN energy (> 1: the SNN needs less).
    """
    synops = sum(stats.synops_per_sample().values())
    macs = sum(ann_macs(model.layers, model.spec, height, width).values())
    # a direct input's first layer multiplies (once per slice); every other synapse only accumulates
    snn = energy_pj(macs=sum(stats.macs_per_sample().values()), accumulates=synops)
    ann = energy_pj(macs=macs)
    return {
        "snn_synops": float(synops),
        "ann_macs": float(macs),
        "snn_energy_pj": float(snn),
        "ann_energy_pj": float(ann),
        "ratio_ann_to_snn": float(ann / snn) if snn > 0 else float("inf"),
        "mac_pj": MAC_PJ,
        "ac_pj": AC_PJ,
        "timesteps": float(stats.timesteps),
    }


def teaching_view(
    model: SpikingUNet,
    roi_volume: np.ndarray,
    slice_index: int,
    timesteps: int = DEFAULT_TIMESTEPS,
    coding: str = DEFAULT_CODING,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    valid: Optional[np.ndarray] = None,
) -> TeachingView:
    """Compute the teaching view of sagittal slice ``slice_index`` of an ROI volume (model grid, raw intensities).

    ``valid``: the ROI's content mask from ``inference.model_inputs``, so the view shows exactly the
    input the segmentation used.
    """
    if not isinstance(model, SpikingUNet):
        raise TypeError("the teaching view needs the spiking network (an SNN model)")
    slices = normalised_slices(roi_volume, coding, model.spec.context, valid)
    _check_index(slice_index, len(slices))
    stats = SpikeStats()
    probability = probability_trace(model, slices[slice_index], timesteps, coding, seed, device, stats)
    height, width = probability.shape[1:]
    order = [layer.name for layer in model.layers]
    return TeachingView(
        slice_index=int(slice_index),
        coding=coding,
        timesteps=int(timesteps),
        seed=int(seed),
        image=np.ascontiguousarray(slices[slice_index, model.spec.context]),
        # what this model's input layer receives; a direct-input model gets the image (input_encoding says so),
        # and the spike trains then illustrate rate coding
        input_spikes=input_spike_trains(roi_volume, slice_index, timesteps, seed, valid,
                                        "regular" if model.input_encoding == "regular" else "poisson"),
        probability=probability,
        firing_rates=stats.firing_rates(),
        synops=stats.synops_per_sample(),
        macs=ann_macs(model.layers, model.spec, height, width),
        energy=energy_comparison(model, stats, height, width),
        layer_order=order,
        input_encoding=model.input_encoding,
    )


def _check_steps(timesteps: int) -> None:
    if int(timesteps) < 1:
        raise ValueError("timesteps must be >= 1")


def _check_index(index: int, count: int) -> None:
    if not 0 <= int(index) < count:
        raise ValueError(f"slice index {index} outside 0..{count - 1}")
