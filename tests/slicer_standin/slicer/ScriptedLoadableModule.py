"""Stand-in for ``slicer.ScriptedLoadableModule`` base classes (tests only). Not Slicer."""

from __future__ import annotations

import os
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        name = type(self).__name__
        self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else name

    def getParameterNode(self):
        """Like Slicer's: the scene's vtkMRMLScriptedModuleNode of this module, created on first use
        (so a scene close removes it and the next call makes a new one)."""
        for node in slicer.mrmlScene.nodes:
            if node.IsA("vtkMRMLScriptedModuleNode") and node.GetAttribute("ModuleName") == self.moduleName:
                return node
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        return node


class _Layout:
    def __init__(self) -> None:
        self.widgets = []

    def addWidget(self, widget) -> None:
        self.widgets.append(widget)

    def addStretch(self, stretch: int = 0) -> None:
        pass


class ModuleWidgetParent:
    """What Slicer passes to a scripted widget: the module panel (``isEntered``, ``layout()``)."""

    def __init__(self) -> None:
        self.isEntered = False
        self._layout = _Layout()

    def layout(self) -> _Layout:
        return self._layout


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent if parent is not None else ModuleWidgetParent()
        self.layout = self.parent.layout()
        name = type(self).__name__
        self.moduleName = name[: -len("Widget")] if name.endswith("Widget") else name

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def cleanup(self) -> None:
        pass

    def onReload(self) -> None:
        """Like Slicer's: ``slicer.util.reloadScriptedModule(moduleName)``."""
        slicer.util.reloadScriptedModule(self.moduleName)


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=1000) -> None:
        slicer._record("delayDisplay", message)
