"""The module's user interface: parameter-node bound widgets, actions, progress, Cancel and the log box.

All computation is in the logic (``HippoSNN.HippoSNNLogic``); the widget passes values in and shows
what comes back. Segmentation, ROI placement and the teaching view run in Slicer's process (seconds);
conversion and fine-tuning run in a child process polled by a timer, so the GUI stays responsive.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Dict, Optional

import qt
import slicer
import vtk
from hipposnn.errors import Cancelled
from hipposnn.options import MODEL_TIMESTEPS, interface_coding, resolve_choice
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from HippoSNNLib import terminology

#: Top-level packages the Reload button reloads besides the module file (see ``onReload``).
RELOADED_PACKAGES = ("HippoSNNLib", "hipposnn")


def pathOrNone(path: Optional[Path]) -> Optional[str]:
    """A usable file-system path, or None for an empty path field (Path("") reads back as ".")."""
    if path is None:
        return None
    text = str(path)
    return None if text in ("", ".") else text


def forgetPackages(packages=RELOADED_PACKAGES) -> list:
    """Remove the packages' modules from ``sys.modules`` so that the next import loads them afresh.

    Reloading module by module in any fixed order is wrong for some dependency graph (a module reloaded
    before what it imports keeps the old classes: ``inference.Cancelled is not errors.Cancelled``).
    Forgetting them all and letting the module file import them again gives one consistent set.
    """
    names = [name for name in sys.modules if name.split(".")[0] in packages]
    for name in names:
        del sys.modules[name]
    return names


class HippoSNNWidgetBase(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Widget of the HippoSNN module; ``HippoSNN.HippoSNNWidget`` supplies ``createLogic``."""

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelRequested = False
        self._busy = False
        self._teachingView = None
        self._trainingProcess = None
        self._lastModel = None  # the model choice whose timesteps the parameter node holds

    def createLogic(self):
        raise NotImplementedError

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HippoSNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = self.createLogic()
        self.logic.logCallback = self.addLog

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.placeRoiButton.connect("clicked(bool)", self.onPlaceRoiButton)
        self.ui.convertButton.connect("clicked(bool)", self.onConvertButton)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTuneButton)
        self.ui.teachingButton.connect("clicked(bool)", self.onTeachingButton)
        self.ui.teachingTimestepSlider.connect("valueChanged(int)", self.onTeachingTimestepChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        # Show 3D takes a vtkMRMLSegmentationNode*: Qt's string connect from the combobox's
        # currentNodeChanged(vtkMRMLNode*) cannot reach it, so it is bound here (PythonQt casts the node)
        self.ui.outputSegmentationSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", self.onOutputSegmentationChanged
        )
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.setValue(0)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._trainingProcess is not None:
            self._trainingProcess.cancel()
        self.removeObservers()

    def onReload(self) -> None:
        """Called by the Reload button: the helper packages are imported afresh with the module file."""
        self.cleanup()
        forgetPackages()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)
        self._teachingView = None
        self.logic.clearBoxes()

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure the parameter node exists and is observed; pre-select the first scalar volume."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe the parameter node; the GUI follows it through connectGui."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        self._lastModel = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.onOutputSegmentationChanged(self._parameterNode.outputSegmentation)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Enable Apply only with valid inputs; the tooltip says what is missing."""
        node = self._parameterNode
        self._followModelTimesteps(node)
        reason = ""
        if node is None or not node.inputVolume:
            reason = _("Select an input T1 volume")
        elif node.roiMode == "user" and not node.roiNode:
            reason = _("Select or place a markups ROI (or choose automatic ROI placement)")
        elif self._busy:
            reason = _("Processing is running")
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or _("Segment both hippocampi of the input volume")
        hasInput = bool(node and node.inputVolume)
        self.ui.placeRoiButton.enabled = hasInput and not self._busy
        self.ui.teachingButton.enabled = hasInput and not self._busy
        canTrain = bool(node and pathOrNone(node.trainingDataPath) and pathOrNone(node.trainingOutputPath))
        self.ui.convertButton.enabled = canTrain and bool(node and pathOrNone(node.annWeightsPath)) and not self._busy
        self.ui.fineTuneButton.enabled = canTrain and not self._busy

    def _followModelTimesteps(self, node) -> None:
        """A newly chosen shipped SNN brings its own timesteps (T = 8 or 32); the user may change them after.

        Not for a custom model file (its T is the one the user fine-tuned at) nor for a node as a saved
        scene holds it (first sight: it keeps its timesteps)."""
        model = node.model if node is not None else None
        previous, self._lastModel = self._lastModel, model
        if previous is None or model == previous or pathOrNone(node.customWeightsPath):
            return
        steps = MODEL_TIMESTEPS.get(resolve_choice(model, "auto"))  # the module segments whole-brain scans
        if steps is not None and node.timesteps != steps:
            node.timesteps = steps

    def onInputVolumeChanged(self, node) -> None:
        """Name a new output segmentation after the input volume."""
        if node:
            self.ui.outputSegmentationSelector.baseName = _("{volumeName} hippocampus").format(
                volumeName=node.GetName()
            )

    def onOutputSegmentationChanged(self, node) -> None:
        """Give the Show 3D button the segmentation it shows."""
        self.ui.segmentationShow3DButton.setSegmentationNode(node)

    # -- progress, cancel, log -----------------------------------------------------------------------

    def addLog(self, text: str) -> None:
        """Append a line to the log box and keep the GUI responsive."""
        self.ui.statusLabel.appendPlainText(text)
        slicer.app.processEvents()

    def _progress(self, fraction: float, message: str) -> bool:
        """Progress callback given to the logic: updates the bar; returning False cancels."""
        self.ui.progressBar.setValue(int(round(100 * max(0.0, min(1.0, fraction)))))
        self.ui.progressBar.setFormat(f"{message} %p%")
        slicer.app.processEvents()
        return not self._cancelRequested

    def _setBusy(self, busy: bool) -> None:
        self._busy = busy
        self._cancelRequested = False
        self.ui.cancelButton.enabled = busy
        if not busy:
            self.ui.progressBar.setFormat("%p%")
        self._checkCanApply()

    def onCancelButton(self) -> None:
        """Stop the running work: kill the training process, or stop segmentation at its next step."""
        self._cancelRequested = True
        self.addLog(_("Cancelling..."))
        if self._trainingProcess is not None:
            self._trainingProcess.cancel()

    @contextlib.contextmanager
    def _longTask(self, errorMessage: str):
        """Busy state (progress bar, Cancel) around in-process work; one error dialog on failure.

        A cancel is not a failure: :class:`Cancelled` is caught before ``tryWithErrorDisplay`` sees it.
        Any other error is shown and re-raised by ``tryWithErrorDisplay``, as everywhere in Slicer.
        """
        self._setBusy(True)
        try:
            with slicer.util.tryWithErrorDisplay(errorMessage, waitCursor=True):
                try:
                    yield
                except Cancelled:
                    self.addLog(_("Cancelled."))
        finally:
            self._setBusy(False)

    # -- actions ---------------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        """Run the segmentation."""
        node = self._parameterNode
        self.ui.statusLabel.plainText = ""
        with self._longTask(_("Failed to segment the hippocampus.")):
            if not node.outputSegmentation:
                node.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLSegmentationNode", self.ui.outputSegmentationSelector.baseName
                )
            result = self.logic.process(
                node.inputVolume,
                node.outputSegmentation,
                roiNode=node.roiNode if node.roiMode == "user" else None,
                side=node.side,
                model=node.model,
                timesteps=node.timesteps,
                coding=interface_coding(node.coding),
                threshold=node.threshold,
                seed=node.seed,
                device=node.device,
                checkpoint=pathOrNone(node.customWeightsPath),
                progressCallback=self._progress,
                interactive=True,
            )
            self._showVolumes(result["volumes_mm3"], result.get("summary"))
            if node.roiMode == "automatic":
                self.logic.updateRoiNodes(node.inputVolume, result["boxes"])

    def _showVolumes(self, volumes: Dict[str, float], summary: Optional[Dict] = None) -> None:
        """Volumes, eTIV-normalised volumes and per-side quality; a poor side is also spelled out in the log."""
        summary = summary or {}
        perEtiv = summary.get("volumes_per_etiv") or {}
        sides = (summary.get("qc") or {}).get("sides") or {}
        rows = [(terminology.segmentDefinition(side).name, f"{value:.0f}",
                 f"{1000 * perEtiv[side]:.2f}" if side in perEtiv else "",
                 self._qualityText(sides.get(side))) for side, value in sorted(volumes.items())]
        if summary.get("etiv_mm3"):
            rows.append((_("Estimated total intracranial volume"), f"{summary['etiv_mm3']:.0f}", "", ""))
        if summary.get("asymmetry_index") is not None:
            rows.append((_("Asymmetry index (left - right) / mean"), f"{summary['asymmetry_index']:+.3f}", "", ""))
        table = self.ui.volumesTable
        table.setRowCount(len(rows))
        for row, cells in enumerate(rows):
            for column, text in enumerate(cells):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        for side, info in sorted(sides.items()):
            if info.get("quality") == "poor":
                self.addLog(_("CHECK THE RESULT: the {side} hippocampus is poor: {reasons}").format(
                    side=side, reasons="; ".join(info.get("reasons", []))))

    @staticmethod
    def _qualityText(info: Optional[Dict]) -> str:
        if not info:
            return ""
        if info.get("quality") == "poor":
            return _("poor: {reasons}").format(reasons="; ".join(info.get("reasons", [])))
        return _("good")

    def onPlaceRoiButton(self) -> None:
        """Place the hippocampus ROI(s) automatically; the user may then move them and switch to user ROI."""
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to place the ROI."), waitCursor=True):
            roiNodes = self.logic.placeRois(node.inputVolume, node.side, interactive=True)
            if roiNodes:
                node.roiNode = roiNodes[0]

    def _startTraining(self, run, modelPath: Optional[str], errorMessage: str, selectedMessage: str, **settings):
        """Start ``run`` (``logic.convertModel`` or ``logic.fineTuneModel``) in a child process; the widget
        stays busy until ``_onTrainingFinished``.

        Both take the model, the training data and output folders, then the same settings and GUI
        callbacks (no blocking); ``settings`` are the keywords only one of them has.
        """
        node = self._parameterNode
        self.ui.statusLabel.plainText = ""
        self._setBusy(True)
        try:
            with slicer.util.tryWithErrorDisplay(errorMessage, waitCursor=True):
                self._trainingProcess = run(
                    modelPath,
                    str(node.trainingDataPath),
                    str(node.trainingOutputPath),
                    coding=interface_coding(node.coding, concrete=True),
                    seed=node.seed,
                    device=node.device,
                    progressCallback=self._progress,
                    interactive=True,
                    waitForCompletion=False,
                    logCallback=self.addLog,
                    finishedCallback=lambda process: self._onTrainingFinished(process, errorMessage, selectedMessage),
                    **settings,
                )
        except Exception:
            self._setBusy(False)
            raise

    def _onTrainingFinished(self, process, errorMessage: str, selectedMessage: str) -> None:
        """Called by the training process (from the polling timer) when it ends."""
        self._trainingProcess = None
        self._setBusy(False)
        if process.state == "succeeded":
            if self._parameterNode:
                self._parameterNode.customWeightsPath = Path(process.outputPath)
                self._parameterNode.model = "snn"
            self.addLog(selectedMessage.format(path=process.outputPath))
        elif process.state == "cancelled":
            self.addLog(_("Cancelled: nothing was written."))
        else:
            self.addLog(process.errorMessage)
            slicer.util.errorDisplay(f"{errorMessage}\n\n{process.errorMessage}")

    def onConvertButton(self) -> None:
        """Convert the chosen ANN weights into an SNN by threshold balancing, in a child process."""
        node = self._parameterNode
        self._startTraining(
            self.logic.convertModel,
            str(node.annWeightsPath),
            _("Failed to convert the model."),
            _("Converted model selected for segmentation: {path}"),
            timesteps=node.conversionTimesteps,
        )

    def onFineTuneButton(self) -> None:
        """Fine-tune the selected (converted) SNN on the user's labelled folder, in a child process."""
        node = self._parameterNode
        existing = self.logic.existingRunFiles(str(node.trainingOutputPath))
        if existing and not slicer.util.confirmYesNoDisplay(
            _("The output folder already holds a training run ({files}). Replace it?").format(
                files=", ".join(existing)
            ),
            windowTitle=_("Fine-tune"),
        ):
            self.addLog(_("Fine-tuning not started: choose another output folder to keep the run that is there."))
            return
        self._startTraining(
            self.logic.fineTuneModel,
            pathOrNone(node.customWeightsPath),
            _("Failed to fine-tune the model."),
            _("Fine-tuned model selected for segmentation: {path}"),
            epochs=node.fineTuneEpochs,
            timesteps=node.timesteps,
            overwrite=bool(existing),
        )

    def onTeachingButton(self) -> None:
        """Compute and show the teaching view of the chosen ROI slice."""
        node = self._parameterNode
        with self._longTask(_("Failed to compute the teaching view.")):
            self._teachingView = self.logic.computeTeachingView(
                node.inputVolume,
                side="left" if node.side == "left" else "right",
                sliceIndex=node.teachingSlice,
                timesteps=node.timesteps,
                coding=interface_coding(node.coding),
                seed=node.seed,
                device=node.device,
                checkpoint=pathOrNone(node.customWeightsPath),
                interactive=True,
            )
            self.logic.showTeachingView(self._teachingView, self._teachingView.timesteps)
            # the timestep slider is view state, not a saved parameter: its range follows the computed view
            slider = self.ui.teachingTimestepSlider
            slider.minimum = 1
            slider.maximum = self._teachingView.timesteps
            slider.value = self._teachingView.timesteps
            energy = self._teachingView.energy
            self.ui.energyLabel.text = _(
                "SNN: {synops:.3g} synaptic operations = {snn:.3g} uJ; ANN: {macs:.3g} MACs = {ann:.3g} uJ "
                "(ANN/SNN energy {ratio:.2f}x, 45 nm estimate)"
            ).format(
                synops=energy["snn_synops"],
                snn=energy["snn_energy_pj"] * 1e-6,
                macs=energy["ann_macs"],
                ann=energy["ann_energy_pj"] * 1e-6,
                ratio=energy["ratio_ann_to_snn"],
            )
            if self._teachingView.input_encoding == "direct":
                self.ui.energyLabel.text += "\n" + _(
                    "This model takes the image itself at every timestep (direct input; its first layer "
                    "multiplies, counted in the SNN energy); the input spike volumes show how rate coding "
                    "would turn the same slice into spikes."
                )

    def onTeachingTimestepChanged(self, value: int) -> None:
        """Show the output probability and input spikes at timestep ``value``."""
        if self._teachingView is not None:
            self.logic.showTeachingView(self._teachingView, value, updatePlots=False)
