"""Where should a warm-started quantised-clip ANN's clips start? Scored before any quantised training (issue 14).

Why: on the whole-brain default's path the quantised ANN (L = 8) ends 0.004 below the ReLU ANN it starts from,
and that caps the T = 8 SNN. Two untested levers act on its start:

* the percentile of each layer's ReLU activations its clip starts at (``calibrate_clips``; 99.9 until now), and
* per-channel clips. For a bias-free ReLU / clip network these are a reparameterisation: scaling a hidden
  channel's weights by ``s`` and the weights that read it by ``1 / s`` leaves a ReLU network's function
  unchanged, and a per-layer clip on the rescaled network is a per-channel clip on the original. So a
  per-channel clip start is measured here as *channel equalisation*: every hidden channel rescaled so that its
  own percentile equals the layer's, then the usual per-layer clips (``--equalise``; the function before
  quantisation is checked to stay the same).

Per fold of a recipe CV run (each fold's ReLU ANN, ``ann_relu/best.pt``) and per percentile, with and without
equalisation, the ReLU ANN is turned into an L-level quantised ANN with clips calibrated on the recipe's own
calibration slices and scored, untrained, on the fold's **validation** crops (where a setting is chosen) and
its test crops (reported only). Deterministic; nothing in the package changes.

    python tools/probe_clip_start.py --run runs/lowt_cv_binary_relu48_kd_thick6 --coding binary \
        --json docs/results/clip_start/probe.json
    python tools/probe_clip_start.py --run runs/lowt_cv_binary_relu48_kd_thick6 \
        --json docs/results/clip_start/probe.json --movement docs/results/lowt_cv_binary_relu48_kd_thick6 \
        --movement-json docs/results/clip_start/movement.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HippoSNN"))
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hipposnn.atomicio import atomic_write_text  # noqa: E402
from hipposnn.pipeline import _calibration_batches, evaluate_model, requantise, slices_for, split_names  # noqa: E402
from hipposnn.quant import calibrate_clips, positive_percentile, relu_activations  # noqa: E402
from hipposnn.unet import INPUT, UNet  # noqa: E402
from hipposnn.weights import load_model  # noqa: E402
from lowt_cv_input_swap import fold_folders  # noqa: E402


def hidden_activations(model: UNet, batches: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Every hidden layer's ReLU activations on ``batches`` (``quant.relu_activations``), as [channels, values]."""
    return {name: torch.cat([p.transpose(0, 1).reshape(p.shape[1], -1) for p in parts], 1)
            for name, parts in relu_activations(model, batches).items()}


@torch.no_grad()
def equalise_channels(model: UNet, batches: Sequence[torch.Tensor], percentile: float) -> Dict[str, List[float]]:
    """Rescale every hidden channel so its ``percentile`` equals its layer's; the ReLU function is unchanged.

    Returns each layer's channel scales. A channel that never fires keeps scale 1.
    """
    layers = {layer.name: layer for layer in model.layers}
    scales: Dict[str, torch.Tensor] = {}
    for name, acts in hidden_activations(model, batches).items():
        level = positive_percentile(acts, percentile)
        own = torch.tensor([positive_percentile(row, percentile) for row in acts])
        scales[name] = torch.where(own > 0, level / own.clamp(min=1e-12), torch.ones_like(own))
    for name, s in scales.items():  # what the channel emits...
        model.weights[name].mul_(s.view(1, -1, 1, 1) if layers[name].kind == "up" else s.view(-1, 1, 1, 1))
    for layer in model.layers:  # ...and what reads it
        w, offset = model.weights[layer.name], 0
        for source in layer.inputs:
            width = model.spec.in_channels if source == INPUT else layers[source].out_channels
            if source in scales:
                inverse = 1.0 / scales[source]
                if layer.kind == "up":
                    w[offset:offset + width].mul_(inverse.view(-1, 1, 1, 1))
                else:
                    w[:, offset:offset + width].mul_(inverse.view(1, -1, 1, 1))
            offset += width
    return {name: [round(float(v), 4) for v in s] for name, s in scales.items()}


def probe_fold(fold_dir: Path, data: Path, coding: str, percentiles: Sequence[float], levels: int,
               seed: int) -> Dict[str, Any]:
    """One fold: untrained quantised-ANN Dice (validation and test) per percentile, with and without equalisation."""
    fold = int(fold_dir.name.split("_")[1])
    train, val, test = split_names(data, fold, 5, seed)
    relu = load_model(fold_dir / "ann_relu" / "best.pt", "ann")
    batches = _calibration_batches(slices_for(data, train, coding, relu.spec.context), seed)
    out: Dict[str, Any] = {"fold": fold, "val_cases": len(val), "test_cases": len(test),
                           "relu_ann": {"val": evaluate_model(relu, data, val, coding=coding)["mean_dice_3d"],
                                        "test": evaluate_model(relu, data, test, coding=coding)["mean_dice_3d"]},
                           "quantised": {}}
    probe_x = batches[0]
    for pct in percentiles:
        for equalise in (False, True):
            model = copy.deepcopy(relu) if equalise else relu  # only equalisation changes the weights in place
            model.eval()
            entry: Dict[str, Any] = {}
            if equalise:
                before = model(probe_x).detach()
                scales = equalise_channels(model, batches, pct)
                entry["max_logit_change"] = float((model(probe_x) - before).abs().max().detach())
                entry["max_logit"] = float(before.abs().max())
                entry["channel_scale_range"] = {k: [min(v), float(np.median(v)), max(v)] for k, v in scales.items()}
            quantised = requantise(model, levels)
            entry["clips"] = {k: round(v, 4) for k, v in calibrate_clips(quantised, batches, pct).items()}
            for split, names in (("val", val), ("test", test)):
                entry[split] = evaluate_model(quantised, data, names, coding=coding)["mean_dice_3d"]
            out["quantised"][f"{pct:g}{'/equalised' if equalise else ''}"] = entry
            print(f"fold {fold} pct {pct:g} equalised {equalise}: val {entry['val']:.4f} test {entry['test']:.4f}",
                  flush=True)
    return out


def clip_movement(probe: Dict[str, Any], results: Path, percentile: str = "99.9") -> Dict[str, Any]:
    """How far each fold's trained clips moved from the start ``percentile`` the probe recomputed.

    ``results`` is a committed CV folder (``<coding>/fold_K/ann/result.json`` with the converted thresholds, which
    are the trained clips). Why: if the clips hardly move in training, their start decides the quantisation."""
    folds = []
    for fold in probe["folds"]:
        start = fold["quantised"][percentile]["clips"]
        found = sorted(results.glob(f"*/fold_{fold['fold']}/ann/result.json"))
        if not found:
            continue
        trained = json.loads(found[0].read_text())["thresholds"]
        moves = {name: trained[name] - start[name] for name in start}
        folds.append({"fold": fold["fold"], "start_range": [min(start.values()), max(start.values())],
                      "max_abs_move": max(abs(v) for v in moves.values()),
                      "max_rel_move": max(abs(v) / start[name] for name, v in moves.items())})
    return {"results": str(results), "start_percentile": percentile, "folds": folds,
            "max_abs_move": max(f["max_abs_move"] for f in folds),
            "max_rel_move": max(f["max_rel_move"] for f in folds)}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="recipe CV run whose folds hold ann_relu/best.pt")
    parser.add_argument("--coding", default="binary", choices=("binary", "ternary"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    parser.add_argument("--percentiles", type=float, nargs="+",
                        default=[80.0, 85.0, 90.0, 93.0, 95.0, 97.0, 99.0, 99.9])
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--movement", type=Path, default=None, metavar="CV_RESULTS",
                        help="instead of probing: read --json (an earlier probe) and a committed CV folder whose "
                             "quantised ANNs started at the --movement-start percentile, and write how far their "
                             "clips moved in training (to --movement-json)")
    parser.add_argument("--movement-start", default="99.9", metavar="P",
                        help="the percentile that CV's clips started at, as the probe's keys write it (99.9, 90)")
    parser.add_argument("--movement-json", type=Path, default=None)
    args = parser.parse_args(list(argv) or None)
    if args.movement is not None:
        if args.movement_json is None:
            parser.error("--movement needs --movement-json")
        probe = json.loads(args.json.read_text())
        if args.movement_start not in probe["folds"][0]["quantised"]:
            parser.error(f"--movement-start {args.movement_start}: {args.json} has no clips at that percentile")
        movement = clip_movement(probe, args.movement, args.movement_start)
        atomic_write_text(args.movement_json, json.dumps(movement, indent=1))
        print(f"largest clip move {movement['max_abs_move']:.3f} ({100 * movement['max_rel_move']:.1f} % of its start)")
        return 0
    torch.set_num_threads(args.threads)
    record: Dict[str, Any] = {"command": "python " + " ".join(sys.argv),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "load_start": list(os.getloadavg()), "levels": args.levels, "folds": []}
    for fold_dir in fold_folders(args.run, args.coding, "ann_relu"):
        record["folds"].append(probe_fold(fold_dir, args.data, args.coding, args.percentiles, args.levels, args.seed))
    summary: Dict[str, Dict[str, float]] = {}
    for key in record["folds"][0]["quantised"]:
        summary[key] = {split: float(np.mean([f["quantised"][key][split] for f in record["folds"]]))
                        for split in ("val", "test")}
    summary["relu_ann"] = {split: float(np.mean([f["relu_ann"][split] for f in record["folds"]]))
                           for split in ("val", "test")}
    record["mean_over_folds"] = summary
    record["chosen_on_validation"] = max((k for k in summary if k != "relu_ann"), key=lambda k: summary[k]["val"])
    record.update(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_end=list(os.getloadavg()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(record, indent=1))
    for key, value in summary.items():
        print(f"{key:>16}: val {value['val']:.4f}  test {value['test']:.4f}")
    print("chosen on validation:", record["chosen_on_validation"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
