"""Stand-in for ``slicer.ScriptedLoadableModule`` base classes (tests only). Not Slicer."""

from __future__ import annotations

import os
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleLogic:
    _parameterNodes: dict = {}

    def __init__(self, parent=None) -> None:
        self.moduleName = type(self).__name__.replace("Logic", "")

    def getParameterNode(self):
        node = ScriptedLoadableModuleLogic._parameterNodes.get(self.moduleName)
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode(self.moduleName)
            ScriptedLoadableModuleLogic._parameterNodes[self.moduleName] = node
        return node


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__.replace("Widget", "")

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        import HippoSNN

        return os.path.join(os.path.dirname(HippoSNN.__file__), "Resources", filename)


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=1000) -> None:
        slicer._record("delayDisplay", message)
