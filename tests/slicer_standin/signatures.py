"""Signals and slots of the widget classes HippoSNN.ui and HippoSNNLib/widget.py connect (tests only).

Written by hand from the headers of the versions 3D Slicer 5.8.1 builds with, so that a connection Qt
would refuse at run time (it only prints a warning and the feature silently does nothing) fails a test
here. Signatures are Qt-normalised (``const QString&`` -> ``QString``). Sources:

* Slicer tag v5.8.1: ``Libs/MRML/Widgets/qMRMLWidget.h`` (slot setMRMLScene(vtkMRMLScene*), signal
  mrmlSceneChanged(vtkMRMLScene*)), ``Libs/MRML/Widgets/qMRMLNodeComboBox.h`` (public slots and
  signals), ``Modules/Loadable/Segmentations/Widgets/qMRMLSegmentationShow3DButton.h`` (a ctkMenuButton,
  not a qMRMLWidget: slots setSegmentationNode(vtkMRMLSegmentationNode*), setLocked(bool); no
  setMRMLScene).
* CTK at commit 82cae5781621845486bad2697aed095f04cfbe76 (the tag Slicer v5.8.1's
  ``SuperBuild/External_CTK.cmake`` pins): ``Libs/Widgets/ctkSliderWidget.h``,
  ``Libs/Widgets/ctkPathLineEdit.h``, ``Libs/Widgets/ctkCollapsibleButton.h``,
  ``Libs/Widgets/ctkMenuButton.h`` (ctkMenuButton : QPushButton).
* Qt 5 (Slicer 5.8 builds with Qt 5.15): ``src/widgets/widgets/qabstractbutton.h`` (signals clicked(bool),
  toggled(bool), pressed(), released(); slots click(), toggle(), setChecked(bool)),
  ``qabstractslider.h`` (valueChanged(int), sliderMoved(int), rangeChanged(int,int); slot setValue(int)),
  ``qspinbox.h``, ``qcombobox.h``, ``qwidget.h`` (slots setEnabled(bool), setVisible(bool)),
  ``src/corelib/kernel/qtimer.h`` (signal timeout(); slots start(), start(int), stop()).

Only the members listed exist for the checks: an entry missing here is a reason to read the header
and add it with its source, not to relax a test.
"""

from __future__ import annotations

import re
from typing import Dict, List, Set

#: class -> (base class, signals, slots); members of the bases are inherited.
CLASSES: Dict[str, tuple] = {
    "QObject": (None, {"destroyed()", "destroyed(QObject*)"}, {"deleteLater()"}),
    "QTimer": ("QObject", {"timeout()"}, {"start()", "start(int)", "stop()"}),
    "QWidget": ("QObject", set(), {"setEnabled(bool)", "setDisabled(bool)", "setVisible(bool)", "show()", "hide()"}),
    "QAbstractButton": (
        "QWidget",
        {"pressed()", "released()", "clicked()", "clicked(bool)", "toggled(bool)"},
        {"click()", "toggle()", "setChecked(bool)", "animateClick()", "animateClick(int)"},
    ),
    "QPushButton": ("QAbstractButton", set(), {"showMenu()"}),
    "QAbstractSlider": (
        "QWidget",
        {"valueChanged(int)", "sliderPressed()", "sliderMoved(int)", "sliderReleased()", "rangeChanged(int,int)"},
        {"setValue(int)"},
    ),
    "QSlider": ("QAbstractSlider", set(), set()),
    "QAbstractSpinBox": ("QWidget", {"editingFinished()"}, {"stepUp()", "stepDown()", "selectAll()", "clear()"}),
    "QSpinBox": ("QAbstractSpinBox", {"valueChanged(int)", "textChanged(QString)"}, {"setValue(int)"}),
    "QComboBox": (
        "QWidget",
        {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"},
        {"setCurrentIndex(int)", "setCurrentText(QString)", "clear()"},
    ),
    "QLabel": ("QWidget", set(), {"setText(QString)", "clear()"}),
    "QProgressBar": ("QWidget", {"valueChanged(int)"}, {"reset()", "setValue(int)", "setRange(int,int)"}),
    "QPlainTextEdit": ("QWidget", {"textChanged()"}, {"setPlainText(QString)", "appendPlainText(QString)", "clear()"}),
    "QTableWidget": ("QWidget", {"cellClicked(int,int)"}, {"clear()", "clearContents()"}),
    # CTK (commit 82cae57)
    "ctkCollapsibleButton": ("QAbstractButton", {"contentsCollapsed(bool)"}, {"setCollapsed(bool)"}),
    "ctkMenuButton": ("QPushButton", set(), set()),
    "ctkSliderWidget": (
        "QWidget",
        {"valueChanged(double)", "valueIsChanging(double)", "decimalsChanged(int)"},
        {
            "setValue(double)", "setMinimum(double)", "setMaximum(double)", "setRange(double,double)",
            "setSingleStep(double)", "setPageStep(double)", "setDecimals(int)", "reset()",
        },
    ),
    "ctkPathLineEdit": (
        "QWidget",
        {"validInputChanged(bool)", "currentPathChanged(QString)"},
        {"setCurrentPath(QString)", "browse()", "retrieveHistory()", "addCurrentPathToHistory()"},
    ),
    # Slicer v5.8.1
    "qMRMLWidget": ("QWidget", {"mrmlSceneChanged(vtkMRMLScene*)"}, {"setMRMLScene(vtkMRMLScene*)"}),
    "qMRMLNodeComboBox": (
        "QWidget",
        {
            "currentNodeChanged(vtkMRMLNode*)", "currentNodeIDChanged(QString)", "nodeActivated(vtkMRMLNode*)",
            "currentNodeChanged(bool)", "nodeAdded(vtkMRMLNode*)", "nodeAddedByUser(vtkMRMLNode*)",
            "nodeAboutToBeRemoved(vtkMRMLNode*)", "currentNodeRenamed(QString)", "nodeAboutToBeEdited(vtkMRMLNode*)",
        },
        {
            "setMRMLScene(vtkMRMLScene*)", "setCurrentNode(vtkMRMLNode*)", "setCurrentNode(QString)",
            "setCurrentNodeID(QString)", "setCurrentNodeIndex(int)", "removeCurrentNode()", "editCurrentNode()",
            "renameCurrentNode()",
        },
    ),
    "qMRMLSegmentationShow3DButton": (
        "ctkMenuButton",
        set(),
        {"setSegmentationNode(vtkMRMLSegmentationNode*)", "setLocked(bool)"},
    ),
}  # fmt: skip


def _members(className: str, index: int) -> Set[str]:
    if className not in CLASSES:
        raise KeyError(f"{className}: not in the signature table (read its header and add it)")
    result: Set[str] = set()
    while className:
        base, signals, slots = CLASSES[className]
        result |= (signals, slots)[index - 1]
        className = base
    return result


def signals(className: str) -> Set[str]:
    return _members(className, 1)


def slots(className: str) -> Set[str]:
    return _members(className, 2)


def arguments(signature: str) -> List[str]:
    """Qt-normalised argument types of ``name(type, type)``."""
    match = re.fullmatch(r"\s*\w+\((.*)\)\s*", signature)
    if not match:
        raise ValueError(f"not a signal/slot signature: {signature!r}")
    inner = match.group(1).strip()
    if not inner:
        return []
    result = []
    for part in inner.split(","):
        part = part.strip()
        part = re.sub(r"^const\s+", "", part).replace("&", "").replace(" ", "")
        result.append(part)
    return result


def normalise(signature: str) -> str:
    name = signature.split("(", 1)[0].strip()
    return f"{name}({','.join(arguments(signature))})"


def connectionError(senderClass: str, signal: str, receiverClass: str, slot: str) -> str:
    """Why Qt's string-based connect would refuse this connection, or "" if it would accept it.

    Qt's rule (QObject::connect, SIGNAL/SLOT macros): the signal must exist on the sender, the slot (or
    signal) on the receiver, and the slot's argument types must equal the first arguments of the
    signal's, type name by type name; Qt does not convert vtkMRMLNode* to vtkMRMLSegmentationNode*.
    """
    signal, slot = normalise(signal), normalise(slot)
    if signal not in signals(senderClass):
        return f"{senderClass} has no signal {signal}"
    if slot not in slots(receiverClass) | signals(receiverClass):
        return f"{receiverClass} has no slot {slot}"
    signalArgs, slotArgs = arguments(signal), arguments(slot)
    if len(slotArgs) > len(signalArgs) or signalArgs[: len(slotArgs)] != slotArgs:
        return f"{signal} -> {slot}: argument types differ"
    return ""
