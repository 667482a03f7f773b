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


def load_tool(name: str, folder: str = "tools"):
    """The module of ``<repo>/<folder>/<name>.py`` (a script, not a package), loaded once per test session.

    The folder is on ``sys.path`` while it loads (tools import their neighbours, e.g. ``report_lowt_cv``) and the
    module is registered in ``sys.modules`` (dataclasses look their module up; a tool's own ``import eval_sets``
    then finds the module a test patched).
    """
    import importlib.util
    import sys
    from pathlib import Path

    if name in sys.modules:
        return sys.modules[name]
    where = Path(__file__).resolve().parents[1] / folder
    spec = importlib.util.spec_from_file_location(name, where / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(where))
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(where))
    return module
