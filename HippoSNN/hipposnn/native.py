"""Optional fused C++ kernels for the IF neurons, built on first use; pure PyTorch otherwise.

The kernels (``csrc/if_kernels.cpp``) compute exactly what :mod:`hipposnn.neurons` computes in
Python, with about a third of the memory traffic, which is what limits IF layers on a CPU. They are
compiled with ``torch.utils.cpp_extension`` the first time they are needed (about a minute; cached
afterwards). Without a C++ compiler and ninja (e.g. a stock Windows install of 3D Slicer), or with
``HIPPOSNN_NATIVE=0`` in the environment, everything runs on the pure-PyTorch path, with the same
results.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

from torch import Tensor

_lock = threading.Lock()
_module: Any = None
_tried = False
log = logging.getLogger(__name__)


def kernels() -> Optional[Any]:
    """The compiled kernel module, or None when unavailable or disabled."""
    global _module, _tried
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        _tried = True
        if os.environ.get("HIPPOSNN_NATIVE", "1") == "0":
            return None
        try:
            from torch.utils.cpp_extension import load

            source = Path(__file__).resolve().parent / "csrc" / "if_kernels.cpp"
            _module = load(
                name="hipposnn_if_kernels",
                sources=[str(source)],
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # no compiler, no ninja, unsupported platform: fall back quietly
            log.info("fused IF kernels unavailable (%s); using the PyTorch path", exc)
            _module = None
    return _module


def usable(*tensors: Tensor) -> bool:
    """Whether the fused kernels can run on these [T, ...] tensors (CPU float32, time-major dense)."""
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != _float32() or t.dim() < 2:
            return False
        if t.stride(0) != t[0].numel() or not _dense(t[0]):
            return False
    return kernels() is not None


def _float32():
    import torch

    return torch.float32


def _dense(t: Tensor) -> bool:
    import torch

    if t.is_contiguous():
        return True
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
