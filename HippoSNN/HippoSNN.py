"""HippoSNN 3D Slicer module: spiking U-Net segmentation of both hippocampi from a T1 MRI.

Thin layer over the tested core package ``hipposnn`` (shipped inside this module folder): it converts
MRML nodes to (array, voxel-to-RAS) pairs with ``HippoSNNLib.geometry`` and back, and nothing heavy
is imported at start-up (torch and the core load on the first Apply).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, List, Optional

import qt
import slicer
import vtk
from HippoSNNLib import geometry, terminology
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Oldest torch the core is tested with (pyproject: torch>=2.2).
MINIMUM_TORCH_VERSION = "2.2"
#: Packages the core needs besides torch and what Slicer ships (numpy, SimpleITK, vtk).
PYTHON_REQUIREMENTS = ["nibabel>=4.0"]
README_URL = "https://github.com/hipposnn/SlicerHippoSNN#readme"

ProgressCallback = Callable[[float, str], bool]


#
# HippoSNN
#


class HippoSNN(ScriptedLoadableModule):
    """Module description shown in Slicer (see ScriptedLoadableModule)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HippoSNN")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["HippoSNN developers (HippoSNN project)"]
        self.parent.helpText = _(
            "Segments the left and right hippocampus from a T1-weighted brain MRI with a spiking U-Net "
            "(converted from a trained ANN and fine-tuned with spikes). Also converts and fine-tunes your "
            "own models and shows, for teaching, what the spiking network does. "
            'See the <a href="{url}">documentation</a>.'
        ).format(url=README_URL)
        self.parent.acknowledgementText = _(
            "Method: ANN-to-SNN conversion by threshold balancing followed by spike-based fine-tuning of a "
            "U-Net (Patel et al., 'A spiking neural network for image segmentation', 2021). Training data: "
            "Medical Segmentation Decathlon Task04 Hippocampus (Simpson et al. 2019; Antonelli et al. 2022). "
            "ROI placement uses the ICBM 2009a template (Fonov et al. 2011, McConnell Brain Imaging Centre)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Register sample data sets in Sample Data module
#


def registerSampleData():
    """Add the shipped ICBM 2009a T1 template (2 mm) to the Sample Data module as a demo brain."""
    import SampleData

    template = Path(__file__).resolve().parent / "hipposnn" / "resources" / "icbm2009a_t1_2mm.nii.gz"
    if not template.is_file():
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="HippoSNN",
        sampleName="HippoSNNTemplateT1",
        uris=template.as_uri(),
        fileNames="HippoSNN-ICBM2009a-T1-2mm.nii.gz",
        nodeNames="HippoSNNTemplateT1",
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "HippoSNN.png"),
        loadFileType="VolumeFile",
    )


#
# HippoSNNParameterNode
#


@parameterNodeWrapper
class HippoSNNParameterNode:
    """Per-scene settings of the module (saved with the scene).

    inputVolume - T1-weighted MRI. roiMode - "automatic" (template registration) or "user" (the
    markups ROI ``roiNode`` gives the centre of one hippocampus box). outputSegmentation - created on
    Apply when empty. timesteps/coding/threshold/model/side/device/seed - inference settings.
    customWeightsPath - a model file to use instead of the shipped one. The training and teaching
    fields hold the inputs of those sections.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    roiMode: Annotated[str, Choice(["automatic", "user"])] = "automatic"
    roiNode: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode
    timesteps: Annotated[int, WithinRange(1, 1000)] = 32
    coding: Annotated[str, Choice(["binary", "ternary"])] = "ternary"
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    model: Annotated[str, Choice(["snn", "ann"])] = "snn"
    side: Annotated[str, Choice(["both", "right", "left"])] = "both"
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    customWeightsPath: Path = Path("")
    annWeightsPath: Path = Path("")
    trainingDataPath: Path = Path("")
    trainingOutputPath: Path = Path("")
    conversionTimesteps: Annotated[int, WithinRange(10, 2000)] = 200
    fineTuneEpochs: Annotated[int, WithinRange(1, 500)] = 10
    teachingSlice: Annotated[int, WithinRange(0, 23)] = 12
    teachingTimestep: Annotated[int, WithinRange(1, 1000)] = 32


def _pathOrNone(path: Optional[Path]) -> Optional[str]:
    """A usable file-system path, or None for an empty path field (Path("") reads back as ".")."""
    if path is None:
        return None
    text = str(path)
    return None if text in ("", ".") else text


#
# HippoSNNWidget
#


class HippoSNNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """User interface of the module; all computation is in HippoSNNLogic."""

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

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HippoSNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = HippoSNNLogic()
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
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.setValue(0)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()

    def onReload(self) -> None:
        """Called by the Reload button: reload the helper packages too (importlib; `imp` is gone in 3.12)."""
        import importlib
        import sys

        # sys.modules keeps import order and a module is listed before the modules it imports, so
        # the reverse order reloads dependencies before their users
        names = [n for n in sys.modules if n.split(".")[0] in ("HippoSNNLib", "hipposnn")]
        for name in reversed(names):
            importlib.reload(sys.modules[name])
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

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed; pre-select the first scalar volume."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[HippoSNNParameterNode]) -> None:
        """Set and observe the parameter node; the GUI follows it through connectGui."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Enable Apply only with valid inputs; the tooltip says what is missing."""
        node = self._parameterNode
        reason = ""
        if node is None or not node.inputVolume:
            reason = _("Select an input T1 volume")
        elif node.roiMode == "user" and not node.roiNode:
            reason = _("Select or place a markups ROI (or choose automatic ROI placement)")
        elif self._busy:
            reason = _("Processing is running")
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or _("Segment both hippocampi of the input volume")
        self.ui.placeRoiButton.enabled = bool(node and node.inputVolume) and not self._busy
        self.ui.teachingButton.enabled = bool(node and node.inputVolume) and not self._busy
        canTrain = bool(node and _pathOrNone(node.trainingDataPath) and _pathOrNone(node.trainingOutputPath))
        self.ui.convertButton.enabled = canTrain and bool(node and _pathOrNone(node.annWeightsPath)) and not self._busy
        self.ui.fineTuneButton.enabled = canTrain and not self._busy

    def onInputVolumeChanged(self, node) -> None:
        """Name a new output segmentation after the input volume."""
        if node:
            self.ui.outputSegmentationSelector.baseName = _("{volumeName} hippocampus").format(
                volumeName=node.GetName()
            )

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
        """Ask the running work to stop at its next progress report."""
        self._cancelRequested = True
        self.addLog(_("Cancelling..."))

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
                coding=node.coding,
                threshold=node.threshold,
                seed=node.seed,
                device=node.device,
                checkpoint=_pathOrNone(node.customWeightsPath),
                progressCallback=self._progress,
                interactive=True,
            )
            self._showVolumes(result["volumes_mm3"])
            if node.roiMode == "automatic":
                self.logic.updateRoiNodes(node.inputVolume, result["boxes"])

    @contextlib.contextmanager
    def _longTask(self, errorMessage: str):
        """Progress bar and Cancel on, one error dialog on failure, always back to idle."""
        self._setBusy(True)
        try:
            with slicer.util.tryWithErrorDisplay(errorMessage, waitCursor=True):
                yield
        finally:
            self._setBusy(False)

    def _showVolumes(self, volumes: Dict[str, float]) -> None:
        table = self.ui.volumesTable
        table.setRowCount(len(volumes))
        for row, (side, value) in enumerate(sorted(volumes.items())):
            table.setItem(row, 0, qt.QTableWidgetItem(terminology.segmentDefinition(side).name))
            table.setItem(row, 1, qt.QTableWidgetItem(f"{value:.0f}"))

    def onPlaceRoiButton(self) -> None:
        """Place the hippocampus ROI(s) automatically; the user may then move them and switch to user ROI."""
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to place the ROI."), waitCursor=True):
            roiNodes = self.logic.placeRois(node.inputVolume, node.side, interactive=True)
            if roiNodes:
                node.roiNode = roiNodes[0]

    def onConvertButton(self) -> None:
        """Convert the chosen ANN weights into an SNN by threshold balancing on the training folder."""
        node = self._parameterNode
        with self._longTask(_("Conversion failed.")):
            path = self.logic.convertModel(
                str(node.annWeightsPath),
                str(node.trainingDataPath),
                str(node.trainingOutputPath),
                timesteps=node.conversionTimesteps,
                coding=node.coding,
                seed=node.seed,
                device=node.device,
                progressCallback=self._progress,
                interactive=True,
            )
            node.customWeightsPath = Path(path)
            self.addLog(_("Converted model selected for segmentation: {path}").format(path=path))

    def onFineTuneButton(self) -> None:
        """Fine-tune the selected (converted) SNN on the user's labelled folder."""
        node = self._parameterNode
        with self._longTask(_("Fine-tuning failed.")):
            path = self.logic.fineTuneModel(
                _pathOrNone(node.customWeightsPath),
                str(node.trainingDataPath),
                str(node.trainingOutputPath),
                epochs=node.fineTuneEpochs,
                timesteps=node.timesteps,
                coding=node.coding,
                seed=node.seed,
                device=node.device,
                progressCallback=self._progress,
                interactive=True,
            )
            node.customWeightsPath = Path(path)
            node.model = "snn"
            self.addLog(_("Fine-tuned model selected for segmentation: {path}").format(path=path))

    def onTeachingButton(self) -> None:
        """Compute and show the teaching view of the chosen ROI slice."""
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the teaching view."), waitCursor=True):
            self._teachingView = self.logic.computeTeachingView(
                node.inputVolume,
                side="left" if node.side == "left" else "right",
                sliceIndex=node.teachingSlice,
                timesteps=node.timesteps,
                coding=node.coding,
                seed=node.seed,
                device=node.device,
                checkpoint=_pathOrNone(node.customWeightsPath),
                interactive=True,
            )
            self.ui.teachingTimestepSlider.maximum = node.timesteps
            node.teachingTimestep = node.timesteps
            self.logic.showTeachingView(self._teachingView, node.teachingTimestep)
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

    def onTeachingTimestepChanged(self, value: int) -> None:
        """Show the output probability and input spikes at timestep ``value``."""
        if self._teachingView is not None:
            self.logic.showTeachingView(self._teachingView, value, updatePlots=False)


#
# HippoSNNLogic
#


class HippoSNNLogic(ScriptedLoadableModuleLogic):
    """All computation of the module, usable from the Python console without the GUI.

    Example::

        logic = slicer.util.getModuleLogic("HippoSNN")
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        info = logic.process(getNode("MRHead"), seg)
        print(info["volumes_mm3"])
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated."""
        ScriptedLoadableModuleLogic.__init__(self)
        self.logCallback: Optional[Callable[[str], None]] = None
        self._boxes: Dict[str, List[Any]] = {}
        self._torchChecked = False

    def getParameterNode(self):
        return HippoSNNParameterNode(super().getParameterNode())

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    # -- dependencies ----------------------------------------------------------------------------------

    def ensureDependencies(self, interactive: bool = True) -> None:
        """Make torch (from the PyTorch extension) and the core's other packages importable.

        Nothing is installed at start-up: this runs on the first action that needs torch.
        :raises RuntimeError: with a message saying what to install when it cannot be done.
        """
        if self._torchChecked:
            return
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(
                _(
                    "HippoSNN needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager, "
                    "restart Slicer and try again."
                )
            ) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(
                askConfirmation=interactive, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}"
            )
            if torch is None:
                raise RuntimeError(_("PyTorch is required: install it from the PyTorch module, then try again."))
        import torch

        if _versionTuple(torch.__version__) < _versionTuple(MINIMUM_TORCH_VERSION):
            raise RuntimeError(
                _(
                    "PyTorch {found} is too old; HippoSNN needs {required} or later. Open the PyTorch module, "
                    "uninstall torch, install it again, and restart Slicer."
                ).format(found=torch.__version__, required=MINIMUM_TORCH_VERSION)
            )
        self._ensurePythonRequirements(interactive)
        self._torchChecked = True

    def _ensurePythonRequirements(self, interactive: bool) -> None:
        try:
            import nibabel  # noqa: F401

            return
        except ModuleNotFoundError:
            pass
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(PYTHON_REQUIREMENTS, requester="HippoSNN")
            return
        if interactive and not slicer.util.confirmOkCancelDisplay(
            _("HippoSNN needs these Python packages: {packages}. Install them now?").format(
                packages=", ".join(PYTHON_REQUIREMENTS)
            )
        ):
            raise RuntimeError(
                _("Required Python packages are missing: {packages}").format(packages=PYTHON_REQUIREMENTS)
            )
        for requirement in PYTHON_REQUIREMENTS:
            slicer.util.pip_install(requirement)

    def resolveDevice(self, device: Optional[str]) -> str:
        """'auto'/None -> 'cuda' when available else 'cpu'; an unavailable 'cuda' falls back to CPU."""
        import torch

        wanted = device or "auto"
        hasCuda = bool(torch.backends.cuda.is_built() and torch.cuda.is_available())
        if wanted == "auto":
            return "cuda" if hasCuda else "cpu"
        if wanted == "cuda" and not hasCuda:
            self.log(_("CUDA is not available; using the CPU."))
            return "cpu"
        return wanted

    # -- geometry ----------------------------------------------------------------------------------------

    def imageFromVolume(self, volumeNode):
        """The core Image (array [i, j, k], voxel-to-world-RAS affine) of a scalar volume node.

        :raises ValueError: if the volume is under a non-linear transform (harden it first).
        """
        parentToWorld = None
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            if not transformNode.IsTransformToWorldLinear():
                raise ValueError(_("The input volume is under a non-linear transform: harden the transform first."))
            parentToWorld = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformToWorld(parentToWorld)
        ijkToRAS = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRAS)
        arrayKJI = slicer.util.arrayFromVolume(volumeNode)
        if arrayKJI.ndim != 3:
            raise ValueError(_("The input must be a 3D scalar volume."))
        return geometry.imageFromVolumeArrays(arrayKJI, ijkToRAS, parentToWorld, source=volumeNode.GetName())

    # -- ROI ---------------------------------------------------------------------------------------------

    def placeRois(self, inputVolume, side: str = "both", interactive: bool = False) -> list:
        """Place the hippocampus box(es) by template registration and show them as editable markups ROIs.

        Needs no torch (registration only, a few seconds). Returns the ROI nodes, one per side.
        """
        if not inputVolume:
            raise ValueError(_("Input volume is invalid"))
        self._ensurePythonRequirements(interactive)
        from hipposnn.roi import place_rois

        image = self.imageFromVolume(inputVolume)
        boxes = place_rois(image, side, "auto")
        return self.updateRoiNodes(inputVolume, boxes)

    def updateRoiNodes(self, inputVolume, boxes: list) -> list:
        """Create or move one markups ROI per box ("<volume> <side> hippocampus ROI"), world coordinates."""
        self._boxes[inputVolume.GetID()] = list(boxes)
        nodes = []
        for box in boxes:
            name = _("{volumeName} {side} hippocampus ROI").format(volumeName=inputVolume.GetName(), side=box.side)
            roiNode = slicer.mrmlScene.GetFirstNodeByName(name)
            if roiNode is None:
                roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
            objectToWorld, size = geometry.roiObjectToWorld(box.matrix, box.shape)
            roiNode.SetAndObserveObjectToNodeMatrix(geometry.vtkMatrixFromArray(objectToWorld))
            roiNode.SetSize(*[float(v) for v in size])
            roiNode.SetAttribute("HippoSNN.side", box.side)
            nodes.append(roiNode)
        return nodes

    def roiCentre(self, roiNode) -> List[float]:
        """World RAS centre of a markups ROI (its size and rotation are not used: the model box is fixed)."""
        objectToWorld = roiNode.GetObjectToWorldMatrix()
        return [float(objectToWorld.GetElement(r, 3)) for r in range(3)]

    # -- segmentation ------------------------------------------------------------------------------------

    def process(
        self,
        inputVolume,
        outputSegmentation,
        roiNode=None,
        side: str = "both",
        model: str = "snn",
        timesteps: Optional[int] = None,
        coding: Optional[str] = None,
        threshold: float = 0.5,
        seed: int = 0,
        device: Optional[str] = None,
        progressCallback: Optional[ProgressCallback] = None,
        checkpoint: Optional[str] = None,
        interactive: bool = False,
    ) -> Dict[str, Any]:
        """Segment the hippocampi of ``inputVolume`` into ``outputSegmentation``.

        :param inputVolume: T1-weighted MRI (vtkMRMLScalarVolumeNode), any orientation; a linear parent
            transform is taken into account.
        :param outputSegmentation: vtkMRMLSegmentationNode receiving "Right hippocampus" / "Left hippocampus".
        :param roiNode: optional vtkMRMLMarkupsROINode whose centre places one side's box (instead of
            automatic template registration); with side "both" the side follows the ROI's position.
        :param side: "both", "right" or "left".
        :param model: "snn" (spiking network) or "ann" (the network before conversion).
        :param timesteps: SNN timesteps (None: the model's default).
        :param coding: "binary" or "ternary" input spikes (None: the model's training coding).
        :param threshold: probability threshold of the output.
        :param seed: seed of the Poisson input spikes (same seed, same result).
        :param device: "auto"/None, "cpu" or "cuda".
        :param progressCallback: ``callback(fraction, message) -> bool``; returning False cancels.
        :param checkpoint: optional model file instead of the shipped model.
        :param interactive: allow confirmation dialogs for installing dependencies.
        :return: dict with ``volumes_mm3``, ``qc``, ``timings``, ``boxes`` and ``summary`` (JSON-ready).
        :raises ValueError: on invalid inputs.
        """
        if not inputVolume or not outputSegmentation:
            raise ValueError(_("Input volume or output segmentation is invalid"))
        if side not in ("both", "right", "left"):
            raise ValueError(_("side must be 'both', 'right' or 'left'"))
        if model not in ("snn", "ann"):
            raise ValueError(_("model must be 'snn' or 'ann'"))
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(_("threshold must be between 0 and 1"))
        startTime = time.time()
        self.log(_("Processing started"))
        self.ensureDependencies(interactive)
        from hipposnn.inference import SegmentationSettings, segment_image

        image = self.imageFromVolume(inputVolume)
        roi: Any = "auto"
        if roiNode is not None:
            roi = tuple(self.roiCentre(roiNode))
            if side == "both":
                side = geometry.sideFromCentre(roi, image.affine, image.shape)
                self.log(_("The ROI lies on the {side} side: segmenting that side only.").format(side=side))
        resolvedDevice = self.resolveDevice(device)
        settings = SegmentationSettings(
            side=side,
            roi=roi,
            model=model,
            timesteps=timesteps,
            coding=coding,
            threshold=float(threshold),
            seed=int(seed),
            device=resolvedDevice,
            checkpoint=checkpoint,
        )
        self.log(_("Device: {device}").format(device=resolvedDevice))
        result = segment_image(image, settings, progress=progressCallback)
        self.writeSegmentation(result.labels, inputVolume, outputSegmentation)
        self._boxes[inputVolume.GetID()] = list(result.boxes)
        for warning in result.qc.get("warnings", []) or []:
            self.log(_("Warning: {text}").format(text=warning))
        volumes = {k: float(v) for k, v in result.volumes_mm3.items()}
        for name, value in sorted(volumes.items()):
            self.log(_("{side} hippocampus: {volume:.0f} mm3").format(side=name.capitalize(), volume=value))
        self.log(_("Processing completed in {seconds:.1f} s").format(seconds=time.time() - startTime))
        return {
            "volumes_mm3": volumes,
            "qc": result.qc,
            "timings": result.timings,
            "boxes": list(result.boxes),
            "summary": result.summary(),
        }

    def writeSegmentation(self, labelsIJK, inputVolume, outputSegmentation) -> Dict[str, str]:
        """Write a label array (input grid, [i, j, k], 1 right / 2 left) as terminology-coded segments.

        Sets the reference geometry to the input volume, puts the segmentation under the input's
        parent transform and study. Returns side -> segment ID.
        """
        arrayKJI = geometry.kjiFromIJK(labelsIJK)
        outputSegmentation.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        outputSegmentation.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        outputSegmentation.SetNodeReferenceID(
            outputSegmentation.GetReferenceImageGeometryReferenceRole(), inputVolume.GetID()
        )
        if not outputSegmentation.GetDisplayNode():
            outputSegmentation.CreateDefaultDisplayNodes()
        segmentation = outputSegmentation.GetSegmentation()
        segmentIds = {}
        for side in ("right", "left"):
            definition = terminology.segmentDefinition(side)
            segmentId = segmentation.GetSegmentIdBySegmentName(definition.name)
            if not segmentId:
                segmentId = segmentation.AddEmptySegment(f"hippocampus_{side}", definition.name, definition.color)
            segment = segmentation.GetSegment(segmentId)
            segment.SetColor(*definition.color)
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), definition.terminologyEntry)
            mask = (arrayKJI == definition.label).astype("uint8")
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, outputSegmentation, segmentId, inputVolume)
            segmentIds[side] = segmentId
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        if shNode:
            studyItem = shNode.GetItemParent(shNode.GetItemByDataNode(inputVolume))
            shNode.SetItemParent(shNode.GetItemByDataNode(outputSegmentation), studyItem)
        return segmentIds

    # -- conversion and fine-tuning ------------------------------------------------------------------------

    def convertModel(
        self,
        annWeightsPath: str,
        dataFolder: str,
        outputFolder: str,
        timesteps: int = 200,
        scale: float = 0.7,
        coding: str = "ternary",
        seed: int = 0,
        device: Optional[str] = None,
        progressCallback: Optional[ProgressCallback] = None,
        interactive: bool = False,
    ) -> str:
        """Early-stop ANN->SNN conversion (threshold balancing) on training slices of a labelled folder.

        :param annWeightsPath: HippoSNN ANN model file (``hipposnn train-ann`` output or the shipped ANN).
        :param dataFolder: MSD layout (``imagesTr/``, ``labelsTr/``) or a folder of image/label pairs
            (``<case>.nii.gz`` with ``<case>_label.nii.gz`` or ``<case>_seg.nii.gz``).
        :param outputFolder: where ``converted.pt`` is written.
        :param progressCallback: ``callback(fraction, message) -> bool``, told each balanced layer;
            returning False cancels before anything is written.
        :return: path of the converted SNN model file.
        """
        for value, what in (
            (annWeightsPath, _("ANN weights file")),
            (dataFolder, _("data folder")),
            (outputFolder, _("output folder")),
        ):
            if not value:
                raise ValueError(_("No {what} given").format(what=what))
        self.ensureDependencies(interactive)
        from hipposnn.pipeline import convert_ann

        startTime = time.time()
        convert_ann(
            annWeightsPath,
            dataFolder,
            outputFolder,
            timesteps=int(timesteps),
            scale=float(scale),
            coding=coding,
            seed=int(seed),
            device=self.resolveDevice(device),
            log=self.log,
            progress=progressCallback,
        )
        path = os.path.join(outputFolder, "converted.pt")
        self.log(
            _("Conversion completed in {seconds:.1f} s: {path}").format(seconds=time.time() - startTime, path=path)
        )
        return path

    def fineTuneModel(
        self,
        initPath: Optional[str],
        dataFolder: str,
        outputFolder: str,
        epochs: int = 10,
        timesteps: int = 32,
        coding: str = "ternary",
        seed: int = 0,
        device: Optional[str] = None,
        progressCallback: Optional[ProgressCallback] = None,
        interactive: bool = False,
    ) -> str:
        """Spike-based fine-tuning (BPTT) of a converted SNN on a labelled folder (as in :meth:`convertModel`).

        :param initPath: converted SNN model file; None fine-tunes the shipped SNN.
        :return: path of the best model (by validation Dice), ``best.pt`` in ``outputFolder``.
        """
        if not dataFolder or not outputFolder:
            raise ValueError(_("A data folder and an output folder are needed"))
        self.ensureDependencies(interactive)
        from hipposnn.pipeline import train_snn
        from hipposnn.training import TrainConfig
        from hipposnn.weights import default_model_path

        init = initPath or str(default_model_path("snn", coding))
        config = TrainConfig(
            stage="finetune",
            epochs=int(epochs),
            timesteps=int(timesteps),
            coding=coding,
            seed=int(seed),
            device=self.resolveDevice(device),
            lr=1e-4,
        )
        startTime = time.time()
        train_snn(dataFolder, outputFolder, config, init=init, progress=progressCallback, log=self.log)
        path = os.path.join(outputFolder, "best.pt")
        self.log(
            _("Fine-tuning completed in {seconds:.1f} s: {path}").format(seconds=time.time() - startTime, path=path)
        )
        return path

    # -- teaching view -----------------------------------------------------------------------------------

    def computeTeachingView(
        self,
        inputVolume,
        side: str = "right",
        sliceIndex: int = 12,
        timesteps: int = 32,
        coding: str = "ternary",
        seed: int = 0,
        device: Optional[str] = None,
        checkpoint: Optional[str] = None,
        interactive: bool = False,
    ):
        """Firing rates, probability over time, input spikes and energy for one sagittal ROI slice.

        Uses the box of the last segmentation/ROI placement of this volume, else places it now.
        :return: a ``hipposnn.teaching.TeachingView`` with its ``box`` attribute set.
        """
        if not inputVolume:
            raise ValueError(_("Input volume is invalid"))
        self.ensureDependencies(interactive)
        from hipposnn.inference import model_inputs
        from hipposnn.roi import place_rois
        from hipposnn.teaching import teaching_view
        from hipposnn.weights import default_model_path, load_model

        image = self.imageFromVolume(inputVolume)
        boxes = [b for b in self._boxes.get(inputVolume.GetID(), []) if b.side == side]
        if not boxes:
            boxes = place_rois(image, side, "auto")
        box = boxes[0]
        network = load_model(checkpoint or default_model_path("snn", coding), "snn")
        (roi,), (valid,) = model_inputs(image, [box], crop=False)  # exactly what segmentation feeds the network
        view = teaching_view(
            network,
            roi,
            int(sliceIndex),
            int(timesteps),
            coding,
            int(seed),
            self.resolveDevice(device),
            valid=valid,
        )
        view.box = box
        return view

    def showTeachingView(self, view, timestep: int, updatePlots: bool = True) -> None:
        """Show a teaching view in the scene: plots and slice volumes (output, input spikes) at ``timestep``."""
        import numpy as np

        t = max(1, min(int(timestep), view.timesteps)) - 1
        sliceAffine = geometry.roiSliceAffine(view.box.matrix, view.slice_index)
        frames = {
            _("HippoSNN output probability"): view.probability[t],
            _("HippoSNN input spikes binary"): view.input_spikes["binary"][t].astype(np.float32),
            _("HippoSNN input spikes ternary"): view.input_spikes["ternary"][t].astype(np.float32),
            _("HippoSNN input slice"): view.image,
        }
        for name, frame in frames.items():
            volumeNode = slicer.mrmlScene.GetFirstNodeByName(name)
            if volumeNode is None:
                volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            slicer.util.updateVolumeFromArray(volumeNode, geometry.kjiFromIJK(frame[None]))
            volumeNode.SetIJKToRASMatrix(geometry.vtkMatrixFromArray(sliceAffine))
        if not updatePlots:
            return
        layers = [name for name in view.layer_order if name in view.firing_rates]
        self._showPlot(
            _("HippoSNN firing rates"),
            _("layer"),
            list(range(len(layers))),
            _("firing rate"),
            [view.firing_rates[name] for name in layers],
            labels=layers,
            bar=True,
        )
        foreground = [float((view.probability[i] > 0.5).sum()) for i in range(view.timesteps)]
        self._showPlot(
            _("HippoSNN output over time"),
            _("timestep"),
            list(range(1, view.timesteps + 1)),
            _("pixels above 0.5"),
            foreground,
        )

    def _showPlot(self, name, xTitle, xValues, yTitle, yValues, labels=None, bar=False):
        tableNode = slicer.mrmlScene.GetFirstNodeByName(name + " table")
        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name + " table")
        table = tableNode.GetTable()
        table.Initialize()
        for title, values in ((xTitle, xValues), (yTitle, yValues)):
            column = vtk.vtkDoubleArray()
            column.SetName(title)
            for value in values:
                column.InsertNextValue(float(value))
            table.AddColumn(column)
        if labels is not None:
            column = vtk.vtkStringArray()
            column.SetName("label")
            for label in labels:
                column.InsertNextValue(str(label))
            table.AddColumn(column)
        tableNode.Modified()
        seriesNode = slicer.mrmlScene.GetFirstNodeByName(name + " series")
        if seriesNode is None:
            seriesNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name + " series")
        seriesNode.SetAndObserveTableNodeID(tableNode.GetID())
        seriesNode.SetXColumnName(xTitle)
        seriesNode.SetYColumnName(yTitle)
        if labels is not None:
            seriesNode.SetLabelColumnName("label")
        seriesNode.SetPlotType(
            slicer.vtkMRMLPlotSeriesNode.PlotTypeBar if bar else slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter
        )
        chartNode = slicer.mrmlScene.GetFirstNodeByName(name)
        if chartNode is None:
            chartNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chartNode.SetAndObservePlotSeriesNodeID(seriesNode.GetID())
        chartNode.SetTitle(name)
        chartNode.SetXAxisTitle(xTitle)
        chartNode.SetYAxisTitle(yTitle)
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)
        return chartNode


def _versionTuple(version: str) -> tuple:
    """(major, minor) of a version string such as '2.5.1+cu121'."""
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


#
# HippoSNNTest
#


class HippoSNNTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test). Light checks always; full inference on the MRHead sample."""

    def setUp(self):
        """Reset the state: clear the scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        self.test_HippoSNNGeometryAndSegments()
        self.setUp()
        self.test_HippoSNNSegmentation()

    def test_HippoSNNGeometryAndSegments(self):
        """Array round trip through a real volume node and terminology-coded segments (no torch needed)."""
        import numpy as np

        self.delayDisplay("Geometry and segment creation")
        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "geometry")
        arrayKJI = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
        slicer.util.updateVolumeFromArray(volumeNode, arrayKJI)
        volumeNode.SetSpacing(1.0, 2.0, 3.0)
        volumeNode.SetOrigin(-10.0, 5.0, 2.0)
        logic = HippoSNNLogic()
        image = logic.imageFromVolume(volumeNode)
        self.assertEqual(image.array.shape, (6, 5, 4))
        self.assertEqual(float(image.array[1, 2, 3]), float(arrayKJI[3, 2, 1]))
        labels = np.zeros(image.array.shape, dtype=np.uint8)
        labels[1:3, 1:3, 1:3] = 1
        labels[4, 3, 2] = 2
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        ids = logic.writeSegmentation(labels, volumeNode, segmentationNode)
        right = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, ids["right"], volumeNode)
        self.assertEqual(int(right.sum()), 8)
        self.delayDisplay("Geometry test passed")

    def test_HippoSNNSegmentation(self):
        """Segment the MRHead sample end to end (needs the PyTorch extension; skipped otherwise)."""
        try:
            import PyTorchUtils  # noqa: F401
        except ModuleNotFoundError:
            self.delayDisplay("PyTorch extension not installed: segmentation test skipped")
            return
        import SampleData

        inputVolume = SampleData.downloadSample("MRHead")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = HippoSNNLogic()
        info = logic.process(inputVolume, segmentationNode, model="snn", timesteps=16, device="cpu")
        self.assertEqual(set(info["volumes_mm3"]), {"right", "left"})
        for volume in info["volumes_mm3"].values():
            self.assertGreater(volume, 1000.0)
            self.assertLess(volume, 8000.0)
        self.delayDisplay("Segmentation test passed")
