"""Score ANN and SNN model files on the validation split of ``train-ann`` with Dice, spikes and energy.

Why a tool: ``hipposnn evaluate`` scores all cases or a fold's test cases; the low-latency pilot
(``tools/lowt_pilot.sh``) compares models on the held-out validation cases of the final-model split
(``--fold`` absent, seed 0: the 10 % that no shipped model trained on), at several T, with the energy
estimate of ``docs/models.md`` (4.6 pJ per ANN MAC, 0.9 pJ per SNN accumulate, 24 slices per ROI).

    python tools/lowt_eval.py --data DIR --json OUT.json --model ann=RUN/best.pt --model snn=CONV/converted.pt \
        --timesteps 4 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HippoSNN"))

import torch  # noqa: E402
from hipposnn.data import build_slices, load_cases  # noqa: E402
from hipposnn.encoding import make_generator, poisson_spikes  # noqa: E402
from hipposnn.metrics import AC_PJ, MAC_PJ, ann_macs  # noqa: E402
from hipposnn.pipeline import evaluate_model, split_names  # noqa: E402
from hipposnn.training import evaluate_slices  # noqa: E402
from hipposnn.unet import SpikingUNet, describe  # noqa: E402
from hipposnn.weights import model_from_payload, read_payload  # noqa: E402

SLICES_PER_ROI = 24


def _score(model: Any, data: Path, names: List[str], timesteps: int, coding: str) -> Dict[str, Any]:
    t0 = time.time()
    result = evaluate_model(model, data, names, timesteps, coding, 0.5, 0)
    row: Dict[str, Any] = {
        "dice_3d": result["mean_dice_3d"], "sd_dice_3d": result["sd_dice_3d"],
        "dice_2d": result["mean_dice_2d"], "sd_dice_2d": result["sd_dice_2d"],
        "n_cases": len(result["cases"]), "seconds": round(time.time() - t0, 1),
    }
    spec = model.spec
    ann_uj = sum(ann_macs(describe(spec), spec, 56, 48).values()) * SLICES_PER_ROI * MAC_PJ / 1e6
    if isinstance(model, SpikingUNet):
        sops = result["synops_per_slice"] * SLICES_PER_ROI
        energy = (sops * AC_PJ + result.get("macs_per_slice", 0.0) * SLICES_PER_ROI * MAC_PJ) / 1e6
        row.update({
            "timesteps": timesteps, "mean_firing_rate": result["mean_firing_rate"],
            "spikes_per_neuron": result["mean_firing_rate"] * timesteps, "firing_rates": result["firing_rates"],
            "synops_roi": sops, "energy_roi_uj": energy, "energy_vs_ann": energy / ann_uj,
            "reset": model.reset, "initial_membrane": model.initial_membrane,
        })
    else:
        row.update({"energy_roi_uj": ann_uj, "quant_levels": spec.quant_levels})
    return row


def _poisson_input_ann(model: Any, data: Path, names: List[str], timesteps: int, coding: str) -> Dict[str, Any]:
    """The ANN on the T-step average of the Poisson input spikes the SNN sees (seeded).

    Why: it isolates the input-coding noise of a T-step SNN from the error of its spiking hidden
    layers; a clip-converted SNN cannot beat its ANN fed this input by much.
    """
    sl = build_slices(load_cases(data, names), coding, model.spec.context)
    x = torch.from_numpy(sl.images)
    avg = poisson_spikes(x, timesteps, make_generator(4242), coding).mean(0)
    noisy = replace(sl, images=avg.numpy())
    result = evaluate_slices(model, noisy, coding=coding, seed=0)
    return {"dice_3d": result["mean_dice_3d"], "sd_dice_3d": result["sd_dice_3d"], "dice_2d": result["mean_dice_2d"],
            "input": f"mean of {timesteps} Poisson input steps", "n_cases": len(result["cases"])}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8], help="T for every SNN")
    parser.add_argument("--coding", default="ternary")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--poisson-ann", type=int, nargs="*", default=[], metavar="T",
                        help="also score every ANN on the T-step average of its Poisson input spikes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = split_names(args.data, None, 5, 0)[1]
    out: Dict[str, Any] = {"split": "validation cases of the final-model split (no --fold, seed 0)",
                           "cases": names, "coding": args.coding, "models": {}}
    for item in args.model:
        label, _, path = item.partition("=")
        payload = read_payload(path)
        model = model_from_payload(payload, payload["kind"], source=path)
        steps = args.timesteps if isinstance(model, SpikingUNet) else [0]
        out["models"][label] = {"file": path, "runs": {}}
        for t in steps:
            row = _score(model, args.data, names, t, args.coding)
            out["models"][label]["runs"][str(t) if t else "ann"] = row
            extra = f" T={t} rate {row['mean_firing_rate']:.4f} E/ANN {row['energy_vs_ann']:.3f}" if t else ""
            print(f"{label}: 3D Dice {row['dice_3d']:.4f}{extra} ({row['seconds']} s)", flush=True)
        if not isinstance(model, SpikingUNet):
            for t in args.poisson_ann:
                row = _poisson_input_ann(model, args.data, names, t, args.coding)
                out["models"][label]["runs"][f"poisson_input_T{t}"] = row
                print(f"{label} on {t}-step Poisson input: 3D Dice {row['dice_3d']:.4f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
