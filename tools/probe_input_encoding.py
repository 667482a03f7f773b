"""How far each SNN's mask is from its ANN's on one whole-brain scan's ROI slices (issue 14, direct input).

The direct-input SNNs match their ANN on the MSD crops of the CV but not on whole-brain scans. This probe
segments one scan as `hipposnn segment` does, keeps the ROI slices the network sees, and scores the mask of
each SNN (T = 8, chunk 1, seed 0) against the mask of the quantised ANN they were converted from (Dice of the
two masks): the converted and the fine-tuned SNN with direct input, the `snn-t8` weights (fine-tuned on Poisson
input) on Poisson and on regular input spikes, the fine-tuned direct SNN run with Poisson input, and the
conversion with Poisson and with regular input.

    python tools/probe_input_encoding.py --image ../shared/data/wholebrain/bert/norm.mgz --run runs/lowt_final \
        --out docs/results/lowt_final_direct/probe_bert.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HippoSNN"))
sys.path.insert(0, str(ROOT / "tools"))

import hipposnn.inference as inference  # noqa: E402
from hipposnn.io import load_image  # noqa: E402
from hipposnn.simulate import predict_slices  # noqa: E402
from hipposnn.weights import default_model_path, load_model  # noqa: E402
from network_slices import network_slices  # noqa: E402


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "lowt_final",
                    help="tools/train_lowt_final.sh output: ann_L8/, direct/converted.pt, finetune_T8_direct/")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    load = list(os.getloadavg())
    x, _, _ = network_slices(load_image(args.image), inference.SegmentationSettings(model="snn-t8", coding="ternary"))
    ann = predict_slices(load_model(args.run / "ann_L8" / "best.pt"), x, batch_size=64) > 0.5
    direct, ft_direct = args.run / "direct" / "converted.pt", args.run / "finetune_T8_direct" / "best.pt"
    # the shipped snn-t8's weights were fine-tuned on Poisson input (its file now runs them on regular input); the
    # clip conversion does not depend on the input, so the Poisson conversion is also run on regular input
    shipped, converted = default_model_path("snn-t8", "ternary"), args.run / "converted.pt"
    runs = (("converted, direct input", direct, "direct"), ("fine-tuned, direct input", ft_direct, "direct"),
            ("snn-t8 weights, Poisson input", shipped, "poisson"),
            ("fine-tuned for direct input, run with Poisson input", ft_direct, "poisson"),
            ("converted, Poisson input", converted, "poisson"), ("converted, regular input", converted, "regular"),
            ("snn-t8 weights, regular input (shipped)", shipped, "regular"))
    models = {path: load_model(path) for path in {path for _, path, _ in runs}}  # each file read once
    rows = {}
    for name, path, encoding in runs:
        model = models[path]
        model.input_encoding = encoding  # a run-time attribute: the weights stay as trained
        mask = predict_slices(model, x, timesteps=8, coding="ternary", batch_size=16, chunk=1) > 0.5
        rows[name] = {"dice_with_its_ann": round(_dice(mask, ann), 4), "voxels": int(mask.sum())}
        print(f"{name}: mask Dice with the quantised ANN's {rows[name]['dice_with_its_ann']:.3f}, "
              f"{rows[name]['voxels']} voxels (ANN {int(ann.sum())})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"image": str(args.image), "slices": list(x.shape), "ann_voxels": int(ann.sum()),
                                    "snns": rows, "load_before": load, "load_after": list(os.getloadavg())},
                                   indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
