"""Score a low-T CV run's fine-tuned SNNs on other inputs than the one they were trained with (issue 14).

The input encoding is a run-time choice (``SpikingUNet.input_encoding``): the same weights can take Poisson
spikes, regular spikes (:func:`hipposnn.encoding.regular_spikes`) or the image itself. This tool runs each
fold's fine-tuned SNN of a recipe run on its own test crops once per encoding asked for, with the same seed
and settings for every encoding (so the rows differ by the input alone), and writes the pooled 3D Dice,
spikes per neuron and energy against the ANN as the CV reports do (``tools/report_lowt_cv.py``).

    python tools/lowt_cv_input_swap.py --run runs/lowt_cv_warm32_poisson --inputs poisson regular \
        --out docs/results/lowt_cv_warm32_poisson/input_swap
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HippoSNN"))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
from hipposnn.encoding import INPUT_ENCODINGS  # noqa: E402
from hipposnn.pipeline import evaluate_model  # noqa: E402
from hipposnn.weights import load_model  # noqa: E402
from report_lowt_cv import ann_energy_uj, snn_row  # noqa: E402
from report_recipe import pooled  # noqa: E402


def fold_folders(run: Path, coding: str, stage: str) -> List[Path]:
    """The CV folds (``CODING/fold_K``) of a recipe run whose ``stage`` folder holds a model; exits if none does."""
    folds = sorted(p for p in (run / coding).glob("fold_[0-9]*") if (p / stage / "best.pt").is_file())
    if not folds:
        raise SystemExit(f"{run / coding}: no fold holds {stage}/best.pt")
    return folds


def score_run(run: Path, data: Path, inputs: List[str], timesteps: int, coding: str, stage: str,
              seed: int = 0) -> Dict[str, Any]:
    """Per encoding: the per-fold evaluate_model results of every fold's ``stage`` model on its test cases."""
    folds = fold_folders(run, coding, stage)
    out: Dict[str, List[Dict[str, Any]]] = {name: [] for name in inputs}
    for fold in folds:
        names = json.loads((fold / stage / "result.json").read_text())["test_cases"]
        model = load_model(fold / stage / "best.pt")
        trained_with = model.input_encoding
        for name in inputs:
            model.input_encoding = name  # a run-time attribute: the weights stay as trained
            t0 = time.time()
            result = evaluate_model(model, data, names, timesteps, coding, seed=seed)
            result.update(fold=fold.name, trained_with=trained_with, seconds=round(time.time() - t0, 1))
            out[name].append(result)
            print(f"{fold.name} {name}: 3D Dice {result['mean_dice_3d']:.4f} ({result['seconds']} s)", flush=True)
    return out


def summary_rows(per_input: Dict[str, List[Dict[str, Any]]], config: Dict[str, Any],
                 timesteps: int) -> Dict[str, Dict[str, Any]]:
    """Pooled Dice, spikes per neuron and energy of each encoding, with its per-fold 3D Dice."""
    ann_uj = ann_energy_uj(config)
    rows = {}
    for name, results in per_input.items():
        row = snn_row(pooled(results), timesteps, ann_uj)
        row["per_fold_dice_3d"] = [round(r["mean_dice_3d"], 4) for r in results]
        rows[name] = row
    return rows


def table(rows: Dict[str, Dict[str, Any]], trained_with: str, timesteps: int) -> str:
    lines = [f"| input at T = {timesteps} (weights fine-tuned on {trained_with} input) | 3D Dice (CV test) | "
             "per fold | spikes / neuron | x ANN energy |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        folds = " / ".join(f"{d:.4f}" for d in r["per_fold_dice_3d"])
        lines.append(f"| {name} | {r['dice_3d']:.4f} ± {r['sd_3d']:.4f} | {folds} | {r['spikes_per_neuron']:.2f} | "
                     f"{r['energy_vs_ann']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="recipe run folder (config.json, CODING/fold_K/...)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    ap.add_argument("--inputs", nargs="+", choices=INPUT_ENCODINGS, default=["poisson", "regular"])
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--coding", default="ternary")
    ap.add_argument("--stage", default=None, help="model folder in each fold (default finetune_T<timesteps>)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.json and table.md")
    args = ap.parse_args(argv)
    if not (args.run / "config.json").is_file():
        ap.error(f"--run {args.run}: no config.json (not a recipe run)")
    torch.set_num_threads(args.threads)
    stage = args.stage or f"finetune_T{args.timesteps}"
    load_start = list(os.getloadavg())
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    per_input = score_run(args.run, args.data, args.inputs, args.timesteps, args.coding, stage)
    config = json.loads((args.run / "config.json").read_text())
    rows = summary_rows(per_input, config, args.timesteps)
    trained_with = per_input[args.inputs[0]][0]["trained_with"]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"tool": "tools/lowt_cv_input_swap.py", "argv": list(sys.argv[1:] if argv is None else argv),
              "run": str(args.run), "stage": stage, "trained_with": trained_with, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": load_start,
              "load_end": list(os.getloadavg()), "threads": args.threads, "rows": rows,
              "per_case": {name: [{"fold": r["fold"], "cases": r["cases"]} for r in results]
                           for name, results in per_input.items()}}
    (args.out / "summary.json").write_text(json.dumps(record, indent=1))
    text = table(rows, trained_with, args.timesteps)
    (args.out / "table.md").write_text(f"<!-- {record['tool']} {' '.join(record['argv'])} | {started} .. "
                                       f"{record['finished']} | load {load_start} .. {record['load_end']} -->\n"
                                       + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
