"""HippoSNN 3D Slicer module: spiking U-Net segmentation of both hippocampi from a T1 MRI.

This file holds what Slicer looks up by name (module class, parameter node, widget, logic and test
classes) and wires them to ``HippoSNNLib``, one job per file: ``widget`` (user interface),
``segmentationLogic`` (MRML volume -> core -> segments, in-process), ``trainingLogic`` (conversion and
fine-tuning in a child process), ``teachingLogic`` (teaching view), ``dependencies`` (torch, nibabel),
``geometry`` and ``terminology``. The core package ``hipposnn`` ships in this folder; torch and
nibabel load on first use, never at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import slicer
from hipposnn.options import (
    AUTO_ROI_SHAPE,
    CODING_CHOICES,
    MODEL_CHOICES,
    MODEL_TIMESTEPS,
    THRESHOLD_RANGE,
    WHOLE_BRAIN_SNN,
)
from HippoSNNLib.segmentationLogic import SegmentationLogic
from HippoSNNLib.teachingLogic import TeachingLogic
from HippoSNNLib.trainingLogic import TrainingLogic
from HippoSNNLib.widget import HippoSNNWidgetBase
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
)

README_URL = "https://github.com/hipposnn/SlicerHippoSNN#readme"
MODULE_DIR = Path(__file__).resolve().parent
#: The bundled 1 mm demo T1 (ICBM 2009a template, see hipposnn/resources/TEMPLATE_NOTICE.txt).
DEMO_T1 = MODULE_DIR / "hipposnn" / "resources" / "demo_t1_icbm2009a_1mm.nii.gz"


#
# HippoSNN
#


class HippoSNN(ScriptedLoadableModule):
    """Module description shown in Slicer (see ScriptedLoadableModule)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HippoSNN")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # Markups: the user ROI (vtkMRMLMarkupsROINode); Segmentations: the output and its Show 3D button
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["HippoSNN developers (HippoSNN project)"]
        self.parent.helpText = _(
            "Segments the left and right hippocampus from a T1-weighted brain MRI with a spiking U-Net "
            "(converted from a trained ANN and fine-tuned with spikes). Also converts and fine-tunes your "
            "own models and shows, for teaching, what the spiking network does. "
            'See the <a href="{url}">documentation</a>.'
        ).format(url=README_URL)
        self.parent.acknowledgementText = _(
            "Method: Yue et al., 'Spiking neural networks fine-tuning for brain image segmentation', "
            "Frontiers in Neuroscience 17:1267639 (2023): ANN-to-SNN conversion by threshold balancing "
            "followed by spike-based fine-tuning of a U-Net. Training data: Medical Segmentation Decathlon "
            "Task04 Hippocampus (Simpson et al. 2019; Antonelli et al. 2022). ROI placement and the demo T1 "
            "use the ICBM 2009a template (Fonov et al. 2011, McConnell Brain Imaging Centre)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Register sample data sets in Sample Data module
#


def registerSampleData():
    """Add the bundled 1 mm demo T1 (ICBM 2009a template) to the Sample Data module (no download)."""
    import SampleData

    if not DEMO_T1.is_file():
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="HippoSNN",
        sampleName="HippoSNNDemoT1",
        uris=DEMO_T1.as_uri(),
        fileNames="HippoSNN-demo-T1-ICBM2009a-1mm.nii.gz",
        nodeNames="HippoSNNDemoT1",
        thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "HippoSNN.png"),
        loadFileType="VolumeFile",
    )


#
# HippoSNNParameterNode
#

#: Set by :func:`parameterNodeClass` just before the class is built (see there).
vtkMRMLMarkupsROINode = None
_PARAMETER_NODE_CLASS = None


def parameterNodeClass():
    """The ``@parameterNodeWrapper`` class ``HippoSNNParameterNode``, built on first use.

    ``vtkMRMLMarkupsROINode`` joins the ``slicer`` namespace when the Markups module loads, which is
    not guaranteed to happen before this file is imported, so the class that names it is built when
    the logic first asks for the parameter node (the annotations resolve in this module's globals).
    """
    global vtkMRMLMarkupsROINode, _PARAMETER_NODE_CLASS
    if _PARAMETER_NODE_CLASS is not None:
        return _PARAMETER_NODE_CLASS
    vtkMRMLMarkupsROINode = slicer.vtkMRMLMarkupsROINode

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
        timesteps: Annotated[int, WithinRange(1, 1000)] = MODEL_TIMESTEPS[WHOLE_BRAIN_SNN]
        coding: Annotated[str, Choice(list(CODING_CHOICES))] = "auto"
        threshold: Annotated[float, WithinRange(THRESHOLD_RANGE[0], THRESHOLD_RANGE[1])] = 0.5
        model: Annotated[str, Choice(list(MODEL_CHOICES))] = "snn"
        side: Annotated[str, Choice(["both", "right", "left"])] = "both"
        device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
        seed: Annotated[int, WithinRange(0, 2147483647)] = 0
        customWeightsPath: Path = Path("")
        annWeightsPath: Path = Path("")
        trainingDataPath: Path = Path("")
        trainingOutputPath: Path = Path("")
        conversionTimesteps: Annotated[int, WithinRange(10, 2000)] = 200
        fineTuneEpochs: Annotated[int, WithinRange(1, 500)] = 10
        teachingSlice: Annotated[int, WithinRange(0, AUTO_ROI_SHAPE[0] - 1)] = AUTO_ROI_SHAPE[0] // 2

    _PARAMETER_NODE_CLASS = HippoSNNParameterNode
    return HippoSNNParameterNode


#
# HippoSNNWidget
#


class HippoSNNWidget(HippoSNNWidgetBase):
    """User interface of the module (HippoSNNLib/widget.py); all computation is in HippoSNNLogic."""

    def createLogic(self):
        return HippoSNNLogic()


#
# HippoSNNLogic
#


class HippoSNNLogic(ScriptedLoadableModuleLogic, TeachingLogic, TrainingLogic, SegmentationLogic):
    """All computation of the module, usable from the Python console without the GUI.

    Example::

        logic = slicer.util.getModuleLogic("HippoSNN")
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        info = logic.process(getNode("MRHead"), seg)
        print(info["volumes_mm3"])

    ``process``/``placeRois``: HippoSNNLib/segmentationLogic.py; ``convertModel``/``fineTuneModel``
    (child process): trainingLogic.py; ``computeTeachingView``/``showTeachingView``: teachingLogic.py.
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated."""
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationLogic.__init__(self)

    def getParameterNode(self):
        return parameterNodeClass()(super().getParameterNode())


#
# HippoSNNTest
#


def fullSelfTestRequested() -> bool:
    """The end-to-end segmentation self-test runs only on request (it needs torch and nibabel)."""
    return os.environ.get("HIPPOSNN_FULL_SELFTEST") == "1"


class HippoSNNTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test, ctest). Light checks always: they need neither torch nor
    nibabel nor a download. The segmentation of the bundled demo T1 runs when the environment variable
    ``HIPPOSNN_FULL_SELFTEST=1`` is set, and then fails if PyTorch or nibabel is missing."""

    def setUp(self):
        """Reset the state: clear the scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        self.test_HippoSNNGeometryAndSegments()
        self.setUp()
        self.test_HippoSNNParameterNodeAndRules()
        if fullSelfTestRequested():
            self.setUp()
            self.test_HippoSNNSegmentation()
        else:
            self.delayDisplay("Segmentation test not requested (set HIPPOSNN_FULL_SELFTEST=1 to run it)")

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
        self.assertEqual([float(v) for v in image.affine[:3, 3]], [-10.0, 5.0, 2.0])
        self.assertAlmostEqual(float(image.affine[1, 1]), 2.0)
        labels = np.zeros(image.array.shape, dtype=np.uint8)
        labels[1:3, 1:3, 1:3] = 1
        labels[4, 3, 2] = 2
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        ids = logic.writeSegmentation(labels, volumeNode, segmentationNode)
        right = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, ids["right"], volumeNode)
        self.assertEqual(int(right.sum()), 8)
        left = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, ids["left"], volumeNode)
        self.assertEqual(int(left[2, 3, 4]), 1)  # KJI order
        self.delayDisplay("Geometry test passed")

    def test_HippoSNNParameterNodeAndRules(self):
        """Parameter node defaults and the core's rules as the module applies them (no torch needed)."""
        self.delayDisplay("Parameter node and option rules")
        logic = HippoSNNLogic()
        node = logic.getParameterNode()
        # the default model on a whole brain ("snn" -> snn-t8) at its own timesteps
        self.assertEqual((node.timesteps, node.coding, node.side, node.device), (8, "auto", "both", "auto"))
        self.assertTrue(THRESHOLD_RANGE[0] <= node.threshold <= THRESHOLD_RANGE[1])
        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        for threshold in (0.0, 1.0):  # the core's rule: strictly between 0 and 1, checked before any work
            with self.assertRaises(ValueError):
                logic.process(volumeNode, segmentationNode, threshold=threshold)
        with self.assertRaises(ValueError):
            logic.computeTeachingView(volumeNode, sliceIndex=AUTO_ROI_SHAPE[0])
        self.delayDisplay("Parameter node test passed")

    def test_HippoSNNSegmentation(self):
        """Segment the bundled demo T1 end to end with the default spiking model (needs PyTorch, nibabel)."""
        self.delayDisplay("Segmenting the demo T1")
        inputVolume = slicer.util.loadVolume(str(DEMO_T1))
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = HippoSNNLogic()
        info = logic.process(inputVolume, segmentationNode, device="cpu", interactive=False)
        self.assertEqual(set(info["volumes_mm3"]), {"right", "left"})
        for volume in info["volumes_mm3"].values():
            self.assertGreater(volume, 1000.0)
            self.assertLess(volume, 8000.0)
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 2)
        self.delayDisplay("Segmentation test passed")
