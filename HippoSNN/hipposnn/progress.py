"""Terminal progress bars for the core's ``progress(fraction, message) -> bool`` callbacks.

With the environment variable ``HIPPOSNN_PROGRESS=lines`` the command line prints one machine-readable
line per report instead of a bar, ``hipposnn-progress: <fraction> <message>`` on stdout: the 3D Slicer
module runs training in a child process and reads these lines (HippoSNNLib/trainingLogic.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List

ProgressCallback = Callable[[float, str], bool]

#: Start of a progress line in ``HIPPOSNN_PROGRESS=lines`` mode.
LINE_PREFIX = "hipposnn-progress:"


def line_progress(desc: str) -> ProgressCallback:
    """Progress as ``hipposnn-progress: 0.4200 <desc>: <message>`` lines on stdout (flushed)."""

    def update(fraction: float, message: str) -> bool:
        value = min(max(float(fraction), 0.0), 1.0)
        print(f"{LINE_PREFIX} {value:.4f} {desc}: {message}", flush=True)
        return True

    update.close = lambda: None  # type: ignore[attr-defined]
    return update


#: Bars not yet closed; :func:`close_progress_bars` ends them before an error message is printed.
_OPEN: List[Any] = []


def close_progress_bars() -> None:
    """Close every open bar (each ends its line), so that what is printed next starts a line of its own."""
    while _OPEN:
        _OPEN.pop().close()


def tqdm_progress(desc: str, leave: bool = True) -> ProgressCallback:
    """A tqdm bar in percent, with the latest message as postfix; ``callback.close()`` ends it.

    Progress lines instead of a bar when ``HIPPOSNN_PROGRESS=lines`` (see the module docstring).
    """
    if os.environ.get("HIPPOSNN_PROGRESS") == "lines":
        return line_progress(desc)
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", leave=leave, dynamic_ncols=True, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")

    _OPEN.append(bar)

    def close() -> None:
        if bar in _OPEN:
            _OPEN.remove(bar)
        bar.close()

    def update(fraction: float, message: str) -> bool:
        bar.n = round(100 * min(max(fraction, 0.0), 1.0), 1)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if fraction >= 1.0:
            close()
        return True

    update.close = close  # type: ignore[attr-defined]
    return update
