"""An exponential moving average of a model's parameters (Polyak averaging), for validation and saving.

Why: the quantised-clip ANN stage of the low-latency path starts from a trained ReLU ANN and moves little, but
its validation Dice swings by about 0.002 from one epoch to the next (the epoch logs of every cross-validated
run), so the checkpoint kept is partly the luck of one epoch's last batches. The average of the weights over
the last few hundred steps sits in the middle of that walk. Training itself is unchanged: the optimiser steps
the live weights; the average is what is validated, kept as ``best.pt`` and saved as ``final.pt``.

:func:`average_payloads` is the same idea across runs ("model soup"): the mean of the weights of models
fine-tuned from one starting point, which differ only in what their fine-tuning saw.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Sequence

import torch
from torch import Tensor, nn

from .errors import HippoSNNError


class WeightAverage:
    """``decay``-weighted running average of every parameter of ``model`` (clips included), started at its values.

    ``decay`` d gives the last step a weight of 1 - d and the average a memory of about 1 / (1 - d) steps
    (0.998: ~500 steps, four to five epochs of a fold's 108 batches).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: Dict[str, Tensor] = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current parameters into the average (call after each optimiser step)."""
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the averaged parameters inside the block, its own restored after it (also on error)."""
        own = {n: p.detach().clone() for n, p in model.named_parameters()}
        self._copy_into(model, self.shadow)
        try:
            yield model
        finally:
            self._copy_into(model, own)

    def state_dict(self) -> Dict[str, Tensor]:
        return {n: t.clone() for n, t in self.shadow.items()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"weight average does not match the model: {sorted(missing)[:3]}")
        for name, value in state.items():
            self.shadow[name].copy_(value)

    @staticmethod
    @torch.no_grad()
    def _copy_into(model: nn.Module, values: Dict[str, Tensor]) -> None:
        for name, p in model.named_parameters():
            p.copy_(values[name])


def average_payloads(payloads: Sequence[Dict[str, Any]], sources: Sequence[str] = ()) -> Dict[str, Any]:
    """The model file (payload, as :func:`hipposnn.weights.read_payload` returns it) whose weights are the mean
    of ``payloads``' weights; everything else (architecture, thresholds, clips, neuron settings) must agree.

    Why refuse rather than average the rest: a threshold or a clip sets what a weight means, so models that
    differ there do not share a weight space, and their mean is not a model of either kind.
    """
    if len(payloads) < 2:
        raise HippoSNNError("averaging needs at least two models")
    if sources and len(sources) != len(payloads):
        raise ValueError("one source name per model, or none")
    names = list(sources) or [f"model {i}" for i in range(len(payloads))]
    first = payloads[0]
    for name, other in zip(names[1:], payloads[1:]):
        for key in sorted(set(first) | set(other)):
            if key in ("weights", "meta"):
                continue
            if key not in first or key not in other or not _same(first[key], other[key]):
                raise HippoSNNError(f"{name} differs from the first model in '{key}': only models that differ in "
                                    "their weights alone can be averaged")
        if set(first["weights"]) != set(other["weights"]):
            raise HippoSNNError("the models' layers differ: only models of one architecture can be averaged")
    out = dict(first)
    out["weights"] = {name: torch.stack([p["weights"][name].float() for p in payloads]).mean(0).to(w.dtype)
                      for name, w in first["weights"].items()}
    out["meta"] = dict(first.get("meta") or {}, averaged_from=names)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
