"""Teaching view logic: what the spiking network does on one sagittal slice of the hippocampus ROI.

Computes a ``hipposnn.teaching.TeachingView`` on the very box the last segmentation used (or places
one) and shows it in the scene: plots of per-layer firing rates and of the output building up over
timesteps, and one-slice volumes (input, input spikes, output probability) shown in the slice views.
"""

from __future__ import annotations

from typing import Optional

import slicer
import vtk
from hipposnn import DEFAULT_CODING
from hipposnn.options import AUTO_ROI_SHAPE, MODEL_TIMESTEPS, WHOLE_BRAIN_SNN, default_coding
from slicer.i18n import tr as _

from HippoSNNLib import geometry


class TeachingLogic:
    """Mixed into HippoSNNLogic; uses its ``imageFromVolume``, box memory and ``ensureDependencies``."""

    def computeTeachingView(
        self,
        inputVolume,
        side: str = "right",
        sliceIndex: int = 12,
        timesteps: int = MODEL_TIMESTEPS[WHOLE_BRAIN_SNN],
        coding: Optional[str] = None,
        seed: int = 0,
        device: Optional[str] = None,
        checkpoint: Optional[str] = None,
        interactive: bool = False,
    ):
        """Firing rates, probability over time, input spikes and energy for one sagittal ROI slice.

        Uses the box of the last segmentation/ROI placement of this very image, else places it now.
        Without ``checkpoint`` it shows the SNN that Apply segments whole brains with ("snn" on an automatic
        ROI, in ``coding`` or its default coding); a custom file runs in ``coding`` or the default coding.
        :param sliceIndex: 0 .. ``AUTO_ROI_SHAPE[0] - 1`` (the slices Apply segments).
        :return: a ``hipposnn.teaching.TeachingView`` with its ``box`` attribute set.
        """
        if not inputVolume:
            raise ValueError(_("Input volume is invalid"))
        if not 0 <= int(sliceIndex) < AUTO_ROI_SHAPE[0]:
            raise ValueError(_("ROI slice must lie in 0-{last}").format(last=AUTO_ROI_SHAPE[0] - 1))
        self.ensureDependencies(interactive)
        from hipposnn.inference import model_inputs
        from hipposnn.roi import place_rois
        from hipposnn.teaching import teaching_view
        from hipposnn.weights import chosen_model_path, load_model

        image = self.imageFromVolume(inputVolume)
        boxes = self.rememberedBoxes(inputVolume, image, side)
        if not boxes:
            boxes = place_rois(image, side, "auto", AUTO_ROI_SHAPE)
        box = boxes[0]
        coding = coding or (DEFAULT_CODING if checkpoint else default_coding("snn", "auto"))
        network = load_model(chosen_model_path("snn", checkpoint, coding, roi="auto"), "snn")
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

    def showTeachingView(self, view, timestep: int, updatePlots: bool = True) -> dict:
        """Show a teaching view: slice volumes (input, input spikes, output) at ``timestep`` and the plots.

        The input slice is shown as background and the output probability as foreground of the slice
        views. :return: name -> volume node of the slice volumes.
        """
        import numpy as np

        t = max(1, min(int(timestep), view.timesteps)) - 1
        sliceAffine = geometry.roiSliceAffine(view.box.matrix, view.slice_index)
        frames = {
            "input": (_("HippoSNN input slice"), view.image),
            "probability": (_("HippoSNN output probability"), view.probability[t]),
            "binary": (_("HippoSNN input spikes binary"), view.input_spikes["binary"][t].astype(np.float32)),
            "ternary": (_("HippoSNN input spikes ternary"), view.input_spikes["ternary"][t].astype(np.float32)),
        }
        nodes = {}
        for key, (name, frame) in frames.items():
            volumeNode = slicer.mrmlScene.GetFirstNodeByName(name)
            if volumeNode is None:
                volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            slicer.util.updateVolumeFromArray(volumeNode, geometry.kjiFromIJK(frame[None]))
            volumeNode.SetIJKToRASMatrix(geometry.vtkMatrixFromArray(sliceAffine))
            if not volumeNode.GetDisplayNode():
                volumeNode.CreateDefaultDisplayNodes()
            nodes[key] = volumeNode
        if updatePlots:
            slicer.util.setSliceViewerLayers(
                background=nodes["input"], foreground=nodes["probability"], foregroundOpacity=0.5, fit=True
            )
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
        return nodes

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
