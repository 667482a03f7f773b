"""Running a trained network on slices: the shared hot path of evaluation, inference and teaching.

``predict_slices`` is what the CLI, the whole-brain pipeline and the Slicer module call. For the SNN
it encodes each batch with a seeded Poisson generator and runs T timesteps in chunks (the membrane
state carries over between chunks), so memory stays bounded at any T and a given seed gives the
same probabilities whatever the chunk or batch size.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .encoding import make_generator
from .errors import Cancelled
from .unet import SpikeStats, SpikingUNet, UNet

Progress = Callable[[float, str], bool]
DEFAULT_CHUNK = 4


def snn_logits(
    model: SpikingUNet,
    x: Tensor,
    timesteps: int,
    generator: torch.Generator,
    coding: str = "binary",
    chunk: int = DEFAULT_CHUNK,
    stats: Optional[SpikeStats] = None,
    trace: Optional[List[Tensor]] = None,
) -> Tensor:
    """Logits [B, 1, H, W] of the SNN for images ``x`` [B, C, H, W] after ``timesteps`` steps.

    ``trace`` (a list) receives the logit after every chunk, e.g. ``chunk=1`` shows the output
    probability building up step by step (teaching view).
    """
    if timesteps < 1:
        raise ValueError("timesteps must be >= 1")
    state: dict = {}
    total = None
    done = 0
    stream = model.input_stream(x, generator, coding)
    while done < timesteps:
        n = min(chunk, timesteps - done)
        spikes = stream(n)
        out = model(spikes, stats=stats, state=state)
        total = out if total is None else total + out
        done += n
        if trace is not None:
            trace.append(model.logits(total, done).detach().clone())
    if stats is not None:
        stats.samples += x.shape[0]
        stats.timesteps = timesteps
    return model.logits(total, timesteps)


@torch.no_grad()
def predict_slices(
    model: Union[UNet, SpikingUNet],
    images: np.ndarray,
    *,
    timesteps: int = 32,
    coding: str = "binary",
    seed: int = 0,
    batch_size: int = 24,
    device: Union[str, torch.device] = "cpu",
    chunk: int = DEFAULT_CHUNK,
    stats: Optional[SpikeStats] = None,
    progress: Optional[Progress] = None,
) -> np.ndarray:
    """Probabilities (N, 1, H, W) for normalised slices ``images`` (N, C, H, W).

    Each batch gets its own generator seeded from ``seed`` and the batch's first slice index, so
    results do not depend on how many batches ran before (only on ``batch_size``).
    """
    model.eval()
    model.to(device)
    out = np.zeros((images.shape[0], 1, *images.shape[2:]), dtype=np.float32)
    n = images.shape[0]
    for start in range(0, n, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        if isinstance(model, SpikingUNet):
            gen = make_generator(seed * 1_000_003 + start, device=torch.device(device))
            logits = snn_logits(model, x, timesteps, gen, coding, chunk, stats)
        else:
            logits = model(x)
        out[start : start + x.shape[0]] = torch.sigmoid(logits).cpu().numpy()
        if progress is not None and progress(min(1.0, (start + x.shape[0]) / n), "segmenting slices") is False:
            raise Cancelled("cancelled by the user")
    return out
