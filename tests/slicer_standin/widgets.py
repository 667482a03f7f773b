"""Stand-in Qt/CTK/qMRML widgets built from HippoSNN.ui (tests only). Not Qt.

``loadUI`` reads the real .ui file and makes one object per ``<widget>``, with the properties the file
sets, and performs the file's ``<connections>`` the way Qt's string-based connect does: a connection
whose signal or slot does not exist, or whose argument types differ, is refused. Qt only prints a
warning then (and the feature silently does nothing); the stand-in raises, so tests fail.

Each widget accepts only the attributes listed for its class (a misspelt property raises
AttributeError) and ``connect(signal, slot)`` only for signals in ``signatures.CLASSES``.
"""

from __future__ import annotations

import inspect
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List, Optional

import signatures
import slicer

_COMMON = {"enabled", "toolTip", "visible", "text", "objectName"}
#: Python-visible properties per stand-in class (PythonQt exposes Q_PROPERTYs as attributes).
PROPERTIES: Dict[str, set] = {
    "QWidget": set(),
    "qMRMLWidget": set(),
    "QLabel": {"wordWrap"},
    "QPushButton": {"checkable", "checked"},
    "ctkCollapsibleButton": {"collapsed", "checked", "checkable"},
    "qMRMLSegmentationShow3DButton": set(),
    "QComboBox": {"currentIndex", "currentText"},
    "QSpinBox": {"minimum", "maximum", "value", "singleStep"},
    "QSlider": {"minimum", "maximum", "value", "singleStep", "orientation"},
    "ctkSliderWidget": {"minimum", "maximum", "value", "singleStep", "decimals"},
    "ctkPathLineEdit": {"currentPath", "filters", "nameFilters", "settingKey"},
    "QProgressBar": {"value", "format", "minimum", "maximum"},
    "QPlainTextEdit": {"plainText", "readOnly", "maximumBlockCount"},
    "QTableWidget": {"rowCount", "columnCount", "horizontalHeaderLabels"},
    "qMRMLNodeComboBox": {
        "nodeTypes", "showChildNodeTypes", "noneEnabled", "addEnabled", "removeEnabled", "renameEnabled",
        "editEnabled", "noneDisplay", "baseName", "selectNodeUponCreation", "showHidden",
    },
}  # fmt: skip


def _value(element: ET.Element) -> Any:
    child = list(element)[0]
    if child.tag == "stringlist":
        return [s.text for s in child.findall("string")]
    text = child.text or ""
    if child.tag == "bool":
        return text == "true"
    if child.tag == "number":
        return int(text)
    if child.tag == "double":
        return float(text)
    return text


def _argumentCount(slot: Callable, available: int) -> int:
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return available
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return available
    return min(available, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class Widget:
    """Base of the stand-in widgets: properties, dynamic properties, signals."""

    className = "QWidget"

    def __init__(self, name: str = "", properties: Optional[Dict[str, Any]] = None) -> None:
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_dynamic", {})
        object.__setattr__(self, "_name", name)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.text = ""
        for key, value in (properties or {}).items():
            if key in self._allowed():
                setattr(self, key, value)
            else:  # dynamic property (SlicerParameterName) or one the module never reads
                self._dynamic[key] = value

    @classmethod
    def _allowed(cls) -> set:
        return _COMMON | PROPERTIES[cls.className]

    def __setattr__(self, key: str, value: Any) -> None:
        if not key.startswith("_") and key not in self._allowed():
            raise AttributeError(f"{self.className} has no property {key!r}")
        object.__setattr__(self, key, value)

    def property(self, name: str) -> Any:
        return self._dynamic.get(name)

    def setProperty(self, name: str, value: Any) -> None:
        self._dynamic[name] = value

    # -- signals -----------------------------------------------------------------------------------------

    def connect(self, signal: str, slot: Callable) -> None:
        """PythonQt's ``widget.connect("signal(args)", callable)``; refused for an unknown signal."""
        normalised = signatures.normalise(signal)
        if normalised not in signatures.signals(self.className):
            raise AttributeError(f"{self.className} has no signal {normalised}")
        slicer._record("connect", self._name, normalised)
        self._slots.setdefault(normalised, []).append(slot)

    def disconnect(self, signal: str, slot: Optional[Callable] = None) -> None:
        normalised = signatures.normalise(signal)
        self._slots[normalised] = [s for s in self._slots.get(normalised, []) if slot is not None and s != slot]

    def emit(self, signal: str, *args: Any) -> None:
        """Call the connected callables; like PythonQt, a callable taking fewer arguments gets the first ones."""
        for slot in list(self._slots.get(signatures.normalise(signal), [])):
            slot(*args[: _argumentCount(slot, len(args))])

    def connected(self, signal: str) -> int:
        return len(self._slots.get(signatures.normalise(signal), []))

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)


class QLabel(Widget):
    className = "QLabel"


class QPushButton(Widget):
    className = "QPushButton"

    def click(self) -> None:
        """Like a user's click: only an enabled button emits clicked(bool)."""
        if self.enabled:
            self.emit("clicked(bool)", False)


class ctkCollapsibleButton(QPushButton):
    className = "ctkCollapsibleButton"


class qMRMLSegmentationShow3DButton(QPushButton):
    className = "qMRMLSegmentationShow3DButton"

    def __init__(self, name: str = "", properties=None) -> None:
        super().__init__(name, properties)
        object.__setattr__(self, "segmentationNode", None)

    def setSegmentationNode(self, node) -> None:
        """Takes a vtkMRMLSegmentationNode* (PythonQt raises TypeError for another node class)."""
        if node is not None and not node.IsA("vtkMRMLSegmentationNode"):
            raise TypeError(f"setSegmentationNode(vtkMRMLSegmentationNode*): got {type(node).__name__}")
        object.__setattr__(self, "segmentationNode", node)


class _Ranged(Widget):
    """QSpinBox / QSlider / ctkSliderWidget: value kept inside [minimum, maximum] like Qt."""

    signal = "valueChanged(int)"
    cast = int

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "minimum", 0)
        object.__setattr__(self, "maximum", 99)
        object.__setattr__(self, "value", 0)
        object.__setattr__(self, "rangeSets", 0)
        super().__init__(name, properties)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "value":
            new = self.cast(min(max(value, self.minimum), self.maximum))
            old = self.value
            object.__setattr__(self, "value", new)
            if new != old:
                self.emit(self.signal, new)
            return
        super().__setattr__(key, value)
        if key in ("minimum", "maximum"):
            object.__setattr__(self, "value", self.cast(min(max(self.value, self.minimum), self.maximum)))

    def setRange(self, minimum, maximum) -> None:
        object.__setattr__(self, "rangeSets", self.rangeSets + 1)
        self.minimum, self.maximum = minimum, maximum

    def setValue(self, value) -> None:
        self.value = value


class QSpinBox(_Ranged):
    className = "QSpinBox"


class QSlider(_Ranged):
    className = "QSlider"


class ctkSliderWidget(_Ranged):
    className = "ctkSliderWidget"
    signal = "valueChanged(double)"
    cast = float


class QComboBox(Widget):
    className = "QComboBox"

    def __init__(self, name: str = "", properties=None, items: Optional[List[str]] = None) -> None:
        object.__setattr__(self, "items", list(items or []))
        object.__setattr__(self, "currentIndex", 0 if items else -1)
        super().__init__(name, properties)

    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""

    def addItem(self, text: str) -> None:
        self.items.append(text)

    def clear(self) -> None:
        self.items.clear()


class ctkPathLineEdit(Widget):
    className = "ctkPathLineEdit"

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "currentPath", "")
        super().__init__(name, properties)


class QProgressBar(Widget):
    className = "QProgressBar"

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "value", 0)
        object.__setattr__(self, "format", "%p%")
        super().__init__(name, properties)

    def setValue(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("QProgressBar.setValue(int)")
        self.value = value

    def setFormat(self, text: str) -> None:
        self.format = text


class QPlainTextEdit(Widget):
    className = "QPlainTextEdit"

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "plainText", "")
        super().__init__(name, properties)

    def appendPlainText(self, text: str) -> None:
        self.plainText = f"{self.plainText}\n{text}" if self.plainText else str(text)


class QTableWidget(Widget):
    className = "QTableWidget"

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "_items", {})
        object.__setattr__(self, "rowCount", 0)
        super().__init__(name, properties)

    def setRowCount(self, rows: int) -> None:
        self.rowCount = rows

    def setItem(self, row: int, column: int, item) -> None:
        if row >= self.rowCount:
            raise IndexError("setItem outside the table's rows")
        if column >= int(getattr(self, "columnCount", 0) or 0):  # Qt ignores it: the cell never shows
            raise IndexError("setItem outside the table's columns")
        self._items[(row, column)] = item

    def item(self, row: int, column: int):
        return self._items.get((row, column))


class qMRMLWidget(Widget):
    className = "qMRMLWidget"

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "mrmlScene", None)
        super().__init__(name, properties)

    def setMRMLScene(self, scene) -> None:
        object.__setattr__(self, "mrmlScene", scene)
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)


class qMRMLNodeComboBox(Widget):
    className = "qMRMLNodeComboBox"

    def __init__(self, name: str = "", properties=None) -> None:
        object.__setattr__(self, "mrmlScene", None)
        object.__setattr__(self, "_current", None)
        object.__setattr__(self, "nodeTypes", [])
        object.__setattr__(self, "baseName", "")
        super().__init__(name, properties)

    def setMRMLScene(self, scene) -> None:
        object.__setattr__(self, "mrmlScene", scene)
        if scene is not None:
            scene.comboBoxes.append(self)

    def currentNode(self):
        return self._current

    def setCurrentNode(self, node) -> None:
        if node is not None and not any(node.IsA(t) for t in self.nodeTypes):
            raise TypeError(f"{self._name}: {type(node).__name__} is not one of {self.nodeTypes}")
        if node is self._current:
            return
        object.__setattr__(self, "_current", node)
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)
        self.emit("currentNodeChanged(bool)", node is not None)

    def nodeRemovedFromScene(self, node) -> None:
        if node is self._current:
            self.setCurrentNode(None)


CLASSES = {
    cls.className: cls
    for cls in (
        Widget, QLabel, QPushButton, ctkCollapsibleButton, qMRMLSegmentationShow3DButton, QSpinBox, QSlider,
        ctkSliderWidget, QComboBox, ctkPathLineEdit, QProgressBar, QPlainTextEdit, QTableWidget, qMRMLWidget,
        qMRMLNodeComboBox,
    )
}  # fmt: skip


class UiVariables:
    """What ``slicer.util.childWidgetVariables`` returns: one attribute per named child widget."""


def loadUI(path: str) -> qMRMLWidget:
    """Build the widgets of a .ui file and perform its connections (refusing those Qt would refuse)."""
    tree = ET.parse(path)
    widgets: Dict[str, Widget] = {}
    for element in tree.iter("widget"):
        className = element.get("class")
        if className not in CLASSES:
            raise RuntimeError(f"{path}: no stand-in for widget class {className}")
        properties = {p.get("name"): _value(p) for p in element.findall("property")}
        if className == "QComboBox":
            items = [item.find("property/string").text for item in element.findall("item")]
            widget = QComboBox(element.get("name"), properties, items)
        else:
            widget = CLASSES[className](element.get("name"), properties)
        widgets[element.get("name")] = widget
    root = widgets[tree.getroot().find("widget").get("name")]
    for connection in tree.iter("connection"):
        sender = widgets[connection.findtext("sender")]
        receiver = widgets[connection.findtext("receiver")]
        signal, slot = connection.findtext("signal"), connection.findtext("slot")
        error = signatures.connectionError(sender.className, signal, receiver.className, slot)
        if error:
            raise RuntimeError(f"{path}: Qt refuses the connection {connection.findtext('sender')}.{signal} -> "
                               f"{connection.findtext('receiver')}.{slot}: {error}")
        method = getattr(receiver, slot.split("(")[0])
        count = len(signatures.arguments(slot))
        sender.connect(signal, lambda *args, method=method, count=count: method(*args[:count]))
    object.__setattr__(root, "children", widgets)
    return root


def childWidgetVariables(root: qMRMLWidget) -> UiVariables:
    variables = UiVariables()
    for name, widget in root.children.items():
        if widget is not root:
            setattr(variables, name, widget)
    return variables
