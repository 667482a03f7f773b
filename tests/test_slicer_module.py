"""The HippoSNN Slicer module's widget and logic on the STAND-IN for Slicer (tests/slicer_standin).

The widget is built from the real .ui file the way Slicer does (loadUI refuses connections Qt would
refuse), bound to the parameter node with Slicer 5.8.1's connector rules, and run through its
lifecycle. These tests show that the module uses the documented API consistently, not that Slicer
behaves like the stand-in (README: "What was run in a real Slicer").
"""

from __future__ import annotations

import os
import sys
import unittest

import numpy as np
import pytest

from tests.slicer_standin import standin


@pytest.fixture()
def module():
    mod = standin.loadModule()
    import slicer

    slicer.mrmlScene.Clear()
    yield mod
    standin.unloadModule()


def _volume(slicer, name="T1", shape=(6, 5, 4), value=0.0):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.full(shape, value, dtype=np.float32) + np.arange(shape[-1]))
    return node


class _Box:
    def __init__(self, side: str) -> None:
        self.side = side


# -- 1. import and light self-test without nibabel, torch or the Markups module loaded -------------------


def test_module_imports_before_markups_is_loaded():
    """No `from slicer import vtkMRMLMarkupsROINode` at import time: the file imports before Markups loads."""
    mod = standin.loadModule(markups=False)
    try:
        import slicer

        assert not hasattr(slicer, "vtkMRMLMarkupsROINode")
        slicer.loadMarkupsModule()
        node = mod.HippoSNNLogic().getParameterNode()
        assert node.roiMode == "automatic" and node.roiNode is None
    finally:
        standin.unloadModule()


def test_light_selftest_passes_without_nibabel_and_torch():
    """The module's own HippoSNNTest (light part) with nibabel and torch made unimportable (Slicer 5.8)."""
    import subprocess

    script = str(standin.STANDIN / "light_selftest.py")
    result = subprocess.run([sys.executable, script, "--block", "nibabel,torch"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "none of torch, nibabel" in result.stdout


def test_selftest_runs_under_the_standin_and_fails_when_the_full_test_lacks_pytorch(module, monkeypatch):
    import slicer

    result = unittest.TextTestRunner(verbosity=0).run(unittest.TestSuite([module.HippoSNNTest("runTest")]))
    assert result.wasSuccessful()
    assert any("Segmentation test not requested" in str(c) for c in slicer.standinCalls)
    # requested but PyTorch missing: the test fails instead of returning early (it used to pass)
    monkeypatch.setenv("HIPPOSNN_FULL_SELFTEST", "1")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    test = module.HippoSNNTest()
    with pytest.raises(RuntimeError, match="PyTorch extension"):
        test.test_HippoSNNSegmentation()


# -- 2. Show 3D ------------------------------------------------------------------------------------------


def test_show3d_button_receives_the_output_segmentation(module):
    import slicer

    widget = standin.makeWidget(module)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    widget._parameterNode.outputSegmentation = segmentation
    assert widget.ui.segmentationShow3DButton.segmentationNode is segmentation
    widget.ui.outputSegmentationSelector.setCurrentNode(None)  # the user picks "Create new segmentation"
    assert widget.ui.segmentationShow3DButton.segmentationNode is None


# -- lifecycle: enter, exit, scene close, reload ----------------------------------------------------------


@pytest.fixture()
def keepCoreModules():
    """Reload forgets the core's modules; put the originals back so later tests keep their classes."""
    saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "hipposnn"}
    yield
    for name in [n for n in sys.modules if n.split(".")[0] == "hipposnn"]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_widget_lifecycle_enter_exit_scene_close_reload(module, keepCoreModules):
    import slicer

    widget = standin.makeWidget(module)
    volume = _volume(slicer)
    widget.enter()
    node = widget._parameterNode
    assert node.inputVolume is volume and widget.ui.applyButton.enabled
    assert widget.ui.inputVolumeSelector.currentNode() is volume
    # exit: the GUI is disconnected (a widget change no longer writes the parameter node)
    widget.exit()
    widget.ui.sideComboBox.currentIndex = 1
    widget.ui.sideComboBox.emit("currentIndexChanged(int)", 1)
    assert node.side == "both"
    widget.enter()
    widget.ui.sideComboBox.currentIndex = 1
    widget.ui.sideComboBox.emit("currentIndexChanged(int)", 1)
    assert node.side == "right"
    # scene close: a fresh parameter node, the volume gone, Apply disabled with the reason
    slicer.mrmlScene.Clear()
    assert widget._parameterNode is not None and widget._parameterNode.parameterNode is not node.parameterNode
    assert widget._parameterNode.inputVolume is None and widget._parameterNode.side == "both"
    assert not widget.ui.applyButton.enabled and "Select an input" in widget.ui.applyButton.toolTip
    # the observers follow the parameter node (one per event, none left on the old node)
    assert not node.parameterNode._observers
    # reload: the module file and its packages are imported afresh, consistently
    import hipposnn.inference  # noqa: F401  (loaded, as after a first Apply)

    newWidget = widget.onReload() or slicer.modules.HippoSNNWidget
    assert newWidget is not widget
    assert not widget.observations  # the old widget cleaned up (cleanup removes its observers)
    import importlib

    inference = importlib.import_module("hipposnn.inference")
    errors = importlib.import_module("hipposnn.errors")
    assert inference.Cancelled is errors.Cancelled
    assert sys.modules["HippoSNNLib.widget"].Cancelled is errors.Cancelled


def test_reload_order_old_reversed_reload_breaks_class_identity():
    """Why onReload forgets the packages instead of reloading them in reverse sys.modules order (the
    previous onReload). In a child process: importlib.reload changes the modules in place."""
    import subprocess

    code = (
        "import importlib, sys\n"
        "import hipposnn.inference\n"
        "names = [n for n in sys.modules if n.split('.')[0] in ('hipposnn', 'HippoSNNLib')]\n"
        "if sys.argv[1] == 'reversed':\n"
        "    for name in reversed(names):\n"
        "        importlib.reload(sys.modules[name])\n"
        "else:\n"
        "    from HippoSNNLib.widget import forgetPackages\n"
        "    forgetPackages()\n"
        "    import hipposnn.inference\n"
        "print(sys.modules['hipposnn.inference'].Cancelled is sys.modules['hipposnn.errors'].Cancelled)\n"
    )
    moduleDir = str(standin.MODULE_DIR)
    outputs = []
    for mode in ("reversed", "forget"):
        environment = dict(os.environ, PYTHONPATH=str(standin.STANDIN))  # the stand-in's qt/slicer
        result = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, cwd=moduleDir, env=environment
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.strip())
    assert outputs == ["False", "True"]


# -- 3. teaching view ----------------------------------------------------------------------------------


def test_remembered_boxes_do_not_survive_a_scene_close_or_another_image(module):
    import slicer

    logic = module.HippoSNNLogic()
    first = _volume(slicer, value=1.0)
    image = logic.imageFromVolume(first)
    logic.rememberBoxes(first, image, [_Box("right"), _Box("left")])
    assert [b.side for b in logic.rememberedBoxes(first, image, "left")] == ["left"]
    slicer.mrmlScene.Clear()
    second = _volume(slicer, value=50.0)
    assert second.GetID() == first.GetID()  # IDs restart after a scene close
    assert logic.rememberedBoxes(second, logic.imageFromVolume(second), "left") == []
    # and the widget forgets them at scene close
    widget = standin.makeWidget(module)
    widget.logic.rememberBoxes(second, logic.imageFromVolume(second), [_Box("right")])
    slicer.mrmlScene.Clear()
    assert widget.logic._boxes == {}


def test_teaching_volumes_get_display_nodes_and_are_shown(module):
    import slicer
    from hipposnn.options import AUTO_ROI_SHAPE

    class View:
        timesteps = 3
        slice_index = AUTO_ROI_SHAPE[0] - 1
        probability = np.zeros((3, 56, 48), dtype=np.float32)
        input_spikes = {"binary": np.zeros((3, 56, 48), np.int8), "ternary": np.zeros((3, 56, 48), np.int8)}
        image = np.ones((56, 48), dtype=np.float32)
        layer_order = ["enc0_0", "out"]
        firing_rates = {"enc0_0": 0.1}
        box = type("Box", (), {"matrix": np.eye(4)})()

    logic = module.HippoSNNLogic()
    nodes = logic.showTeachingView(View(), 2)
    assert all(node.GetDisplayNode() is not None for node in nodes.values())
    layers = [c for c in slicer.standinCalls if c[0] == "setSliceViewerLayers"]
    assert layers and layers[-1][1] == nodes["input"].GetID() and layers[-1][2] == nodes["probability"].GetID()


def test_teaching_timestep_slider_range_follows_the_view_not_the_parameter_node(module):
    import slicer

    widget = standin.makeWidget(module)
    _volume(slicer)
    widget.enter()
    slider = widget.ui.teachingTimestepSlider

    class View:
        timesteps = 7
        energy = dict(snn_synops=1.0, snn_energy_pj=0.9, ann_macs=2.0, ann_energy_pj=9.2, ratio_ann_to_snn=10.2)
        input_encoding = "poisson"

    widget.logic.computeTeachingView = lambda *a, **k: View()
    shown = []
    widget.logic.showTeachingView = lambda view, t, updatePlots=True: shown.append(t)
    widget.onTeachingButton()
    assert (slider.minimum, slider.maximum, slider.value) == (1, 7, 7)
    assert "10.20x" in widget.ui.energyLabel.text and "direct input" not in widget.ui.energyLabel.text
    View.input_encoding = "direct"  # the whole-brain default: its input spike volumes are only an illustration
    widget.onTeachingButton()
    assert "10.20x" in widget.ui.energyLabel.text and "direct input" in widget.ui.energyLabel.text
    widget.exit()
    widget.enter()  # reconnecting the GUI leaves the slider alone
    assert (slider.minimum, slider.maximum, slider.rangeSets) == (1, 7, 0)
    slider.value = 3
    assert shown[-1] == 3


def test_choosing_a_shipped_snn_sets_its_own_timesteps_and_a_loaded_node_keeps_its_own(module):
    widget = standin.makeWidget(module)
    node = widget._parameterNode
    node.timesteps = 12  # as a saved scene would hold it: opening the module leaves it alone
    widget.exit()
    widget.enter()
    assert node.timesteps == 12
    node.model = "snn-t8"
    assert node.timesteps == 8
    node.timesteps = 16  # the user may still choose another T for the same model
    assert node.timesteps == 16
    node.model = "snn-t32"
    assert node.timesteps == 32
    node.model = "ann"  # the ANN has no timesteps: the field keeps its value
    assert node.timesteps == 32
    # a custom model file (as after fine-tuning at the user's T) keeps the user's T
    from pathlib import Path

    node.timesteps = 16
    node.customWeightsPath = Path("/tmp/custom.pt")
    node.model = "snn"
    assert node.timesteps == 16


# -- 4. one box size: the core's AUTO_ROI_SHAPE --------------------------------------------------------


def test_place_rois_makes_the_boxes_apply_segments(module, monkeypatch):
    import hipposnn.roi
    import slicer
    from hipposnn.options import AUTO_ROI_SHAPE

    shapes = []

    def fake_place_rois(image, side="both", mode="auto", shape=hipposnn.roi.ROI_SHAPE, registration=None):
        shapes.append(tuple(shape))
        return []

    monkeypatch.setattr(hipposnn.roi, "place_rois", fake_place_rois)
    logic = module.HippoSNNLogic()
    logic.placeRois(_volume(slicer), "both")
    assert shapes == [tuple(AUTO_ROI_SHAPE)]
    with pytest.raises(ValueError):
        logic.computeTeachingView(_volume(slicer, "v2"), sliceIndex=AUTO_ROI_SHAPE[0])


# -- 5. the core's rules -------------------------------------------------------------------------------


def test_device_rule_is_the_cores(module):
    from hipposnn.errors import HippoSNNError
    from hipposnn.options import resolve_device

    logic = module.HippoSNNLogic()
    assert logic.resolveDevice("cpu") == "cpu"
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA was requested"):
            logic.resolveDevice("cuda")
        with pytest.raises(HippoSNNError):
            resolve_device("cuda")


# -- 7. cancel, pip_ensure, sample data, acknowledgement -------------------------------------------------


def test_cancel_shows_no_failure_dialog_but_a_failure_does(module):
    import slicer
    from hipposnn.errors import Cancelled

    slicer.app.testing = False  # an interactive session: tryWithErrorDisplay shows dialogs
    widget = standin.makeWidget(module)
    _volume(slicer)
    widget.enter()

    def cancelled(*args, **kwargs):
        raise Cancelled("segmentation cancelled")

    widget.logic.process = cancelled
    widget.onApplyButton()
    assert not [c for c in slicer.standinCalls if c[0] == "errorDisplay"]
    assert "Cancelled." in widget.ui.statusLabel.plainText
    assert not widget._busy and widget.ui.applyButton.enabled and slicer.app.overrideCursors == 0

    def failing(*args, **kwargs):
        raise ValueError("bad input")

    widget.logic.process = failing
    with pytest.raises(ValueError):  # Slicer's tryWithErrorDisplay shows the error and re-raises it
        widget.onApplyButton()
    dialogs = [c for c in slicer.standinCalls if c[0] == "errorDisplay"]
    assert len(dialogs) == 1 and dialogs[0][1].startswith("Failed to segment")
    assert not widget._busy and slicer.app.overrideCursors == 0


def test_pip_ensure_prompts_only_when_interactive(module, monkeypatch):
    import types

    import slicer
    from HippoSNNLib import dependencies

    calls = []
    packaging = types.SimpleNamespace(pip_ensure=lambda reqs, **kwargs: calls.append((list(reqs), kwargs)))
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: ["nibabel>=4.0"])
    dependencies.ensurePythonRequirements(interactive=False)
    dependencies.ensurePythonRequirements(interactive=True)
    assert [c[1]["prompt_install"] for c in calls] == [False, True]
    assert all(c[1]["requester"] == "HippoSNN" and c[0] == ["nibabel>=4.0"] for c in calls)


def test_torch_missing_asks_only_when_interactive_and_declining_stops(module):
    import PyTorchUtils
    import slicer
    from HippoSNNLib import dependencies

    PyTorchUtils.PyTorchUtilsLogic.installed = False
    try:
        dependencies.ensureTorch(interactive=False)
        assert ("PyTorchUtilsLogic.installTorch", False, ">=2.2") in slicer.standinCalls
        PyTorchUtils.PyTorchUtilsLogic.installResult = None  # the user declines
        with pytest.raises(RuntimeError, match="PyTorch is required"):
            dependencies.ensureTorch(interactive=True)
    finally:
        PyTorchUtils.PyTorchUtilsLogic.installed = True
        PyTorchUtils.PyTorchUtilsLogic.installResult = "torch"


def test_sample_data_registers_the_bundled_1mm_demo_t1(module):
    import SampleData

    SampleData.SampleDataLogic.registered.clear()
    module.registerSampleData()
    (entry,) = SampleData.SampleDataLogic.registered
    assert entry["uris"].endswith("hipposnn/resources/demo_t1_icbm2009a_1mm.nii.gz")
    assert entry["uris"].startswith("file://") and module.DEMO_T1.is_file()


def test_acknowledgement_cites_the_readme_paper(module):
    from tests.slicer_standin.standin import MODULE_DIR

    parent = type("Parent", (), {})()
    module.HippoSNN(parent)
    readme = (MODULE_DIR.parent / "README.md").read_text()
    for needle in ("Yue et al.", "Frontiers in Neuroscience 17:1267639", "2023"):
        assert needle in parent.acknowledgementText and needle in readme
    assert "Patel" not in parent.acknowledgementText
    assert parent.dependencies == ["Markups", "Segmentations"]


# -- 8. training in a child process ----------------------------------------------------------------------


def _trainingFolders(tmp_path):
    import torch
    from hipposnn.unet import UNet, UNetSpec
    from hipposnn.weights import save_model

    from tests.helpers import make_msd_folder

    msd = make_msd_folder(tmp_path / "msd", n=3)
    torch.manual_seed(0)
    save_model(UNet(UNetSpec(channels=(4, 8, 8, 8))), tmp_path / "ann.pt", {"stage": "ann"})
    return msd


def _runTimers(process, seconds=120.0):
    import time

    import qt

    deadline = time.time() + seconds
    while process.state == "running" or not process.poll():
        qt.QTimer.fireActive()
        if time.time() > deadline:
            raise AssertionError("the child process did not finish")
        time.sleep(0.05)


def test_convert_button_runs_a_child_process_streams_progress_and_keeps_the_gui_free(module, tmp_path):
    from pathlib import Path

    import qt
    import slicer

    msd = _trainingFolders(tmp_path)
    widget = standin.makeWidget(module)
    widget.logic.pythonExecutable = sys.executable  # PythonSlicer in Slicer
    node = widget._parameterNode
    node.annWeightsPath = tmp_path / "ann.pt"
    node.trainingDataPath = msd
    node.trainingOutputPath = tmp_path / "out"
    node.conversionTimesteps = 10
    node.device = "cpu"
    assert widget.ui.convertButton.enabled
    widget.ui.convertButton.click()  # returns at once: the work is in the child
    process = widget._trainingProcess
    assert process is not None and process.state == "running" and widget._busy
    assert widget.ui.cancelButton.enabled and not widget.ui.applyButton.enabled
    launched = [c for c in slicer.standinCalls if c[0] == "launchConsoleProcess"][-1]
    assert launched[1][1:4] == ["-m", "hipposnn", "convert"] and launched[2]["HIPPOSNN_PROGRESS"] == "lines"
    assert qt.QTimer._active  # polled by a timer on the GUI thread
    _runTimers(process)
    assert process.state == "succeeded", process.errorMessage
    assert node.customWeightsPath == Path(tmp_path / "out" / "converted.pt") and node.model == "snn"
    assert widget.ui.progressBar.value == 100  # from the child's progress lines
    log = widget.ui.statusLabel.plainText
    assert "statistic" in log and "converted in" in log and "hipposnn-progress" not in log  # its log lines
    assert not widget._busy and widget._trainingProcess is None and not qt.QTimer._active


def test_cancel_kills_the_training_child_without_a_failure_dialog(module, tmp_path):
    import slicer

    msd = _trainingFolders(tmp_path)
    slicer.app.testing = False
    widget = standin.makeWidget(module)
    widget.logic.pythonExecutable = sys.executable
    node = widget._parameterNode
    node.trainingDataPath = msd
    node.trainingOutputPath = tmp_path / "ft"
    node.device = "cpu"
    widget.ui.fineTuneButton.click()
    process = widget._trainingProcess
    widget.ui.cancelButton.click()
    assert process.state == "cancelled"
    _runTimers(process, seconds=30.0)
    assert process._process.poll() is not None  # the child is gone
    assert not [c for c in slicer.standinCalls if c[0] == "errorDisplay"]
    assert "Cancelled" in widget.ui.statusLabel.plainText and not widget._busy
    assert not (tmp_path / "ft" / "best.pt").exists()


def test_fine_tuning_into_a_folder_with_a_run_asks_before_replacing_it(module, tmp_path, monkeypatch):
    """The core refuses such a folder without --overwrite; the widget asks the user instead of failing."""
    import slicer

    out = tmp_path / "ft"
    out.mkdir()
    (out / "final.pt").write_bytes(b"a finished run")
    widget = standin.makeWidget(module)
    widget.logic.pythonExecutable = sys.executable
    node = widget._parameterNode
    node.trainingDataPath = _trainingFolders(tmp_path)
    node.trainingOutputPath = out
    node.device = "cpu"
    started = []
    monkeypatch.setattr(widget, "_startTraining", lambda *args, **kwargs: started.append(kwargs))
    monkeypatch.setattr(slicer.util, "confirmYesNoAnswer", False)
    widget.ui.fineTuneButton.click()
    (question,) = [c for c in slicer.standinCalls if c[0] == "confirmYesNoDisplay"]
    assert "final.pt" in question[1] and not started and (out / "final.pt").exists()
    assert "not started" in widget.ui.statusLabel.plainText
    monkeypatch.setattr(slicer.util, "confirmYesNoAnswer", True)
    widget.ui.fineTuneButton.click()
    assert started and started[0]["overwrite"] is True
    from HippoSNNLib.trainingLogic import fineTuneArguments

    assert "--overwrite" in fineTuneArguments("a.pt", "d", "o", 1, 8, "ternary", 0, "cpu", overwrite=True)
    assert "--overwrite" not in fineTuneArguments("a.pt", "d", "o", 1, 8, "ternary", 0, "cpu")


def test_a_failing_training_child_reports_its_one_line_error(module, tmp_path):
    import slicer

    slicer.app.testing = False
    widget = standin.makeWidget(module)
    widget.logic.pythonExecutable = sys.executable
    node = widget._parameterNode
    node.annWeightsPath = tmp_path / "missing.pt"
    node.trainingDataPath = tmp_path
    node.trainingOutputPath = tmp_path / "out"
    node.device = "cpu"
    widget.ui.convertButton.click()
    _runTimers(widget._trainingProcess, seconds=60.0)
    (dialog,) = [c for c in slicer.standinCalls if c[0] == "errorDisplay"]
    assert dialog[1].startswith("Failed to convert the model.") and "Traceback" not in dialog[1]


# -- shape -------------------------------------------------------------------------------------------


def test_module_file_is_thin_and_each_lib_file_has_one_job():
    from tests.slicer_standin.standin import MODULE_DIR

    assert len((MODULE_DIR / "HippoSNN.py").read_text().splitlines()) < 300
    lib = {p.stem for p in (MODULE_DIR / "HippoSNNLib").glob("*.py")}
    assert {"widget", "segmentationLogic", "trainingLogic", "teachingLogic", "dependencies"} <= lib
    core = "\n".join(p.read_text() for p in (MODULE_DIR / "hipposnn").rglob("*.py"))
    for forbidden in ("import slicer", "import qt", "import ctk", "from slicer"):
        assert forbidden not in core


@pytest.mark.slow
def test_full_selftest_segments_the_demo_t1_with_the_default_snn(module, monkeypatch):
    """HippoSNNTest with HIPPOSNN_FULL_SELFTEST=1: the default ternary SNN on the bundled demo T1 (~30 s)."""
    import slicer

    monkeypatch.setenv("HIPPOSNN_FULL_SELFTEST", "1")
    result = unittest.TextTestRunner(verbosity=0).run(unittest.TestSuite([module.HippoSNNTest("runTest")]))
    assert result.wasSuccessful(), result.failures + result.errors
    assert ("delayDisplay", "Segmentation test passed") in slicer.standinCalls


def test_apply_creates_the_named_output_fills_the_table_and_feeds_show3d(module):
    import slicer

    widget = standin.makeWidget(module)
    volume = _volume(slicer, "MRHead")
    widget.enter()
    widget.ui.inputVolumeSelector.emit("currentNodeChanged(vtkMRMLNode*)", volume)
    seen = {}

    def process(inputVolume, outputSegmentation, **kwargs):
        seen.update(kwargs, inputVolume=inputVolume, outputSegmentation=outputSegmentation)
        kwargs["progressCallback"](0.5, "halfway")
        summary = {"etiv_mm3": 1.5e6, "volumes_per_etiv": {"right": 0.002, "left": 0.0019336},
                   "asymmetry_index": -0.0333,
                   "qc": {"sides": {"right": {"quality": "good", "reasons": []},
                                    "left": {"quality": "poor", "reasons": ["low network confidence"]}}}}
        return {"volumes_mm3": {"right": 3000.0, "left": 2900.4}, "boxes": [], "summary": summary}

    widget.logic.process = process
    widget.ui.applyButton.click()
    output = widget._parameterNode.outputSegmentation
    assert output is not None and output.GetName() == "MRHead hippocampus"
    assert seen["outputSegmentation"] is output and seen["interactive"] is True and seen["threshold"] == 0.5
    assert widget.ui.segmentationShow3DButton.segmentationNode is output
    table = widget.ui.volumesTable
    assert table.rowCount == 4 and table.item(0, 0).text() == "Left hippocampus" and table.item(0, 1).text() == "2900"
    assert table.item(0, 2).text() == "1.93" and table.item(0, 3).text() == "poor: low network confidence"
    assert table.item(1, 3).text() == "good" and table.item(2, 1).text() == "1500000"
    assert table.item(3, 1).text() == "-0.033"
    assert "CHECK THE RESULT: the left hippocampus is poor" in widget.ui.statusLabel.plainText
    assert not widget._busy and widget.ui.applyButton.enabled


def test_core_warnings_reach_the_log_box_during_segmentation(module):
    import logging

    logic = module.HippoSNNLogic()
    lines = []
    logic.logCallback = lines.append
    with logic.coreWarningsToLog():
        logging.getLogger("hipposnn.native").warning("compiling the fused C++ spiking kernels in the background")
        logging.getLogger("hipposnn.native").info("not shown")
    logging.getLogger("hipposnn.native").warning("after: not shown")
    assert lines == ["compiling the fused C++ spiking kernels in the background"]
