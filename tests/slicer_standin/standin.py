"""Load HippoSNN/HippoSNN.py on top of the stand-in ``slicer``/``qt``/``ctk`` (tests only).

``loadModule()`` puts this folder and HippoSNN/ first on sys.path, imports the module file and returns
it, and only then "loads the Markups module" (adds vtkMRMLMarkupsROINode to the ``slicer`` namespace):
the worst start-up order Slicer may use. ``unloadModule()`` restores sys.path and forgets the stand-in
modules so other tests never see them. ``makeWidget(module)`` builds the widget as Slicer does when the
module panel is first shown (constructor, then ``setup()``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent
MODULE_DIR = STANDIN.parents[1] / "HippoSNN"
_NAMES = ("slicer", "qt", "ctk", "PyTorchUtils", "SampleData", "HippoSNN", "HippoSNNLib", "signatures", "widgets")


_added: list = []


def loadModule(markups: bool = True):
    for path in (str(MODULE_DIR), str(STANDIN)):
        if path not in sys.path:  # HippoSNN/ usually is already there (editable install of hipposnn)
            sys.path.insert(0, path)
            _added.append(path)
    import slicer

    slicer.standinCalls.clear()
    slicer.standinErrors.clear()
    module = importlib.import_module("HippoSNN")
    if markups:
        slicer.loadMarkupsModule()
    return module


def makeWidget(module, entered: bool = True):
    import slicer
    from slicer.ScriptedLoadableModule import ModuleWidgetParent

    parent = ModuleWidgetParent()
    parent.isEntered = entered
    widget = module.HippoSNNWidget(parent)
    widget.setup()
    slicer.modules.HippoSNNWidget = widget
    return widget


def unloadModule() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _NAMES:
            del sys.modules[name]
    while _added:
        path = _added.pop()
        if path in sys.path:
            sys.path.remove(path)
