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
    slicer._record("tryWithErrorDisplay", message, waitCursor)
    try:
        yield
    except Exception:
        logging.exception(message)
        slicer.standinErrors = getattr(slicer, "standinErrors", []) + [message]


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs) -> bool:
    slicer._record("confirmOkCancelDisplay", text)
    return True


def pip_install(requirements) -> None:
    slicer._record("pip_install", requirements)
    raise RuntimeError("the stand-in does not install packages")


class VTKObservationMixin:
    def __init__(self) -> None:
        self.observations = []

    def addObserver(self, obj, event, method, priority=0.0) -> None:
        slicer._record("addObserver", event, getattr(method, "__name__", ""))
        self.observations.append((obj, event, method))

    def removeObserver(self, obj, event, method) -> None:
        self.observations = [o for o in self.observations if o != (obj, event, method)]

    def removeObservers(self, method=None) -> None:
        self.observations = []
