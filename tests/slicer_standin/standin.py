"""Load HippoSNN/HippoSNN.py on top of the stand-in ``slicer``/``qt``/``ctk`` (tests only).

``loadModule()`` puts this folder and HippoSNN/ first on sys.path, imports the module file and returns
it; ``unloadModule()`` restores sys.path and forgets the stand-in modules so other tests never see them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent
MODULE_DIR = STANDIN.parents[1] / "HippoSNN"
_NAMES = ("slicer", "qt", "ctk", "PyTorchUtils", "HippoSNN", "HippoSNNLib")


_added: list = []


def loadModule():
    for path in (str(MODULE_DIR), str(STANDIN)):
        if path not in sys.path:  # HippoSNN/ usually is already there (editable install of hipposnn)
            sys.path.insert(0, path)
            _added.append(path)
    import slicer

    slicer.standinCalls.clear()
    return importlib.import_module("HippoSNN")


def unloadModule() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _NAMES:
            del sys.modules[name]
    while _added:
        path = _added.pop()
        if path in sys.path:
            sys.path.remove(path)
