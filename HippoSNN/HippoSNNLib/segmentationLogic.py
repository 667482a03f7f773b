"""Segmentation logic of the module: MRML volume in, terminology-coded segments out (in Slicer's process).

A segmentation takes seconds, so it runs in Slicer's process with a progress callback (the widget's
progress bar and Cancel); long training runs in a separate process (:mod:`HippoSNNLib.trainingLogic`).
Torch and the core load on first use, never at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import slicer
import vtk
from hipposnn.errors import HippoSNNError
from hipposnn.options import AUTO_ROI_SHAPE, resolve_choice, resolve_device, validate_threshold
from hipposnn.readout import check_sigma
from slicer.i18n import tr as _

from HippoSNNLib import dependencies, geometry, terminology

ProgressCallback = Callable[[float, str], bool]


def imageFingerprint(image) -> Tuple[Any, ...]:
    """Shape, geometry and a checksum of a sample of the voxels: tells two images apart cheaply."""
    sample = image.array[::5, ::5, ::5]
    return (
        tuple(image.array.shape),
        tuple(round(float(v), 6) for v in image.affine.ravel()),
        zlib.crc32(sample.tobytes()),
    )


class _CallbackHandler(logging.Handler):
    """Forwards log records to a callable (the module's log box)."""

    def __init__(self, callback: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(record.getMessage())


class SegmentationLogic:
    """``process`` and its helpers; see :class:`HippoSNN.HippoSNNLogic` for the console example."""

    def __init__(self) -> None:
        self.logCallback: Optional[Callable[[str], None]] = None
        # volume node ID -> (image fingerprint, boxes); the fingerprint guards against a reused ID
        # (IDs restart after a scene close) and a volume whose voxels or geometry changed
        self._boxes: Dict[str, Tuple[Tuple[Any, ...], List[Any]]] = {}
        self._torchChecked = False

    def log(self, text: str) -> None:
        """A milestone for the log box (``logCallback``) and the application log."""
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    @contextlib.contextmanager
    def coreWarningsToLog(self):
        """Show the core's warnings (``hipposnn.*`` loggers, e.g. the one-time kernel compile notice) in the log."""
        handler = _CallbackHandler(self.log)
        logger = logging.getLogger("hipposnn")
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)

    # -- dependencies ----------------------------------------------------------------------------------

    def ensureDependencies(self, interactive: bool = True) -> None:
        """Make torch (PyTorch extension) and nibabel importable; on the first action that needs them."""
        if self._torchChecked:
            return
        dependencies.ensureTorch(interactive)
        dependencies.ensurePythonRequirements(interactive)
        self._torchChecked = True

    def resolveDevice(self, device: Optional[str]) -> str:
        """'auto'/None -> CUDA when usable, else CPU; 'cuda' without a GPU is an error (hipposnn.options)."""
        try:
            return resolve_device(device)
        except HippoSNNError as error:
            raise ValueError(str(error)) from None

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
        if arrayKJI is None or arrayKJI.ndim != 3:
            raise ValueError(_("The input must be a 3D scalar volume."))
        return geometry.imageFromVolumeArrays(arrayKJI, ijkToRAS, parentToWorld, source=volumeNode.GetName())

    # -- ROI boxes ---------------------------------------------------------------------------------------

    def rememberBoxes(self, volumeNode, image, boxes: list) -> None:
        self._boxes[volumeNode.GetID()] = (imageFingerprint(image), list(boxes))

    def rememberedBoxes(self, volumeNode, image, side: str) -> list:
        """Boxes of the last segmentation/ROI placement of this very image (same voxels and geometry)."""
        fingerprint, boxes = self._boxes.get(volumeNode.GetID(), (None, []))
        if fingerprint != imageFingerprint(image):
            return []
        return [box for box in boxes if box.side == side]

    def clearBoxes(self) -> None:
        """Forget every remembered box (the widget calls this when the scene closes)."""
        self._boxes.clear()

    def placeRois(self, inputVolume, side: str = "both", interactive: bool = False) -> list:
        """Place the hippocampus box(es) by template registration and show them as editable markups ROIs.

        The boxes are those Apply segments (``hipposnn.options.AUTO_ROI_SHAPE``). Needs no torch
        (registration only, a few seconds). Returns the ROI nodes, one per side.
        """
        if not inputVolume:
            raise ValueError(_("Input volume is invalid"))
        dependencies.ensurePythonRequirements(interactive)
        from hipposnn.roi import place_rois

        image = self.imageFromVolume(inputVolume)
        boxes = place_rois(image, side, "auto", AUTO_ROI_SHAPE)
        self.rememberBoxes(inputVolume, image, boxes)
        return self.updateRoiNodes(inputVolume, boxes)

    def updateRoiNodes(self, inputVolume, boxes: list) -> list:
        """Create or move one markups ROI per box ("<volume> <side> hippocampus ROI"), world coordinates."""
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
        if not roiNode.IsA("vtkMRMLMarkupsROINode"):
            raise ValueError(_("The user ROI must be a markups ROI"))
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
        smooth: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Segment the hippocampi of ``inputVolume`` into ``outputSegmentation``.

        :param inputVolume: T1-weighted MRI (vtkMRMLScalarVolumeNode), any orientation; a linear parent
            transform is taken into account.
        :param outputSegmentation: vtkMRMLSegmentationNode receiving "Right hippocampus" / "Left hippocampus".
        :param roiNode: optional vtkMRMLMarkupsROINode whose centre places one side's box (instead of
            automatic template registration); with side "both" the side follows the ROI's position.
        :param side: "both", "right" or "left".
        :param model: "snn" (the default spiking network: the T = 8 SNN on whole-brain scans), "snn-t8"
            (low latency), "snn-t32" (the paper's path) or "ann" (the network before conversion).
        :param timesteps: SNN timesteps (None: the model's default).
        :param coding: "binary" or "ternary" input spikes (None: a custom model's own, else the shipped
            default, ``hipposnn.options.default_coding``: binary for the SNNs on whole-brain scans).
        :param threshold: probability threshold of the output, strictly between 0 and 1.
        :param seed: seed of the Poisson input spikes (same seed, same result).
        :param device: "auto"/None, "cpu" or "cuda" ("cuda" without a usable GPU is an error).
        :param progressCallback: ``callback(fraction, message) -> bool``; returning False cancels
            (:class:`hipposnn.errors.Cancelled` is raised, nothing is written).
        :param checkpoint: optional model file instead of the shipped model.
        :param interactive: allow confirmation dialogs for installing dependencies.
        :param smooth: readout smoothing in voxels (None: the core's default, 1 for the SNNs and 0 for the ANN;
            ``hipposnn.readout``).
        :return: dict with ``volumes_mm3``, ``qc``, ``timings``, ``boxes`` and ``summary`` (JSON-ready).
        :raises ValueError: on invalid inputs, before any work starts.
        """
        if not inputVolume or not outputSegmentation:
            raise ValueError(_("Input volume or output segmentation is invalid"))
        if side not in ("both", "right", "left"):
            raise ValueError(_("side must be 'both', 'right' or 'left'"))
        try:
            resolve_choice(model)  # the core's rules (hipposnn.options), not copies
            threshold = validate_threshold(threshold)
            if smooth is not None:
                smooth = check_sigma(smooth)
        except HippoSNNError as error:
            raise ValueError(str(error)) from None
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
            threshold=threshold,
            smooth=smooth,
            seed=int(seed),
            device=resolvedDevice,
            checkpoint=checkpoint,
        )
        self.log(_("Device: {device}").format(device=resolvedDevice))
        with self.coreWarningsToLog():
            result = segment_image(image, settings, progress=progressCallback)
        self.writeSegmentation(result.labels, inputVolume, outputSegmentation)
        self.rememberBoxes(inputVolume, image, result.boxes)
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
