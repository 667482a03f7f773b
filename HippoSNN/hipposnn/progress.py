"""Terminal progress bars for the core's ``progress(fraction, message) -> bool`` callbacks."""

from __future__ import annotations

import sys
from typing import Callable

ProgressCallback = Callable[[float, str], bool]


def tqdm_progress(desc: str, leave: bool = True) -> ProgressCallback:
    """A tqdm bar in percent, with the latest message as postfix; ``callback.close()`` ends it."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", leave=leave, dynamic_ncols=True, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")

    def update(fraction: float, message: str) -> bool:
        bar.n = round(100 * min(max(fraction, 0.0), 1.0), 1)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if fraction >= 1.0:
            bar.close()
        return True

    update.close = bar.close  # type: ignore[attr-defined]
    return update
