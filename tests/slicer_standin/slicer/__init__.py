"""STAND-IN for the ``slicer`` package of 3D Slicer (tests only; see ../README.md). Not Slicer.

MRML node classes keep their state in plain Python attributes and record every call in
``standinCalls``. Matrices are real ``vtk.vtkMatrix4x4`` objects, arrays are numpy arrays in KJI order
as ``slicer.util.arrayFromVolume`` returns them.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Optional

import numpy as np
import vtk

standinCalls: List[tuple] = []
standinErrors: List[str] = []
_ids = itertools.count(1)


def _record(*call: Any) -> None:
    standinCalls.append(call)


class _Observable:
    """VTK observers: AddObserver(event, callback) -> tag, RemoveObserver(tag), InvokeEvent(event)."""

    def AddObserver(self, event, callback, priority: float = 0.0) -> int:
        tag = next(_ids)
        self._observers[tag] = (event, callback)
        return tag

    def RemoveObserver(self, tag: int) -> None:
        self._observers.pop(tag, None)

    def InvokeEvent(self, event, data=None) -> None:
        for observed, callback in list(self._observers.values()):
            if observed == event:
                callback(self, event)


class vtkMRMLNode(_Observable):
    def __init__(self, name: str = "") -> None:
        self._name = name
        self._id = f"{type(self).__name__}{next(_ids)}"
        self._attributes: Dict[str, str] = {}
        self._references: Dict[str, str] = {}
        self._transformNodeID: Optional[str] = None
        self._observers: Dict[int, tuple] = {}
        self._displayNode = None
        self.scene: Optional[vtkMRMLScene] = None

    def IsA(self, className: str) -> bool:
        return any(cls.__name__.lstrip("_") == className for cls in type(self).__mro__)

    def GetClassName(self) -> str:
        return type(self).__name__.lstrip("_")


    def GetDisplayNode(self):
        return self._displayNode

    def CreateDefaultDisplayNodes(self) -> None:
        _record("CreateDefaultDisplayNodes", self._id)
        self._displayNode = object()

    def GetName(self) -> str:
        return self._name

    def SetName(self, name: str) -> None:
        self._name = name

    def GetID(self) -> str:
        return self._id

    def SetAttribute(self, name: str, value: str) -> None:
        _record("SetAttribute", self._id, name, value)
        self._attributes[name] = value

    def GetAttribute(self, name: str) -> Optional[str]:
        return self._attributes.get(name)

    def SetNodeReferenceID(self, role: str, nodeID: str) -> None:
        _record("SetNodeReferenceID", self._id, role, nodeID)
        self._references[role] = nodeID

    def GetNodeReferenceID(self, role: str) -> Optional[str]:
        return self._references.get(role)

    def Modified(self) -> None:
        _record("Modified", self._id)
        self.InvokeEvent(vtk.vtkCommand.ModifiedEvent)


class vtkMRMLTransformableNode(vtkMRMLNode):
    def SetAndObserveTransformNodeID(self, nodeID: Optional[str]) -> None:
        _record("SetAndObserveTransformNodeID", self._id, nodeID)
        self._transformNodeID = nodeID

    def GetTransformNodeID(self) -> Optional[str]:
        return self._transformNodeID

    def GetParentTransformNode(self):
        return self.scene.GetNodeByID(self._transformNodeID) if self._transformNodeID and self.scene else None


class vtkMRMLLinearTransformNode(vtkMRMLTransformableNode):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._matrix = vtk.vtkMatrix4x4()

    def SetMatrixTransformToParent(self, matrix: vtk.vtkMatrix4x4) -> None:
        self._matrix.DeepCopy(matrix)

    def IsTransformToWorldLinear(self) -> bool:
        return True

    def GetMatrixTransformToWorld(self, matrix: vtk.vtkMatrix4x4) -> None:
        _record("GetMatrixTransformToWorld", self._id)
        result = vtk.vtkMatrix4x4()
        result.DeepCopy(self._matrix)
        parent = self.GetParentTransformNode()
        if parent is not None:
            parentMatrix = vtk.vtkMatrix4x4()
            parent.GetMatrixTransformToWorld(parentMatrix)
            vtk.vtkMatrix4x4.Multiply4x4(parentMatrix, self._matrix, result)
        matrix.DeepCopy(result)


class vtkMRMLScalarVolumeNode(vtkMRMLTransformableNode):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._ijkToRAS = vtk.vtkMatrix4x4()
        self.arrayKJI: Optional[np.ndarray] = None

    def GetIJKToRASMatrix(self, matrix: vtk.vtkMatrix4x4) -> None:
        _record("GetIJKToRASMatrix", self._id)
        matrix.DeepCopy(self._ijkToRAS)

    def SetIJKToRASMatrix(self, matrix: vtk.vtkMatrix4x4) -> None:
        _record("SetIJKToRASMatrix", self._id)
        self._ijkToRAS.DeepCopy(matrix)

    def SetSpacing(self, *spacing: float) -> None:
        """Like vtkMRMLVolumeNode: keeps the axis directions, scales them to the new spacing."""
        for c in range(3):
            norm = sum(self._ijkToRAS.GetElement(r, c) ** 2 for r in range(3)) ** 0.5 or 1.0
            for r in range(3):
                self._ijkToRAS.SetElement(r, c, self._ijkToRAS.GetElement(r, c) / norm * float(spacing[c]))

    def SetOrigin(self, *origin: float) -> None:
        for r in range(3):
            self._ijkToRAS.SetElement(r, 3, float(origin[r]))


class vtkSegment:
    @staticmethod
    def GetTerminologyEntryTagName() -> str:
        return "TerminologyEntry"

    def __init__(self, name: str, color) -> None:
        self._name = name
        self._color = tuple(color)
        self._tags: Dict[str, str] = {}
        self.labelmapKJI: Optional[np.ndarray] = None

    def GetName(self) -> str:
        return self._name

    def SetColor(self, r: float, g: float, b: float) -> None:
        self._color = (r, g, b)

    def GetColor(self):
        return self._color

    def SetTag(self, name: str, value: str) -> None:
        _record("vtkSegment.SetTag", self._name, name, value)
        self._tags[name] = value

    def GetTag(self, name: str) -> Optional[str]:
        return self._tags.get(name)


class vtkSegmentation:
    def __init__(self) -> None:
        self._segments: Dict[str, vtkSegment] = {}

    def GetSegmentIdBySegmentName(self, name: str) -> str:
        return next((sid for sid, s in self._segments.items() if s.GetName() == name), "")

    def AddEmptySegment(self, segmentId: str = "", segmentName: str = "", color=None) -> str:
        _record("AddEmptySegment", segmentId, segmentName)
        segmentId = segmentId or f"Segment_{len(self._segments) + 1}"
        self._segments[segmentId] = vtkSegment(segmentName or segmentId, color or (0.5, 0.5, 0.5))
        return segmentId

    def GetSegment(self, segmentId: str) -> Optional[vtkSegment]:
        return self._segments.get(segmentId)

    def GetNumberOfSegments(self) -> int:
        return len(self._segments)


class vtkMRMLSegmentationNode(vtkMRMLTransformableNode):
    @staticmethod
    def GetReferenceImageGeometryReferenceRole() -> str:
        return "referenceImageGeometryRef"

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._segmentation = vtkSegmentation()
        self._displayNode = None
        self.referenceGeometryVolumeID: Optional[str] = None

    def GetSegmentation(self) -> vtkSegmentation:
        return self._segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volumeNode) -> None:
        _record("SetReferenceImageGeometryParameterFromVolumeNode", self._id, volumeNode.GetID())
        self.referenceGeometryVolumeID = volumeNode.GetID()



class _vtkMRMLMarkupsROINode(vtkMRMLTransformableNode):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._objectToNode = vtk.vtkMatrix4x4()
        self._size = (0.0, 0.0, 0.0)

    def SetAndObserveObjectToNodeMatrix(self, matrix: vtk.vtkMatrix4x4) -> None:
        _record("SetAndObserveObjectToNodeMatrix", self._id)
        self._objectToNode.DeepCopy(matrix)

    def GetObjectToNodeMatrix(self) -> vtk.vtkMatrix4x4:
        return self._objectToNode

    def GetObjectToWorldMatrix(self) -> vtk.vtkMatrix4x4:
        parent = self.GetParentTransformNode()
        if parent is None:
            return self._objectToNode
        parentMatrix = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(parentMatrix)
        result = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Multiply4x4(parentMatrix, self._objectToNode, result)
        return result

    def SetSize(self, x: float, y: float, z: float) -> None:
        _record("SetSize", self._id, x, y, z)
        self._size = (x, y, z)

    def GetSize(self):
        return self._size


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.parameters: Dict[str, Any] = {}


class vtkMRMLSubjectHierarchyNode(vtkMRMLNode):
    _instance: Optional[vtkMRMLSubjectHierarchyNode] = None

    @staticmethod
    def GetSubjectHierarchyNode(scene) -> vtkMRMLSubjectHierarchyNode:
        if vtkMRMLSubjectHierarchyNode._instance is None:
            vtkMRMLSubjectHierarchyNode._instance = vtkMRMLSubjectHierarchyNode("SubjectHierarchy")
        return vtkMRMLSubjectHierarchyNode._instance

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.items: Dict[str, int] = {}
        self.parents: Dict[int, int] = {}

    def GetItemByDataNode(self, node) -> int:
        return self.items.setdefault(node.GetID(), 100 + len(self.items))

    def GetItemParent(self, item: int) -> int:
        return self.parents.get(item, 1)

    def SetItemParent(self, item: int, parent: int) -> None:
        _record("SetItemParent", item, parent)
        self.parents[item] = parent


class vtkMRMLTableNode(vtkMRMLNode):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._table = vtk.vtkTable()

    def GetTable(self) -> vtk.vtkTable:
        return self._table


class vtkMRMLPlotSeriesNode(vtkMRMLNode):
    PlotTypeLine, PlotTypeBar, PlotTypeScatter = 0, 1, 2

    def SetAndObserveTableNodeID(self, nodeID: str) -> None:
        self.tableNodeID = nodeID

    def SetXColumnName(self, name: str) -> None:
        self.xColumnName = name

    def SetYColumnName(self, name: str) -> None:
        self.yColumnName = name

    def SetLabelColumnName(self, name: str) -> None:
        self.labelColumnName = name

    def SetPlotType(self, plotType: int) -> None:
        self.plotType = plotType


class vtkMRMLPlotChartNode(vtkMRMLNode):
    def SetAndObservePlotSeriesNodeID(self, nodeID: str) -> None:
        self.plotSeriesNodeID = nodeID

    def SetTitle(self, title: str) -> None:
        self.title = title

    def SetXAxisTitle(self, title: str) -> None:
        self.xAxisTitle = title

    def SetYAxisTitle(self, title: str) -> None:
        self.yAxisTitle = title


#: Node classes AddNewNodeByClass can make; vtkMRMLMarkupsROINode joins (and the ``slicer`` namespace
#: gets it) only when loadMarkupsModule() runs, as in Slicer where the Markups module may load after
#: a scripted module's file was imported.
_NODE_CLASSES = {
    cls.__name__.lstrip("_"): cls
    for cls in (
        vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLLinearTransformNode, vtkMRMLScriptedModuleNode,
        vtkMRMLTableNode, vtkMRMLPlotSeriesNode, vtkMRMLPlotChartNode, _vtkMRMLMarkupsROINode,
    )
}  # fmt: skip


def loadMarkupsModule() -> None:
    """What loading Slicer's Markups module does to the ``slicer`` namespace."""
    globals()["vtkMRMLMarkupsROINode"] = _vtkMRMLMarkupsROINode


class vtkMRMLScene(_Observable):
    StartCloseEvent = 1
    EndCloseEvent = 2

    def __init__(self) -> None:
        self.nodes: List[vtkMRMLNode] = []
        self.comboBoxes: list = []  # stand-in qMRMLNodeComboBox widgets showing this scene
        self._observers: Dict[int, tuple] = {}
        self._counters: Dict[str, int] = {}


    def AddNode(self, node):
        className = node.GetClassName()
        self._counters[className] = self._counters.get(className, 0) + 1
        node._id = f"{className}{self._counters[className]}"  # like Slicer: per class, restarts on Clear
        node.scene = self
        self.nodes.append(node)
        return node

    def AddNewNodeByClass(self, className: str, name: str = ""):
        _record("AddNewNodeByClass", className, name)
        return self.AddNode(_NODE_CLASSES[className](name))

    def GetFirstNodeByName(self, name: str):
        return next((n for n in self.nodes if n.GetName() == name), None)

    def GetFirstNodeByClass(self, className: str):
        return next((n for n in self.nodes if n.IsA(className)), None)

    def GetNodeByID(self, nodeID: str):
        return next((n for n in self.nodes if n.GetID() == nodeID), None)

    def Clear(self, removeSingletons: bool = False) -> None:
        """Like Slicer's scene close: StartCloseEvent, every node removed, IDs restart, EndCloseEvent."""
        _record("mrmlScene.Clear")
        self.InvokeEvent(self.StartCloseEvent)
        removed, self.nodes = self.nodes, []
        self._counters.clear()
        for comboBox in self.comboBoxes:
            for node in removed:
                comboBox.nodeRemovedFromScene(node)
        self.InvokeEvent(self.EndCloseEvent)


class _App:
    def __init__(self) -> None:
        self.testing = True  # like ctest runs (--testing): tryWithErrorDisplay shows no dialog
        self.overrideCursors = 0

    def connect(self, signal: str, slot) -> None:
        _record("app.connect", signal, getattr(slot, "__name__", str(slot)))

    def processEvents(self) -> None:
        pass

    def testingEnabled(self) -> bool:
        return self.testing

    def setOverrideCursor(self, cursor) -> None:
        self.overrideCursors += 1

    def restoreOverrideCursor(self) -> None:
        self.overrideCursors -= 1


class _PlotsLogic:
    def ShowChartInLayout(self, chartNode) -> None:
        _record("ShowChartInLayout", chartNode.GetID())


class _Modules:
    class plots:  # noqa: N801  (slicer.modules.plots)
        @staticmethod
        def logic() -> _PlotsLogic:
            return _PlotsLogic()


app = _App()
modules = _Modules()
mrmlScene = vtkMRMLScene()

from . import util  # noqa: E402,F401  (slicer.util is imported with the package in Slicer too)
