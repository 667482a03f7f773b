"""Poisson rate coding of normalised images into binary or ternary spike trains.

Each timestep a pixel with value ``x`` emits a spike with probability ``|x|``, carrying ``sign(x)``.
Inputs in [0, 1] give binary spikes {0, 1}; zero-mean inputs in [-1, 1] give ternary spikes
{-1, 0, 1}. The expected spike equals the input, which is what lets the converted network's first
layer see the ANN's input on average.

All randomness comes from an explicit ``torch.Generator``: the same seed gives the same spikes, and
drawing a run in chunks of timesteps gives the same spikes as drawing it at once.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

CODINGS = ("binary", "ternary")


def make_generator(seed: int, device: Optional[torch.device] = None) -> torch.Generator:
    gen = torch.Generator(device=device if device is not None else "cpu")
    gen.manual_seed(int(seed))
    return gen


def poisson_spikes(x: Tensor, timesteps: int, generator: torch.Generator, coding: str = "binary") -> Tensor:
    """Spike train ``[T, *x.shape]`` for images ``x`` (values in [0,1] or [-1,1])."""
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    if coding == "binary" and float(x.min()) < 0:
        raise ValueError("binary coding needs inputs in [0, 1]; use ternary coding for signed inputs")
    rand = torch.rand((timesteps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    magnitude = x.abs().clamp(max=1.0)
    spikes = (rand < magnitude).to(x.dtype)
    if coding == "ternary":
        spikes.mul_(torch.sign(x))
    return spikes
