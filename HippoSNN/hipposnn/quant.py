"""Quantised-clip ANN activation (clip-floor-shift, Bu et al. 2022) for near-lossless low-T conversion.

Why: a ReLU ANN converted with balanced thresholds needs many timesteps (T = 200 in the paper) because
an IF neuron run for T steps can only express ``T + 1`` activation levels and the balancing leaves the
rounding to chance. Training the ANN with an activation that already has those levels removes the
mismatch: with ``L`` levels and a learned clip ``lambda`` per layer::

    y = lambda / L * clamp(floor(x * L / lambda + 0.5), 0, L)

An IF neuron (reset by subtraction) with threshold ``lambda`` whose membrane starts at ``lambda / 2``
(the "shift") and that receives the constant current ``x`` for ``T = L`` steps emits exactly
``clamp(floor(x * L / lambda + 0.5), 0, L)`` spikes, so the converted SNN at ``T = L`` reproduces the
ANN up to the unevenness of spike timing in deeper layers (and the Poisson noise of the input).

The hidden activations of this project's ANN are ReLUs in both codings ("ternary" only describes the
input spikes; hidden spikes stay 0/1), so the activation is the non-negative (one-sided) version.

Gradient: straight-through for the floor, as in the reference implementation, so ``lambda`` learns
from both the clipped region (gradient 1) and the rounding residual inside the range.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from torch import Tensor

from .options import CLIP_PERCENTILE

#: Smallest clip a layer may take: keeps ``x / lambda`` finite if the optimiser drives lambda to 0.
MIN_CLIP = 1e-4


class _FloorSTE(torch.autograd.Function):
    """floor() forward, identity backward (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


def floor_ste(x: Tensor) -> Tensor:
    """``floor(x)`` with a straight-through (identity) gradient."""
    return _FloorSTE.apply(x)


def qcfs(x: Tensor, clip: Tensor, levels: int) -> Tensor:
    """Quantised clip-floor-shift activation: ``clip / L * clamp(floor(x * L / clip + 0.5), 0, L)``.

    ``clip`` is a scalar tensor (learnable); gradients reach ``x`` and ``clip`` through the
    straight-through floor.
    """
    if levels < 1:
        raise ValueError(f"levels must be positive, got {levels}")
    lam = clip.clamp(min=MIN_CLIP)
    y = torch.clamp(x / lam, 0.0, 1.0)
    return floor_ste(y * levels + 0.5) / levels * lam


def check_levels(levels: Optional[int]) -> int:
    """The number of quantisation levels as an int (0: plain ReLU); ValueError for a negative one."""
    value = int(levels or 0)
    if value < 0:
        raise ValueError(f"quantisation levels must be 0 (plain ReLU) or positive, got {levels}")
    return value


def positive_percentile(values: Tensor, percentile: float = CLIP_PERCENTILE, max_samples: int = 2_000_000) -> float:
    """Percentile of the positive entries of ``values`` (0.0 when there are none), subsampled evenly."""
    flat = values.detach().reshape(-1)
    pos = flat[flat > 0]
    if pos.numel() == 0:
        return 0.0
    if pos.numel() > max_samples:
        pos = pos[:: (pos.numel() + max_samples - 1) // max_samples]
    return float(np.percentile(pos.float().cpu().numpy(), percentile))


@torch.no_grad()
def relu_activations(model: torch.nn.Module, batches: Iterable[Tensor]) -> Dict[str, List[Tensor]]:
    """Every hidden layer's activations on ``batches`` as a plain ReLU would give them, one tensor per batch.

    Quantisation is switched off and the model runs in eval mode (no dropout); its training mode is restored.
    The output layer has no activation function and is left out.
    """
    was_training = model.training
    model.eval()
    hidden = {layer.name for layer in model.layers if layer.spiking}
    found: Dict[str, List[Tensor]] = {}
    for x in batches:
        acts: Dict[str, Tensor] = {}
        model(x, activations=acts, quantise=False)
        for name, value in acts.items():
            if name in hidden:
                found.setdefault(name, []).append(value)
    model.train(was_training)
    return found


@torch.no_grad()
def calibrate_clips(
    model: torch.nn.Module, batches: Iterable[Tensor], percentile: float = CLIP_PERCENTILE
) -> Dict[str, float]:
    """Initialise every clip of a quantised :class:`~hipposnn.unet.UNet` from its ReLU activations.

    Why: a warm start from a trained ReLU ANN must begin close to that ANN, so each layer's clip starts
    at a percentile of the activations it would pass unclipped (a percentile rather than the maximum,
    which is an outlier). Where it starts matters more than it seems: with Adam a clip moves by about the
    learning rate per step whatever its size, so clips of 1-180 stay within a few percent of their start
    over a quantised stage, and the start decides how coarsely the L levels cut each layer. The 90th
    percentile loses far less than the 99.9th (docs/models.md, "Where the clips start"). The activations
    are taken with quantisation switched off, in eval mode (no dropout).
    """
    clips = {}
    for name, parts in relu_activations(model, batches).items():
        value = positive_percentile(torch.cat([part.reshape(-1) for part in parts]), percentile)
        clips[name] = value if value > 0 else 1.0
    model.set_clips(clips)
    return clips
