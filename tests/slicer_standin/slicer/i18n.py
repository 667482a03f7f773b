"""Stand-in for ``slicer.i18n``: no translation, strings pass through."""

from __future__ import annotations


def tr(text: str) -> str:
    return text


def translate(context: str, text: str) -> str:
    return text
