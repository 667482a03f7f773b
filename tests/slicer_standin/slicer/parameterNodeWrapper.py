"""Stand-in for ``slicer.parameterNodeWrapper`` (tests only). Not Slicer.

Like Slicer, the decorator reads the class annotations with ``typing.get_type_hints(cls,
include_extras=True)`` (so string annotations from ``from __future__ import annotations`` must resolve
in the module), takes defaults from class attributes, and stores values on the wrapped
``vtkMRMLScriptedModuleNode``. ``fieldsOf(cls)`` exposes (type, annotations, default) for the harness.
"""

from __future__ import annotations

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
            for annotation in annotations:
                if isinstance(annotation, Choice) and value not in annotation.choices:
                    raise ValueError(f"{key}: {value!r} not in {annotation.choices}")
                if isinstance(annotation, WithinRange) and not annotation.minimum <= value <= annotation.maximum:
                    raise ValueError(f"{key}: {value!r} outside range")
            slicer._record("parameterNode.set", key)
            self.parameterNode.parameters[key] = value

        def connectGui(self, ui):
            slicer._record("connectGui")
            return "guiTag"

        def disconnectGui(self, tag) -> None:
            slicer._record("disconnectGui", tag)

        def __bool__(self) -> bool:
            return True

    Wrapper.__name__ = classtype.__name__
    Wrapper.__qualname__ = classtype.__qualname__
    return Wrapper
