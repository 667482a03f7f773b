"""Stand-in for Slicer's ``qt`` (PythonQt) module: only what the HippoSNN module touches. Not Qt.

``QTimer`` does not run by itself: tests call ``QTimer.fireActive()`` (one timeout of every started
timer), which is what Qt's event loop does between user events.
"""

from __future__ import annotations

from typing import Callable, List

import signatures


class QTableWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text = text

    def text(self) -> str:
        return self._text


class QTimer:
    _active: List[QTimer] = []

    def __init__(self, parent=None) -> None:
        self._slots: List[Callable] = []
        self._interval = 0
        self.singleShot_ = False

    def setInterval(self, msec: int) -> None:
        self._interval = int(msec)

    def interval(self) -> int:
        return self._interval

    def connect(self, signal: str, slot: Callable) -> None:
        if signatures.normalise(signal) not in signatures.signals("QTimer"):
            raise AttributeError(f"QTimer has no signal {signal}")
        self._slots.append(slot)

    def start(self, msec: int = -1) -> None:
        if msec >= 0:
            self._interval = msec
        if self not in QTimer._active:
            QTimer._active.append(self)

    def stop(self) -> None:
        if self in QTimer._active:
            QTimer._active.remove(self)

    def isActive(self) -> bool:
        return self in QTimer._active

    @staticmethod
    def singleShot(msec: int, slot: Callable) -> None:
        timer = QTimer()
        timer.singleShot_ = True
        timer._slots.append(slot)
        timer.start(msec)

    @classmethod
    def fireActive(cls) -> int:
        """One timeout of every active timer (single-shot timers stop); returns how many fired."""
        timers = list(cls._active)
        for timer in timers:
            if timer.singleShot_:
                timer.stop()
            for slot in list(timer._slots):
                slot()
        return len(timers)


class Qt:
    WaitCursor = 3
    Horizontal = 1
