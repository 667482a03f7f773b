"""Slicer-free checks of the HippoSNN Slicer module's files: UI, parameter bindings, CMake lists, metadata.

These read the real files (.ui XML, CMakeLists.txt, HippoSNN.json, HippoSNN.py source) and need no
Slicer. The parameter-node field types come from the module imported on the stand-in (see
tests/slicer_standin/README.md), whose decorator reads the annotations the way Slicer's does.
"""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest

from tests.slicer_standin import signatures

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "HippoSNN"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "HippoSNN.ui"
MODULE_FILE = MODULE_DIR / "HippoSNN.py"
#: The Slicer-layer files that use the .ui widgets and resources.
SLICER_FILES = [MODULE_FILE] + sorted((MODULE_DIR / "HippoSNNLib").glob("*.py"))

# Expected Qt class for each widget-name suffix (Slicer naming convention: the name ends with the kind).
SUFFIX_CLASSES = [
    ("CollapsibleButton", {"ctkCollapsibleButton"}),
    ("Show3DButton", {"qMRMLSegmentationShow3DButton"}),
    ("Button", {"QPushButton"}),
    ("Selector", {"qMRMLNodeComboBox"}),
    ("ComboBox", {"QComboBox"}),
    ("SpinBox", {"QSpinBox"}),
    ("SliderWidget", {"ctkSliderWidget"}),
    ("Slider", {"QSlider"}),
    ("LineEdit", {"ctkPathLineEdit"}),
    ("progressBar", {"QProgressBar"}),
    ("Table", {"QTableWidget"}),
    ("statusLabel", {"QPlainTextEdit"}),  # Slicer modules' name for the log box
    ("Label", {"QLabel"}),
]
# Attributes our code uses per class (a subset of the Qt/CTK/MRML widget APIs, checked by hand against their docs).
WIDGET_API = {
    "QPushButton": {"connect", "enabled", "toolTip", "text"},
    "QSlider": {"connect", "maximum", "minimum", "value"},
    "QProgressBar": {"setValue", "setFormat"},
    "QPlainTextEdit": {"appendPlainText", "plainText"},
    "QTableWidget": {"setRowCount", "setItem"},
    "QLabel": {"text"},
    "qMRMLNodeComboBox": {"connect", "baseName", "currentNode", "setMRMLScene"},
    "qMRMLSegmentationShow3DButton": {"setSegmentationNode"},
}


def _widgets() -> Dict[str, ET.Element]:
    tree = ET.parse(UI_FILE)
    return {w.get("name"): w for w in tree.iter("widget")}


def _prop(widget: ET.Element, name: str):
    for p in widget.findall("property"):
        if p.get("name") == name:
            child = list(p)[0]
            if child.tag == "stringlist":
                return [s.text for s in child.findall("string")]
            return child.text
    return None


@pytest.fixture(scope="module")
def module():
    from tests.slicer_standin import standin

    mod = standin.loadModule()
    yield mod
    standin.unloadModule()


def test_ui_parses_with_qmrmlwidget_root_and_sections():
    tree = ET.parse(UI_FILE)
    root = tree.getroot().find("widget")
    assert root.get("class") == "qMRMLWidget" and root.get("name") == "HippoSNN"
    widgets = _widgets()
    sections = {_prop(w, "text") for w in widgets.values() if w.get("class") == "ctkCollapsibleButton"}
    assert {"Inputs", "Outputs", "Parameters", "Training", "Teaching", "Advanced"} <= sections
    for name in ("applyButton", "cancelButton", "progressBar", "statusLabel"):
        assert name in widgets
    # every widget with a setMRMLScene slot (Slicer v5.8.1 headers) gets the scene from the root widget
    connected = {
        c.findtext("receiver")
        for c in tree.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    }
    mrml = {
        n for n, w in widgets.items()
        if n != "HippoSNN" and "setMRMLScene(vtkMRMLScene*)" in signatures.slots(w.get("class"))
    }  # fmt: skip
    assert mrml and mrml == connected
    seg = widgets["outputSegmentationSelector"]
    assert _prop(seg, "noneDisplay") == "Create new segmentation on Apply"
    assert _prop(seg, "addEnabled") == "true"


def test_every_ui_connection_is_one_qt_accepts():
    """Each <connection> against the signal/slot signatures of Slicer 5.8.1 / CTK / Qt 5 headers
    (tests/slicer_standin/signatures.py): Qt refuses the others at run time with only a warning."""
    widgets = _widgets()
    connections = list(ET.parse(UI_FILE).iter("connection"))
    assert connections
    for c in connections:
        sender, receiver = widgets[c.findtext("sender")], widgets[c.findtext("receiver")]
        error = signatures.connectionError(
            sender.get("class"), c.findtext("signal"), receiver.get("class"), c.findtext("slot")
        )
        assert not error, f"{c.findtext('sender')} -> {c.findtext('receiver')}: {error}"
    # the check bites: the two Show 3D connections the .ui had are refused
    assert "no slot setMRMLScene" in signatures.connectionError(
        "qMRMLWidget", "mrmlSceneChanged(vtkMRMLScene*)", "qMRMLSegmentationShow3DButton", "setMRMLScene(vtkMRMLScene*)"
    )
    assert signatures.connectionError(
        "qMRMLNodeComboBox", "currentNodeChanged(vtkMRMLNode*)",
        "qMRMLSegmentationShow3DButton", "setSegmentationNode(vtkMRMLNode*)",
    )  # fmt: skip


def test_python_connects_name_signals_the_widgets_have():
    widgets = _widgets()
    for path in SLICER_FILES:
        for name, signal in re.findall(r'self\.ui\.(\w+)\.connect\(\s*"([^"]+)"', path.read_text()):
            assert signatures.normalise(signal) in signatures.signals(widgets[name].get("class")), (path.name, name)


def test_every_ui_name_used_exists_with_expected_class():
    source = "\n".join(path.read_text() for path in SLICER_FILES)
    used = re.findall(r"self\.ui\.(\w+)(?:\.(\w+))?", source)
    assert used, "the module uses no ui widgets?"
    widgets = _widgets()
    for name, attr in used:
        assert name in widgets, f"ui.{name} is used in HippoSNN.py but not in HippoSNN.ui"
        cls = widgets[name].get("class")
        expected = next((classes for suffix, classes in SUFFIX_CLASSES if name.endswith(suffix)), None)
        assert expected is not None, f"ui.{name}: name does not end with a known widget kind"
        assert cls in expected, f"ui.{name} is a {cls}, expected one of {sorted(expected)}"
        if attr:
                assert attr in WIDGET_API.get(cls, set()), f"ui.{name}.{attr}: not an attribute we know on {cls}"


def test_parameter_bindings_match_parameter_node_fields(module):
    """Every bound widget gets the connector Slicer 5.8.1's guiConnectors.py would pick (stand-in rules)."""
    from hipposnn.options import AUTO_ROI_SHAPE, THRESHOLD_RANGE
    from slicer.parameterNodeWrapper import Choice, WithinRange, connectorKind, fieldsOf

    fields = fieldsOf(module.parameterNodeClass())
    bound = {_prop(w, "SlicerParameterName"): w for w in _widgets().values() if _prop(w, "SlicerParameterName")}
    assert set(bound) == set(fields), f"unbound fields {set(fields) - set(bound)}, unknown {set(bound) - set(fields)}"
    for name, widget in bound.items():
        baseType, annotations, default = fields[name]
        cls = widget.get("class")
        typeName = getattr(baseType, "__name__", str(baseType))
        if typeName.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", f"{name}: node field bound to {cls}"
            assert _prop(widget, "nodeTypes") == [typeName], f"{name}: combobox node types differ from {typeName}"
            continue
        assert connectorKind(cls, baseType, annotations), name  # raises like Slicer for a wrong pair
        for annotation in annotations:
            if isinstance(annotation, Choice):
                items = [item.find("property/string").text for item in widget.findall("item")]
                assert items == annotation.choices, f"{name}: combobox items {items} != choices {annotation.choices}"
                assert default in annotation.choices
            if isinstance(annotation, WithinRange) and cls in ("QSpinBox", "QSlider", "ctkSliderWidget"):
                assert float(_prop(widget, "minimum")) == annotation.minimum, name
                assert float(_prop(widget, "maximum")) == annotation.maximum, name
                assert annotation.minimum <= default <= annotation.maximum
                if _prop(widget, "value") is not None:
                    assert float(_prop(widget, "value")) == default, f"{name}: .ui value differs from the default"
    ranges = {name: _first(annotations, WithinRange) for name, (_, annotations, _) in fields.items()}
    assert (ranges["teachingSlice"].minimum, ranges["teachingSlice"].maximum) == (0, AUTO_ROI_SHAPE[0] - 1)
    assert (ranges["threshold"].minimum, ranges["threshold"].maximum) == THRESHOLD_RANGE
    # the timestep slider is view state: bound, its connector would reset its range on every reconnect
    assert _prop(_widgets()["teachingTimestepSlider"], "SlicerParameterName") is None


def _first(annotations, kind):
    return next((a for a in annotations if isinstance(a, kind)), None)


def _cmake_list(text: str, variable: str) -> List[str]:
    match = re.search(r"set\(" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [t.replace("${MODULE_NAME}", "HippoSNN") for t in match.group(1).split()]


def test_module_cmakelists_lists_every_needed_file():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    for entry in scripts + resources:
        assert (MODULE_DIR / entry).is_file(), f"listed but missing: {entry}"
    assert len(set(scripts + resources)) == len(scripts + resources), "duplicate entries"
    needed_py = [MODULE_DIR / "HippoSNN.py"] + sorted((MODULE_DIR / "HippoSNNLib").rglob("*.py"))
    needed_py += sorted((MODULE_DIR / "hipposnn").rglob("*.py"))
    for path in needed_py:
        if "__pycache__" in path.parts:
            continue
        assert str(path.relative_to(MODULE_DIR)) in scripts, (
            f"not in MODULE_PYTHON_SCRIPTS: {path.relative_to(MODULE_DIR)}"
        )
    needed_res = [p for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()]
    for sub in ("models", "resources", "csrc"):
        needed_res += [
            p for p in (MODULE_DIR / "hipposnn" / sub).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    for path in needed_res:
        assert str(path.relative_to(MODULE_DIR)) in resources, (
            f"not in MODULE_PYTHON_RESOURCES: {path.relative_to(MODULE_DIR)}"
        )
    source = "\n".join(path.read_text() for path in SLICER_FILES)
    for used in re.findall(r'resourcePath\("([^"]+)"\)', source):
        assert f"Resources/{used}" in resources
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert (MODULE_DIR / "Testing" / "CMakeLists.txt").is_file()
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()


def _png_size(path: Path):
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_extension_metadata_consistent_with_catalog_entry():
    text = (ROOT / "CMakeLists.txt").read_text()
    meta = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert meta.get(key), f"{key} missing"
    assert re.search(r"project\(HippoSNN\)", text)
    assert "add_subdirectory(HippoSNN)" in text and "## NEXT_MODULE" in text
    assert (
        text.index("## NEXT_MODULE")
        < text.index("Slicer_EXTENSION_GENERATE_CONFIG")
        < text.index("Slicer_EXTENSION_CPACK")
    )
    entry = json.loads((ROOT / "HippoSNN.json").read_text())
    assert "slicer-extension-catalog-entry-schema-v1.0.1" in entry["$schema"]
    assert entry["build_dependencies"] == meta["EXTENSION_DEPENDS"].split(";") == ["PyTorch"]
    assert entry["category"] == meta["EXTENSION_CATEGORY"]
    assert entry["scm_revision"] == "main" and entry["build_subdirectory"] == "."
    repo = entry["scm_url"].removesuffix(".git").split("github.com/")[1]
    assert repo.split("/")[1] == "SlicerHippoSNN"
    assert repo in meta["EXTENSION_HOMEPAGE"]
    for url in [meta["EXTENSION_ICONURL"]] + meta["EXTENSION_SCREENSHOTURLS"].split():
        prefix = f"https://raw.githubusercontent.com/{repo}/main/"
        assert url.startswith(prefix), url
        assert (ROOT / url[len(prefix) :]).is_file(), f"{url} points to a file not in the repository"
    assert _png_size(ROOT / "Resources" / "HippoSNN.png") == (128, 128)
    assert _png_size(MODULE_DIR / "Resources" / "Icons" / "HippoSNN.png")
    license_text = (ROOT / "LICENSE.txt").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()


def _python39():
    """A Python 3.9 interpreter (Slicer 5.8's), or None."""
    import glob
    import shutil
    import subprocess

    pyenv = str(Path.home() / ".pyenv/versions/3.9*/bin/python3.9")
    candidates = [shutil.which("python3.9")] + sorted(glob.glob(pyenv))
    for candidate in filter(None, candidates):
        ok = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], capture_output=True)
        if ok.returncode == 0:
            return candidate
    return None


def test_module_and_core_compile_with_python39():
    """Compiled by a real 3.9 interpreter, not by whichever Python runs pytest (.ci/slicer_py39 also
    imports the module and runs its self-test there)."""
    import subprocess

    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine (.ci/slicer_py39 falls back to vermin)")
    files = [str(p) for p in SLICER_FILES + sorted((MODULE_DIR / "hipposnn").rglob("*.py"))]
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f, encoding='utf8').read(), f, 'exec')"
    result = subprocess.run([python39, "-c", code, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_module_imports_nothing_heavy_at_load():
    """In a fresh process: importing HippoSNN.py loads neither torch, nibabel, SimpleITK nor PyTorchUtils."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests.slicer_standin import standin; "
        "m = standin.loadModule(); print(sorted({'torch', 'nibabel', 'SimpleITK', 'PyTorchUtils'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
    source = MODULE_FILE.read_text()
    assert "HippoSNNTest" in source and source.index("class HippoSNN(") < source.index(
        "def registerSampleData"
    ) < source.index("class HippoSNNParameterNode") < source.index("class HippoSNNWidget") < source.index(
        "class HippoSNNLogic"
    ) < source.index("class HippoSNNTest")


def test_standin_connector_rules_refuse_what_slicer_refuses(module):
    """The stand-in's parameterNodeWrapper picks connectors like Slicer 5.8.1's guiConnectors.py."""
    from pathlib import Path as P

    from slicer.parameterNodeWrapper import Choice, WithinRange, connectorKind

    refused = [
        ("ctkSliderWidget", int, [WithinRange(0, 5)]),  # an int on a ctkSliderWidget (float connector only)
        ("QComboBox", str, []),  # a QComboBox without Choice
        ("QSlider", int, []),  # an unbounded QSlider
        ("ctkSliderWidget", float, []),  # an unbounded ctkSliderWidget
        ("QLineEdit", P, []),  # a path needs a ctkPathLineEdit
    ]
    for widgetClass, baseType, extras in refused:
        with pytest.raises(RuntimeError):
            connectorKind(widgetClass, baseType, extras)
    assert connectorKind("QComboBox", str, [Choice(["a"])]) == "QComboBoxToStringableConnector"
    assert connectorKind("QSpinBox", int, []) == "QSliderOrSpinBoxToIntConnector"
