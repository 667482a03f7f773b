"""Stand-in for ``slicer.util`` (tests only): the functions HippoSNN.py calls. Not Slicer."""

from __future__ import annotations

import contextlib
import logging

import numpy as np

import slicer


def arrayFromVolume(volumeNode) -> np.ndarray:
    """Like Slicer: the voxel array in KJI order (a view of the node's data)."""
    slicer._record("arrayFromVolume", volumeNode.GetID())
    return volumeNode.arrayKJI


def updateVolumeFromArray(volumeNode, narray: np.ndarray) -> None:
    slicer._record("updateVolumeFromArray", volumeNode.GetID(), tuple(narray.shape))
    volumeNode.arrayKJI = np.array(narray)


def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None) -> None:
    slicer._record(
        "updateSegmentBinaryLabelmapFromArray",
        segmentationNode.GetID(),
        segmentId,
        referenceVolumeNode.GetID() if referenceVolumeNode else None,
        tuple(narray.shape),
    )
    if referenceVolumeNode is not None and tuple(narray.shape) != tuple(referenceVolumeNode.arrayKJI.shape):
        raise ValueError("array shape does not match the reference volume (KJI)")
    segmentationNode.GetSegmentation().GetSegment(segmentId).labelmapKJI = np.array(narray)


@contextlib.contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    """Like Slicer 5.8.1's (Base/Python/slicer/util.py): restores the cursor, shows the error unless
    testing is enabled, and RE-RAISES the exception (the caller's code after the block does not run)."""
    slicer._record("tryWithErrorDisplay", message, waitCursor)
    if waitCursor:
        slicer.app.setOverrideCursor("WaitCursor")
    try:
        yield
        if waitCursor:
            slicer.app.restoreOverrideCursor()
    except Exception as e:
        if waitCursor:
            slicer.app.restoreOverrideCursor()
        logging.debug("tryWithErrorDisplay: %s", message)
        if show and not slicer.app.testingEnabled():
            errorDisplay(f"{message}\n\n{e}" if message is not None else str(e))
        slicer.standinErrors.append(message)
        raise


def errorDisplay(text, windowTitle=None, parent=None, standalone=False, **kwargs) -> None:
    slicer._record("errorDisplay", text)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs) -> bool:
    slicer._record("confirmOkCancelDisplay", text)
    return True


#: What the stand-in user answers to confirmYesNoDisplay (tests set it).
confirmYesNoAnswer = True


def confirmYesNoDisplay(text, windowTitle=None, parent=None, **kwargs) -> bool:
    slicer._record("confirmYesNoDisplay", text)
    return confirmYesNoAnswer


def pip_install(requirements) -> None:
    slicer._record("pip_install", requirements)
    raise RuntimeError("the stand-in does not install packages")


class VTKObservationMixin:
    """Like Slicer's: observations are real (AddObserver on the object), one per (object, event, method)."""

    def __init__(self) -> None:
        self.observations = []

    def addObserver(self, obj, event, method, priority=0.0) -> None:
        slicer._record("addObserver", event, getattr(method, "__name__", ""))
        if any(o[0] is obj and o[1] == event and o[2] == method for o in self.observations):
            return  # Slicer warns and does not add it twice
        tag = obj.AddObserver(event, method, priority)
        self.observations.append((obj, event, method, tag))

    def removeObserver(self, obj, event, method) -> None:
        for o in list(self.observations):
            if o[0] is obj and o[1] == event and o[2] == method:
                obj.RemoveObserver(o[3])
                self.observations.remove(o)

    def removeObservers(self, method=None) -> None:
        for o in list(self.observations):
            if method is None or o[2] == method:
                o[0].RemoveObserver(o[3])
                self.observations.remove(o)


def arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode=None) -> np.ndarray:
    return segmentationNode.GetSegmentation().GetSegment(segmentId).labelmapKJI


def setSliceViewerLayers(background="keep-current", foreground="keep-current", label="keep-current",
                         foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False) -> None:
    def nodeID(node):
        return node if isinstance(node, str) or node is None else node.GetID()

    slicer._record("setSliceViewerLayers", nodeID(background), nodeID(foreground), foregroundOpacity, fit)


def loadVolume(filename, properties=None, returnNode=False):
    """Reads the file with the core's reader (Slicer reads it with ITK): array and IJK-to-RAS."""
    from hipposnn.io import load_image
    from HippoSNNLib import geometry

    image = load_image(filename)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    arrayKJI, ijkToRAS = geometry.volumeArraysFromImage(image)
    updateVolumeFromArray(node, arrayKJI)
    node.SetIJKToRASMatrix(ijkToRAS)
    return node


def launchConsoleProcess(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None):
    """Like Slicer's: a Popen with stdout and stderr merged, text mode."""
    import os
    import subprocess

    slicer._record("launchConsoleProcess", list(args), dict(updateEnvironment or {}), cwd)
    environment = os.environ.copy()
    environment.update(updateEnvironment or {})
    return subprocess.Popen(args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, cwd=cwd)


def loadUI(path):
    import widgets

    slicer._record("loadUI", path)
    return widgets.loadUI(path)


def childWidgetVariables(widget):
    import widgets

    return widgets.childWidgetVariables(widget)


def modulePath(moduleName: str) -> str:
    import sys

    return sys.modules[moduleName].__file__


def reloadScriptedModule(moduleName: str):
    """Like Slicer's: execute the module file again (as module ``moduleName``), clean up the old widget,
    make and set up a new one. Returns the new widget (Slicer stores it as slicer.modules.<name>Widget)."""
    import importlib
    import sys

    slicer._record("reloadScriptedModule", moduleName)
    old = sys.modules.pop(moduleName, None)
    module = importlib.import_module(moduleName)
    oldWidget = getattr(slicer.modules, moduleName + "Widget", None)
    if oldWidget is not None:
        oldWidget.cleanup()
    widget = getattr(module, moduleName + "Widget")(getattr(oldWidget, "parent", None))
    widget.setup()
    setattr(slicer.modules, moduleName + "Widget", widget)
    del old
    return widget
