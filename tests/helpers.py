"""Synthetic MSD-layout data for tests (the package's own generator, shared with the smoke experiments)."""

from __future__ import annotations

from hipposnn.synthetic import write_synthetic_msd as make_msd_folder

__all__ = ["make_msd_folder"]


def reference_if(current, threshold: float, reset: str = "subtract", initial: float = 0.0, gamma: float = 0.3):
    """Plain-autograd IF neuron over ``current`` [T, ...]: spike when the membrane reaches ``threshold``,
    triangle surrogate (``hipposnn.neurons.surrogate_gradient``), reset detached, by subtraction or to zero.

    The definition the engine's fused and compact BPTT paths are tested against.
    """
    import torch
    from hipposnn.neurons import surrogate_gradient

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= threshold).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * surrogate_gradient(u, threshold, gamma)

    membrane = torch.full_like(current[0], initial)
    out = []
    for t in range(current.shape[0]):
        membrane = membrane + current[t]
        spikes = Spike.apply(membrane)
        out.append(spikes)
        if reset == "zero":
            membrane = membrane * (1.0 - spikes.detach())
        else:
            membrane = membrane - threshold * spikes.detach()
    return torch.stack(out)
