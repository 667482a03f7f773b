"""Render the extension icon and screenshots from a real run of the core (python Resources/make_images.py).

Screenshot01: the shipped SNN's segmentation of the Colin27 whole-head T1 (../shared/data) overlaid in
three planes. Screenshot02: the teaching view of one ROI slice (real spikes of the shipped SNN).
HippoSNN.png: 128x128 icon, the SNN's output probability on that slice.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from hipposnn import DEFAULT_CODING  # noqa: E402
from hipposnn.inference import SegmentationSettings, model_inputs, segment_image  # noqa: E402
from hipposnn.io import load_image  # noqa: E402
from hipposnn.teaching import teaching_view  # noqa: E402
from hipposnn.weights import default_model_path, load_model  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "wholebrain" / "colin27" / "ch2.nii.gz"


def main() -> None:
    image = load_image(DATA)
    result = segment_image(image, SegmentationSettings(model="snn"))
    labels = result.labels
    centre = [int(round(np.mean(np.nonzero(labels == 1)[a]))) for a in range(3)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black")
    views = [
        ("sagittal (right)", image.array[centre[0]], labels[centre[0]]),
        ("coronal", image.array[:, centre[1]], labels[:, centre[1]]),
        ("axial", image.array[:, :, centre[2]], labels[:, :, centre[2]]),
    ]
    for ax, (title, img, lab) in zip(axes, views):
        ax.imshow(img.T, cmap="gray", origin="lower")
        overlay = np.ma.masked_where(lab.T == 0, lab.T)
        ax.imshow(
            overlay,
            cmap=matplotlib.colors.ListedColormap([(0.86, 0.85, 0.08), (0.78, 0.67, 0.08)]),
            vmin=1,
            vmax=2,
            alpha=0.6,
            origin="lower",
        )
        ax.set_title(title, color="white")
        ax.axis("off")
    vols = result.volumes_mm3
    fig.suptitle(
        f"HippoSNN (SNN, model default T): Colin27 T1 - right {vols.get('right', 0):.0f} mm3, "
        f"left {vols.get('left', 0):.0f} mm3",
        color="white",
    )
    fig.savefig(HERE / "Screenshot01.png", dpi=100, facecolor="black")
    plt.close(fig)

    box = next(b for b in result.boxes if b.side == "right")
    (roi,), (valid,) = model_inputs(image, [box], crop=False)
    model = load_model(default_model_path("snn"), "snn")
    view = teaching_view(model, roi, 12, 32, DEFAULT_CODING, 0, valid=valid)
    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    axes[0, 0].imshow(view.image.T, cmap="gray", origin="lower")
    axes[0, 0].set_title("ROI slice 12 (normalised)")
    for ax, coding in zip(axes[0, 1:3], ("binary", "ternary")):
        ax.imshow(view.input_spikes[coding][0].T, cmap="bwr", vmin=-1, vmax=1, origin="lower")
        ax.set_title(f"input spikes, t=1, {coding}")
    for ax, t in zip([axes[0, 3], axes[1, 0], axes[1, 1]], (1, 4, 32)):
        ax.imshow(view.probability[t - 1].T, cmap="magma", vmin=0, vmax=1, origin="lower")
        ax.set_title(f"output probability after t={t}")
    layers = [n for n in view.layer_order if n in view.firing_rates]
    axes[1, 2].bar(range(len(layers)), [view.firing_rates[n] for n in layers])
    axes[1, 2].set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    axes[1, 2].set_title("firing rate per layer")
    e = view.energy
    axes[1, 3].bar(
        ["SNN", "ANN"], [e["snn_energy_pj"] * 1e-6, e["ann_energy_pj"] * 1e-6], color=["tab:orange", "tab:blue"]
    )
    axes[1, 3].set_ylabel("uJ per slice (45 nm estimate)")
    axes[1, 3].set_title(f"energy: ANN/SNN = {e['ratio_ann_to_snn']:.2f}")
    for ax in axes.flat[:7]:
        ax.axis("off")
    fig.suptitle(f"HippoSNN teaching view (shipped {DEFAULT_CODING} SNN, real spikes, Colin27 right hippocampus ROI)")
    fig.tight_layout()
    fig.savefig(HERE / "Screenshot02.png", dpi=100)
    plt.close(fig)

    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(view.probability[-1].T, cmap="magma", vmin=0, vmax=1, origin="lower", aspect="auto")
    ys, xs = np.nonzero(view.input_spikes["binary"][0].T)
    ax.scatter(xs[::6], ys[::6], s=0.4, c="cyan")
    ax.axis("off")
    for target in (HERE / "HippoSNN.png", HERE.parent / "HippoSNN" / "Resources" / "Icons" / "HippoSNN.png"):
        fig.savefig(target, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
