"""Rate coding of normalised images into binary or ternary spike trains, and an SNN's input stream.

Each timestep a pixel with value ``x`` emits a spike with probability ``|x|``, carrying ``sign(x)``.
Inputs in [0, 1] give binary spikes {0, 1}; zero-mean inputs in [-1, 1] give ternary spikes
{-1, 0, 1}. The expected spike equals the input, which is what lets the converted network's first
layer see the ANN's input on average.

All randomness comes from an explicit ``torch.Generator``: the same seed gives the same spikes, and
drawing a run in chunks of timesteps gives the same spikes as drawing it at once.

Besides Poisson spikes, :class:`InputStream` gives the other inputs a :class:`~hipposnn.unet.SpikingUNet`
can take (``INPUT_ENCODINGS``): the image itself (``"direct"``) and regular spikes with a random phase
(``"regular"``: :func:`regular_spikes`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .options import INPUT_ENCODINGS

CODINGS = ("binary", "ternary")


def make_generator(seed: int, device: Optional[torch.device] = None) -> torch.Generator:
    gen = torch.Generator(device=device if device is not None else "cpu")
    gen.manual_seed(int(seed))
    return gen


def _check_coding(x: Tensor, coding: str) -> None:
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    if coding == "binary" and float(x.min()) < 0:
        raise ValueError("binary coding needs inputs in [0, 1]; use ternary coding for signed inputs")


def poisson_spikes(x: Tensor, timesteps: int, generator: torch.Generator, coding: str = "binary") -> Tensor:
    """Spike train ``[T, *x.shape]`` for images ``x`` (values in [0,1] or [-1,1])."""
    _check_coding(x, coding)
    rand = torch.rand((timesteps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    magnitude = x.abs().clamp(max=1.0)
    spikes = (rand < magnitude).to(x.dtype)
    if coding == "ternary":
        spikes.mul_(torch.sign(x))
    return spikes


def regular_spikes(x: Tensor, phase: Tensor, timesteps: int, coding: str = "binary", start: int = 0) -> Tensor:
    """Steps ``start + 1 .. start + timesteps`` of evenly spaced spikes at rate ``|x|``, phase ``phase``.

    A pixel of value ``x`` and phase ``u`` in [0, 1) has fired ``floor(t |x| + u)`` spikes after t steps:
    an integrate-and-fire encoder whose membrane starts at ``u``. With ``u`` uniform the count after
    any t steps is unbiased (its mean is ``t |x|``) and never more than one spike off it, where T Poisson
    draws scatter by ``sqrt(T |x| (1 - |x|))``: at T = 8 that sampling noise is most of what conversion
    loses. A phase of its own for each pixel keeps neighbouring pixels of equal value from firing in
    lock-step, which is what a constant (direct) input does to every later layer.
    """
    _check_coding(x, coding)
    if phase.shape != x.shape:
        raise ValueError(f"phase shape {tuple(phase.shape)} differs from the input's {tuple(x.shape)}")
    magnitude = x.abs().clamp(max=1.0)
    steps = torch.arange(start, start + timesteps + 1, device=x.device, dtype=x.dtype)
    fired = torch.floor(steps.view(-1, *([1] * x.dim())) * magnitude + phase)
    spikes = fired[1:] - fired[:-1]
    if coding == "ternary":
        spikes.mul_(torch.sign(x))
    return spikes


class InputStream:
    """An SNN's input for images ``x``, drawn in chunks of timesteps that join up to the whole run.

    ``encoding`` (one of ``INPUT_ENCODINGS``): ``"poisson"`` spikes, the image itself at every step
    (``"direct"``, a stride-0 view over time), or ``"regular"`` spikes (:func:`regular_spikes`, whose
    phases are drawn from ``generator`` at the first chunk). Calling the stream for ``n`` steps returns
    ``[n, *x.shape]``; consecutive calls continue the same run.
    """

    def __init__(self, x: Tensor, generator: torch.Generator, coding: str, encoding: str = "poisson") -> None:
        if encoding not in INPUT_ENCODINGS:
            raise ValueError(f"input_encoding must be one of {', '.join(INPUT_ENCODINGS)}, got {encoding!r}")
        self.x, self.generator, self.coding, self.encoding = x, generator, coding, encoding
        self.done = 0
        self._phase: Optional[Tensor] = None

    def __call__(self, timesteps: int) -> Tensor:
        x = self.x
        if self.encoding == "direct":
            out = x.unsqueeze(0).expand(timesteps, *x.shape)
        elif self.encoding == "poisson":
            out = poisson_spikes(x, timesteps, self.generator, self.coding)
        else:
            if self._phase is None:
                self._phase = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            out = regular_spikes(x, self._phase, timesteps, self.coding, start=self.done)
        self.done += timesteps
        return out
