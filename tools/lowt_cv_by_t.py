"""Dice and energy of a low-T CV run's fine-tuned SNNs run at every T of issue 14 (1, 2, 4, 8, 16, 32).

Why a tool: the recipe scores each fold's fine-tuned SNN at the timesteps its config lists
(``eval.finetune_timesteps``), and the whole-brain default's path was cross-validated with 4, 8 and 16 only.
This scores the finished fold models of a recipe run again, on each fold's own test crops, at the timesteps
asked for (same seed and settings as the recipe; weights untouched), next to the fold's quantised ANN, and
writes the pooled 3D Dice, spikes per neuron and energy against the ANN as ``tools/report_lowt_cv.py`` does,
with a figure (Dice against T and against energy).

    python tools/lowt_cv_by_t.py --run runs/lowt_cv_binary_relu_kd_thick6 --coding binary \
        --out docs/results/lowt_cv_binary_relu_kd_thick6/by_t --figure docs/figures/lowt_default_path_by_t.png
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

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hipposnn.atomicio import atomic_write_text  # noqa: E402
from hipposnn.pipeline import evaluate_model  # noqa: E402
from hipposnn.weights import load_model  # noqa: E402
from lowt_cv_input_swap import fold_folders  # noqa: E402
from report_lowt_cv import ann_energy_uj, snn_row  # noqa: E402
from report_recipe import pooled  # noqa: E402

DEFAULT_T = [1, 2, 4, 8, 16, 32]


def score_folds(folds: List[Path], data: Path, stage: str, timesteps: List[int], coding: str,
                seed: int = 0) -> Dict[str, List[Dict[str, Any]]]:
    """Per T (and "ann" for the fold's quantised ANN): the per-fold evaluate_model results on the test cases."""
    out: Dict[str, List[Dict[str, Any]]] = {"ann": [], **{str(t): [] for t in timesteps}}
    for fold in folds:
        names = json.loads((fold / stage / "result.json").read_text())["test_cases"]
        snn = load_model(fold / stage / "best.pt")
        for key, model, t in [("ann", load_model(fold / "ann" / "best.pt"), 1)] + [(str(t), snn, t) for t in timesteps]:
            t0 = time.time()
            result = evaluate_model(model, data, names, t, coding, seed=seed)
            result.update(fold=fold.name, seconds=round(time.time() - t0, 1))
            out[key].append(result)
            print(f"{fold.name} {key}: 3D Dice {result['mean_dice_3d']:.4f} ({result['seconds']} s)", flush=True)
    return out


def summary_rows(per_key: Dict[str, List[Dict[str, Any]]], config: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Pooled Dice of the ANN and of the SNN at each T (with spikes per neuron and energy), per-fold Dice."""
    ann_uj = ann_energy_uj(config)
    rows: Dict[str, Dict[str, Any]] = {}
    for key, results in per_key.items():
        row = dict(pooled(results), energy_roi_uj=ann_uj, energy_vs_ann=1.0) if key == "ann" else snn_row(
            pooled(results), int(key), ann_uj)
        row["per_fold_dice_3d"] = [round(r["mean_dice_3d"], 4) for r in results]
        rows[key] = row
    return rows


def table(rows: Dict[str, Dict[str, Any]], trained_t: int) -> str:
    lines = ["| model | T | 3D Dice (CV test) | per fold | spikes / neuron | x ANN energy |",
             "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        folds = " / ".join(f"{d:.4f}" for d in r["per_fold_dice_3d"])
        if key == "ann":
            lines.append(f"| quantised-clip ANN | - | {r['dice_3d']:.4f} ± {r['sd_3d']:.4f} | {folds} | - | 1 |")
        else:
            name = f"fine-tuned at T = {trained_t}" + ("" if int(key) == trained_t else f", run at T = {key}")
            lines.append(f"| {name} | {key} | {r['dice_3d']:.4f} ± {r['sd_3d']:.4f} | {folds} | "
                         f"{r['spikes_per_neuron']:.2f} | {r['energy_vs_ann']:.3f} |")
    return "\n".join(lines) + "\n"


def figure(rows: Dict[str, Dict[str, Any]], title: str, path: Path, floor: float = 0.85) -> None:
    """Dice against T (whole range) and, zoomed to Dice >= ``floor``, against energy (x the ANN's)."""
    from matplotlib.ticker import FuncFormatter

    snn = [(int(k), r) for k, r in rows.items() if k != "ann"]
    ann = rows["ann"]["dice_3d"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax, points in ((left, snn), (right, [(t, r) for t, r in snn if r["dice_3d"] >= floor])):
        xs = [t if ax is left else r["energy_vs_ann"] for t, r in points]
        ax.plot(xs, [r["dice_3d"] for _, r in points], "o-", color="tab:blue", label="fine-tuned SNN (CV test)")
        for (t, r), x in zip(points, xs):
            ax.annotate(f"T={t}\n{r['dice_3d']:.4f}", (x, r["dice_3d"]), textcoords="offset points", xytext=(5, -22),
                        fontsize=7)
        ax.axhline(ann, color="tab:gray", ls="--", label=f"its quantised ANN ({ann:.4f})")
        ax.axhline(0.900, color="tab:red", ls=":", label="issue 14 target, 0.900")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain)
        ax.set_ylabel("3D Dice, 5-fold CV test")
        ax.grid(alpha=0.3)
    left.set_xlabel("timesteps T")
    left.legend(loc="lower right", fontsize=8)
    right.set_xlabel("energy per ROI (x the ANN's, 45 nm convention)")
    right.set_ylim(floor, 0.905)
    right.axvline(0.25, color="tab:red", ls=":", lw=1)
    low = [f"T={t}: {r['dice_3d']:.3f}" for t, r in snn if r["dice_3d"] < floor]
    right.set_title(f"zoom on Dice >= {floor}" + (f" (below: {', '.join(low)})" if low else ""), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _title(args: argparse.Namespace) -> str:
    return f"{args.run.name} ({args.coding}): fine-tuned at T = {args.trained_t}, scored at each T"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="recipe run folder (config.json, CODING/fold_K/...)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    ap.add_argument("--coding", default="binary")
    ap.add_argument("--trained-t", type=int, default=8, help="the T the SNNs were fine-tuned at (stage finetune_T<T>)")
    ap.add_argument("--timesteps", type=int, nargs="+", default=DEFAULT_T)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.json and table.md")
    ap.add_argument("--figure", type=Path, help="PNG of Dice against T and energy")
    ap.add_argument("--replot", action="store_true", help="only redraw --figure from --out's summary.json")
    args = ap.parse_args(argv)
    if args.replot:
        if not args.figure or not (args.out / "summary.json").is_file():
            ap.error("--replot needs --figure and a summary.json in --out")
        record = json.loads((args.out / "summary.json").read_text())
        figure(record["rows"], _title(args), args.figure)
        return 0
    if not (args.run / "config.json").is_file():
        ap.error(f"--run {args.run}: no config.json (not a recipe run)")
    if min(args.timesteps) < 1:
        ap.error("--timesteps must be >= 1")
    torch.set_num_threads(args.threads)
    stage = f"finetune_T{args.trained_t}"
    load_start = list(os.getloadavg())
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    folds = fold_folders(args.run, args.coding, stage)
    per_key = score_folds(folds, args.data, stage, sorted(set(args.timesteps)), args.coding)
    config = json.loads((args.run / "config.json").read_text())
    rows = summary_rows(per_key, config)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"tool": "tools/lowt_cv_by_t.py", "argv": list(sys.argv[1:] if argv is None else argv),
              "run": str(args.run), "stage": stage, "coding": args.coding, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": load_start,
              "load_end": list(os.getloadavg()), "threads": args.threads, "rows": rows,
              "per_case": {key: [{"fold": r["fold"], "cases": r["cases"]} for r in results]
                           for key, results in per_key.items()}}
    atomic_write_text(args.out / "summary.json", json.dumps(record, indent=1))
    text = table(rows, args.trained_t)
    atomic_write_text(args.out / "table.md", f"<!-- {record['tool']} {' '.join(record['argv'])} | {started} .. "
                                             f"{record['finished']} | load {load_start} .. {record['load_end']} -->\n"
                                             + text)
    if args.figure:
        figure(rows, _title(args), args.figure)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
