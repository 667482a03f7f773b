"""Stand-in for Slicer's ``qt`` (PythonQt) module: only what HippoSNN.py touches. Not Qt."""

from __future__ import annotations


class QTableWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text = text

    def text(self) -> str:
        return self._text
