"""Stand-in for ``slicer.parameterNodeWrapper`` (tests only). Not Slicer.

Like Slicer, the decorator reads the class annotations with ``typing.get_type_hints(cls,
include_extras=True)`` (so string annotations from ``from __future__ import annotations`` must resolve
in the module), takes defaults from class attributes, and stores values on the wrapped
``vtkMRMLScriptedModuleNode`` (a set invokes its ModifiedEvent). ``fieldsOf(cls)`` exposes
(type, annotations, default) for the harness.

``connectGui(ui)`` applies the widget rules of Slicer 5.8.1's
``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py`` (read at tag v5.8.1): for each widget with
a ``SlicerParameterName`` property it picks the connector whose ``canRepresent`` accepts (widget class,
field type) and fails like ``createGuiConnector`` otherwise ("Unable to create GUI connector"):

* bool: QCheckBox, ctkCheckBox, QPushButton (checkable)
* int: QSlider, QSpinBox (a QSlider needs a bounded int); float: QDoubleSpinBox, ctkSliderWidget,
  qMRMLSliderWidget, ctkDoubleSlider, ctkDoubleSpinBox, qMRMLSpinBox (a ctkSliderWidget needs bounds).
  Both set the widget's range from WithinRange on every connect.
* int/float/str/bool on QComboBox or ctkComboBox: only with a Choice annotation (else RuntimeError);
  the connector fills the items from the choices. Enum on QComboBox/ctkComboBox.
* str: QLineEdit, QLabel, QTextEdit; pathlib paths: ctkPathLineEdit, ctkDirectoryButton
* MRML node types: qMRMLNodeComboBox, whose ``nodeTypes`` the connector sets to the field's class.
"""

from __future__ import annotations

import enum
import pathlib
import typing
from typing import Any, Dict, Tuple

import slicer


class WithinRange:
    def __init__(self, minimum, maximum) -> None:
        self.minimum = minimum
        self.maximum = maximum


class Choice:
    def __init__(self, choices) -> None:
        self.choices = list(choices)


def _split(annotation) -> Tuple[Any, list]:
    if typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        return args[0], list(args[1:])
    return annotation, []


def fieldsOf(cls) -> Dict[str, Tuple[Any, list, Any]]:
    return cls._standinFields


def _first(annotations, kind):
    return next((a for a in annotations if isinstance(a, kind)), None)


_PATHS = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath, pathlib.PurePosixPath,
          pathlib.PureWindowsPath)


def connectorKind(widgetClass: str, baseType, annotations) -> str:
    """Name of the guiConnectors.py connector Slicer 5.8.1 would pick; raises like createGuiConnector."""
    withinRange = _first(annotations, WithinRange)
    choice = _first(annotations, Choice)
    isNode = isinstance(baseType, type) and issubclass(baseType, slicer.vtkMRMLNode)
    if baseType is bool and widgetClass in ("QCheckBox", "ctkCheckBox"):
        return "QCheckBoxToBoolConnector"
    if baseType is bool and widgetClass == "QPushButton":
        return "QCheckablePushButtonToBoolConnector"
    if baseType is int and widgetClass in ("QSlider", "QSpinBox"):
        if widgetClass == "QSlider" and withinRange is None:
            raise RuntimeError("Cannot have a connection to QSlider where the int type is unbounded.")
        return "QSliderOrSpinBoxToIntConnector"
    if baseType is float and widgetClass in ("QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget",
                                             "ctkDoubleSlider", "ctkDoubleSpinBox", "qMRMLSpinBox"):
        if widgetClass in ("ctkSliderWidget", "qMRMLSliderWidget") and withinRange is None:
            raise RuntimeError("Cannot have a connection to ctkSliderWidget where the float type is unbounded.")
        return "QDoubleSpinBoxCtkSliderWidgetToFloatConnector"
    if widgetClass in ("QComboBox", "ctkComboBox") and baseType in (int, float, str, bool):
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        return "QComboBoxToStringableConnector"
    if widgetClass in ("QComboBox", "ctkComboBox") and isinstance(baseType, type) and issubclass(baseType, enum.Enum):
        return "QComboBoxToEnumConnector"
    if baseType is str and widgetClass in ("QLineEdit", "QLabel", "QTextEdit"):
        return widgetClass + "ToStrConnector"
    if baseType in _PATHS and widgetClass in ("ctkPathLineEdit", "ctkDirectoryButton"):
        return widgetClass + "ToPathConnector"
    if isNode and widgetClass == "qMRMLNodeComboBox":
        return "qMRMLNodeComboBoxToNodeConnector"
    raise RuntimeError(f"Unable to create GUI connector from datatype '{baseType}' to widget type '{widgetClass}'.")


_SIGNALS = {
    "QSliderOrSpinBoxToIntConnector": "valueChanged(int)",
    "QDoubleSpinBoxCtkSliderWidgetToFloatConnector": "valueChanged(double)",
    "qMRMLNodeComboBoxToNodeConnector": "currentNodeChanged(vtkMRMLNode*)",
    "ctkPathLineEditToPathConnector": "currentPathChanged(QString)",
    "QComboBoxToStringableConnector": "currentIndexChanged(int)",
}


def parameterNodeWrapper(classtype):
    hints = typing.get_type_hints(classtype, include_extras=True)
    fields = {}
    for name, annotation in hints.items():
        baseType, annotations = _split(annotation)
        fields[name] = (baseType, annotations, classtype.__dict__.get(name))

    class Wrapper:
        _standinFields = fields
        __name__ = classtype.__name__
        __doc__ = classtype.__doc__

        def __init__(self, parameterNode) -> None:
            object.__setattr__(self, "parameterNode", parameterNode)
            object.__setattr__(self, "_guis", {})
            for key, (_, _, default) in fields.items():
                parameterNode.parameters.setdefault(key, default)

        def __getattr__(self, key):
            if key in fields:
                return self.parameterNode.parameters.get(key)
            raise AttributeError(key)

        def __setattr__(self, key, value) -> None:
            if key not in fields:
                raise AttributeError(f"{classtype.__name__} has no parameter {key!r}")
            baseType, annotations, _ = fields[key]
            if isinstance(baseType, type) and issubclass(baseType, slicer.vtkMRMLNode):
                if value is not None and not isinstance(value, baseType):
                    raise ValueError(f"{key}: {type(value).__name__} is not a {baseType.__name__}")
            for annotation in annotations:
                if isinstance(annotation, Choice) and value not in annotation.choices:
                    raise ValueError(f"{key}: {value!r} not in {annotation.choices}")
                if isinstance(annotation, WithinRange) and not annotation.minimum <= value <= annotation.maximum:
                    raise ValueError(f"{key}: {value!r} outside range")
            slicer._record("parameterNode.set", key)
            self.parameterNode.parameters[key] = value
            for connections in self._guis.values():
                for name, widget, _kind in connections:
                    if name == key:
                        _write(widget, _kind, value, fields[key])
            self.parameterNode.Modified()

        def connectGui(self, ui):
            """Bind every widget of ``ui`` with a SlicerParameterName (strict: Slicer's connector rules)."""
            slicer._record("connectGui")
            widgets = [w for w in vars(ui).values() if hasattr(w, "property") and w.property("SlicerParameterName")]
            connections = []
            for widget in widgets:
                name = widget.property("SlicerParameterName")
                if name not in fields:
                    raise ValueError(f"{widget.className} is bound to unknown parameter {name!r}")
                baseType, annotations, _ = fields[name]
                kind = connectorKind(widget.className, baseType, annotations)
                _configure(widget, kind, baseType, annotations)
                _write(widget, kind, self.parameterNode.parameters.get(name), fields[name])
                signal = _SIGNALS.get(kind)
                if signal is not None:
                    def changed(*args, name=name, widget=widget, kind=kind):
                        value = _read(widget, kind, fields[name])
                        if self.parameterNode.parameters.get(name) is not value:
                            setattr(self, name, value)

                    widget._slots.setdefault(signal, []).append(changed)
                    connections.append((name, widget, kind, signal, changed))
                else:
                    connections.append((name, widget, kind, None, None))
            tag = f"guiTag{len(self._guis) + 1}"
            self._guis[tag] = [(n, w, k) for n, w, k, _, _ in connections]
            object.__setattr__(self, "_slotsOf" + tag, connections)
            return tag

        def disconnectGui(self, tag) -> None:
            slicer._record("disconnectGui", tag)
            for _name, widget, _kind, signal, changed in getattr(self, "_slotsOf" + str(tag), []):
                if signal is not None and changed in widget._slots.get(signal, []):
                    widget._slots[signal].remove(changed)
            self._guis.pop(tag, None)

        def AddObserver(self, event, callback, priority: float = 0.0):
            return self.parameterNode.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag) -> None:
            self.parameterNode.RemoveObserver(tag)

        def __eq__(self, other) -> bool:
            return isinstance(other, Wrapper) and other.parameterNode is self.parameterNode

        def __hash__(self) -> int:
            return id(self.parameterNode)

        def __bool__(self) -> bool:
            return True

    Wrapper.__name__ = classtype.__name__
    Wrapper.__qualname__ = classtype.__qualname__
    return Wrapper


def _configure(widget, kind, baseType, annotations) -> None:
    withinRange = _first(annotations, WithinRange)
    if kind in ("QSliderOrSpinBoxToIntConnector", "QDoubleSpinBoxCtkSliderWidgetToFloatConnector"):
        if withinRange is not None:
            widget.setRange(withinRange.minimum, withinRange.maximum)
    elif kind == "QComboBoxToStringableConnector":
        widget.clear()
        for choice in _first(annotations, Choice).choices:
            widget.addItem(str(choice))
    elif kind == "qMRMLNodeComboBoxToNodeConnector":
        widget.nodeTypes = [baseType.__name__.lstrip("_")]


def _write(widget, kind, value, field) -> None:
    baseType, annotations, _ = field
    if kind == "qMRMLNodeComboBoxToNodeConnector":
        widget.setCurrentNode(value)
    elif kind == "QComboBoxToStringableConnector":
        object.__setattr__(widget, "currentIndex", _first(annotations, Choice).choices.index(value))
    elif kind == "ctkPathLineEditToPathConnector":
        object.__setattr__(widget, "currentPath", str(value))
    elif kind in ("QSliderOrSpinBoxToIntConnector", "QDoubleSpinBoxCtkSliderWidgetToFloatConnector"):
        widget.value = value


def _read(widget, kind, field):
    baseType, annotations, _ = field
    if kind == "qMRMLNodeComboBoxToNodeConnector":
        return widget.currentNode()
    if kind == "QComboBoxToStringableConnector":
        return _first(annotations, Choice).choices[widget.currentIndex]
    if kind == "ctkPathLineEditToPathConnector":
        return baseType(widget.currentPath)
    return widget.value

