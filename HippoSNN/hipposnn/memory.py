"""Frugal process memory for BPTT on a CPU: freed activations go back to the system.

Why: a BPTT step allocates and frees many short-lived float tensors (currents, spikes, gradients)
between long-lived compact ones (the 8-bit surrogate codes and spikes kept for the backward pass).
glibc's malloc serves blocks up to 32 MiB from its heap once a block of that size has been freed (its
mmap threshold adapts upwards), and a heap can only shrink from its top: the long-lived blocks pin the
freed ones in between, and the process's resident memory grows well past what the step holds at any
moment.

:func:`frugal_allocator` fixes malloc's mmap threshold at 1 MiB, so every large tensor is its own
mapping and is returned when freed, and asks PyTorch to back its large allocations with transparent
huge pages (``THP_MEM_ALLOC_ENABLE``), so the fresh mappings cost one page fault per 2 MiB instead of
one per 4 KiB. It is process-wide and meant for training processes: the CPU fine-tuning step of the
shipped T = 8 model (batch 24) peaked at 331 instead of 647 MB and took 20 % longer (0.73 vs 0.61 s;
``bench/bench_engine.py``, docs/results/bench_engine_snn_t8_allocators.log). Elsewhere than glibc
(macOS, Windows, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: mallopt parameter number of M_MMAP_THRESHOLD in glibc's malloc.h
_M_MMAP_THRESHOLD = -3
#: blocks from this size up are mmapped (and unmapped when freed)
MMAP_THRESHOLD = 1 << 20

_applied = False


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def frugal_allocator() -> bool:
    """Return freed large blocks to the system for the rest of this process; True where it applies.

    Idempotent. Call it before the first training step (the memory already fragmented stays so).
    """
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None or libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return False
    # read by PyTorch's CPU allocator at each large allocation: 2 MiB-aligned, madvise(MADV_HUGEPAGE)
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    _applied = True
    return True
