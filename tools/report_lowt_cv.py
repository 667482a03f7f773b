"""Cross-validated low-latency path next to today's T = 32 models: tables, figures and a summary JSON.

Reads run folders of ``hipposnn recipe`` (results and logs only, no weights):

    python tools/report_lowt_cv.py --lowt docs/results/lowt_cv \
        [--reference docs/results/cv_run docs/results/reference_run]
    python tools/report_lowt_cv.py --lowt docs/results/lowt_cv_rate --ann-from docs/results/lowt_cv \
        --reference docs/results/lowt_cv --figure ''     # the rate-penalty fine-tuning of the same ANNs

``--lowt``: the run of ``configs/lowt_cv.json`` (quantised-clip ANN -> conversion from the clips ->
BPTT at T = 8). ``--reference``: the runs behind the T = 32 models' CV (first run holding a fold wins,
as in ``tools/report_recipe.py``). Same 5 folds (seed 0), test folds only, every Dice pooled over the
200 test crops. Energy: the 45 nm convention of docs/models.md (4.6 pJ per ANN MAC, 0.9 pJ per SNN
accumulate, 24 slices per ROI, input layer included). Writes ``summary.json`` and ``table.md`` into the
``--lowt`` folder and the figure ``docs/figures/lowt_dice_vs_T_energy.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from hipposnn.metrics import AC_PJ, MAC_PJ, ann_macs  # noqa: E402
from hipposnn.recipe import spec_from_config  # noqa: E402
from hipposnn.unet import describe  # noqa: E402
from report_recipe import SLICES_PER_ROI, _fold_results, pooled  # noqa: E402

FIG = ROOT / "docs" / "figures"
#: Lowest Dice the comparison plot shows; points below it are listed on the plot instead.
COMPARE_FLOOR = 0.82
#: What a job folder keeps that the docs need (the weights stay in the run folder).
KEEP = ("result.json", "log.json", "log.csv", "settings.json")


def copy_results(run: Path, dest: Path) -> None:
    """Logs and results of every job of the recipe run ``run`` (no weights), its config and job list.

    Jobs linked in from another run (a run that reused that run's ANNs) are left out: their records
    belong to the other run's folder (``--ann-from``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "jobs.json"):
        if (run / name).exists():
            shutil.copyfile(run / name, dest / name)
    for job in run.glob("*/fold_*/*/"):  # job folders, and a warm start's ReLU ANN (ann_relu, no result.json)
        if job.is_symlink() or not any((job / name).exists() for name in KEEP):
            continue
        target = dest / job.relative_to(run)
        target.mkdir(parents=True, exist_ok=True)
        for name in KEEP:
            if (job / name).exists():
                shutil.copyfile(job / name, target / name)


def ann_energy_uj(config: Dict[str, Any]) -> float:
    """Energy per ROI of the ANN twin (same architecture for the quantised and the ReLU ANN)."""
    spec = spec_from_config(config)
    return sum(ann_macs(describe(spec), spec, 56, 48).values()) * SLICES_PER_ROI * MAC_PJ / 1e6


def snn_row(r: Dict[str, Any], t: int, ann_uj: float) -> Dict[str, Any]:
    """A pooled SNN result with spikes per neuron and energy (absolute and as a fraction of the ANN's)."""
    energy = (r["synops_roi"] * AC_PJ + r.get("macs_roi", 0.0) * MAC_PJ) / 1e6
    return {**r, "timesteps": t, "spikes_per_neuron": r["firing_rate"] * t, "energy_roi_uj": energy,
            "energy_vs_ann": energy / ann_uj}


def by_t(results: List[Dict[str, Any]], key: str, ann_uj: float) -> Dict[str, Dict[str, Any]]:
    """Pooled score of every T that all folds in ``results`` have under ``key``."""
    common = set.intersection(*(set(r[key]) for r in results)) if results else set()
    return {t: snn_row(pooled([r[key][t] for r in results]), int(t), ann_uj) for t in sorted(common, key=int)}


def summarise(lowt: Path, reference: List[Path], coding: str = "ternary",
              ann_from: Optional[Path] = None) -> Dict[str, Any]:
    """``ann_from``: the run whose ANN jobs ``lowt`` fine-tuned from (a run that reused another's ANNs)."""
    config = json.loads((lowt / "config.json").read_text())
    ann_uj = ann_energy_uj(config)
    ft_t = int(config["default_timesteps"])
    ann_res = _fold_results([ann_from or lowt], coding, "ann")
    ft_res = _fold_results([lowt], coding, f"finetune_T{ft_t}")
    out: Dict[str, Any] = {
        "coding": coding, "ann_energy_roi_uj": ann_uj, "finetune_timesteps": ft_t,
        "quant_levels": config["ann"].get("quant_levels"),
        "lowt": {"folds": sorted(r["fold"] for r in ann_res),
                 "finetuned_folds": sorted(r["fold"] for r in ft_res),
                 "ann": pooled([r["ann"] for r in ann_res]) if ann_res else None,
                 "relu_ann": pooled([r["relu_ann"] for r in ann_res])
                 if ann_res and all("relu_ann" in r for r in ann_res) else None,
                 "converted": by_t(ann_res, "converted", ann_uj),
                 "finetuned": by_t(ft_res, "test_by_T", ann_uj),
                 "ann_same_folds": pooled([r["ann"] for r in ann_res if r["fold"] in {f["fold"] for f in ft_res}])
                 if ft_res else None,
                 "per_fold": per_fold(ann_res, ft_res, ft_t)},
    }
    if reference:
        ref_ann = _fold_results(reference, coding, "ann")
        ref_ft = _fold_results(reference, coding, "finetune_T32")
        out["t32"] = {"folds": sorted(r["fold"] for r in ref_ft),
                      "ann": pooled([r["ann"] for r in ref_ann]),
                      "converted": by_t(ref_ann, "converted", ann_uj),
                      "finetuned": {**by_t(ref_ft, "test_by_T", ann_uj),
                                    "32": snn_row(pooled([r["test"] for r in ref_ft]), 32, ann_uj)}}
    return out


def per_fold(ann_res: List[Dict[str, Any]], ft_res: List[Dict[str, Any]], t: int) -> List[Dict[str, Any]]:
    tuned = {r["fold"]: r for r in ft_res}
    rows = []
    for r in ann_res:
        row = {"fold": r["fold"], "ann": r["ann"]["mean_dice_3d"],
               "converted": r["converted"].get(str(t), {}).get("mean_dice_3d")}
        if r["fold"] in tuned:
            row["finetuned"] = tuned[r["fold"]]["test"]["mean_dice_3d"]
            row["finetune_seconds"] = tuned[r["fold"]].get("train_seconds")
        row["ann_seconds"] = r.get("ann_seconds")
        rows.append(row)
    return rows


def _d(r: Optional[Dict[str, Any]]) -> str:
    return "-" if not r else f"{r['dice_3d']:.4f} ± {r['sd_3d']:.4f}"


def table(s: Dict[str, Any]) -> str:
    low, t_ft = s["lowt"], s["finetune_timesteps"]
    n_ft = len(low["finetuned_folds"])
    lines = ["| model | T | 3D Dice (CV test) | 2D Dice | spikes / neuron | SOPs / ROI | energy / ROI (µJ) "
             "| x ANN energy |", "|---|---|---|---|---|---|---|---|"]

    def add(name: str, r: Optional[Dict[str, Any]], t: str = "-") -> None:
        if not r:
            return
        if "energy_roi_uj" in r:
            lines.append(f"| {name} | {t} | {_d(r)} | {r['dice_2d']:.4f} | {r['spikes_per_neuron']:.2f} | "
                         f"{r['synops_roi'] / 1e9:.2f} G | {r['energy_roi_uj']:.1f} | {r['energy_vs_ann']:.3f} |")
        else:
            lines.append(f"| {name} | - | {_d(r)} | {r['dice_2d']:.4f} | - | - | {s['ann_energy_roi_uj']:.1f} | 1 |")

    add(f"ReLU ANN the quantised ANN starts from (warm start, {len(low['folds'])} folds)", low.get("relu_ann"))
    add(f"quantised-clip ANN (L = {s['quant_levels']}, {len(low['folds'])} folds)", low["ann"])
    for t, r in low["converted"].items():
        add("converted from the clips, no fine-tuning", r, t)
    for t, r in low["finetuned"].items():
        add(f"fine-tuned at T = {t_ft} ({n_ft} folds)" + ("" if int(t) == t_ft else f", run at T = {t}"), r, t)
    if n_ft and n_ft < len(low["folds"]):
        add(f"quantised ANN on the same {n_ft} folds", low["ann_same_folds"])
    if "t32" in s:
        ref = s["t32"]
        add("today's ReLU ANN (reference CV, 5 folds)", ref["ann"])
        for t in ("8", "32"):
            add("today's conversion (balanced at T = 200)", ref["converted"].get(t), t)
        for t, r in sorted(ref["finetuned"].items(), key=lambda kv: int(kv[0])):
            run_at = "" if t == "32" else f", run at T = {t}"
            add(f"today's fine-tuned at T = 32 ({len(ref['folds'])} folds){run_at}", r, t)
    lines += ["", f"| fold | quantised ANN | converted, T = {t_ft} | fine-tuned, T = {t_ft} | fine-tuned - ANN |",
              "|---|---|---|---|---|"]
    for row in low["per_fold"]:
        ft = row.get("finetuned")
        tuned = "- | -" if ft is None else f"{ft:.4f} | {ft - row['ann']:+.4f}"
        lines.append(f"| {row['fold']} | {row['ann']:.4f} | {row['converted'] or 0:.4f} | {tuned} |")
    return "\n".join(lines)


def _dice_vs_energy(ax, pts: Dict[str, Dict[str, Any]], style: str, colour: str, label: str, big: int) -> None:
    """One series of pooled results by T on a Dice-vs-energy axis, each point labelled with its T."""
    ts = sorted(pts, key=int)
    e, d = [pts[t]["energy_vs_ann"] for t in ts], [pts[t]["dice_3d"] for t in ts]
    ax.plot(e, d, style, color=colour, ms=big if "*" in style else 5, label=label)
    for x, y, t in zip(e, d, ts):
        ax.annotate(f"T={t}", (x, y), fontsize=6, xytext=(3, -8), textcoords="offset points")


def figures(s: Dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    series = [("lowt", "converted", "o--", "tab:green", "low-T: converted from the clips"),
              ("lowt", "finetuned", "*-", "tab:green", f"low-T: fine-tuned at T = {s['finetune_timesteps']}"),
              ("t32", "converted", "o--", "tab:orange", "today: converted (balanced at T = 200)"),
              ("t32", "finetuned", "*-", "tab:orange", "today: fine-tuned at T = 32")]
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    for group, key, style, colour, label in series:
        pts = (s.get(group) or {}).get(key) or {}
        ts = sorted(pts, key=int)
        if not ts:
            continue
        ax_t.plot([int(t) for t in ts], [pts[t]["dice_3d"] for t in ts], style, color=colour,
                  ms=10 if "*" in style else 5, label=label)
        _dice_vs_energy(ax_e, pts, style, colour, label, big=10)
    for group, colour, label in (("lowt", "tab:green", "quantised ANN"), ("t32", "tab:orange", "today's ANN")):
        ann = (s.get(group) or {}).get("ann")
        if ann:
            ax_t.axhline(ann["dice_3d"], color=colour, ls=":", lw=1, label=label)
            ax_e.plot([1.0], [ann["dice_3d"]], "s", color=colour, label=label)
    ax_t.axhline(0.900, color="grey", ls="-.", lw=0.8, label="target 0.900")
    ax_t.set(xscale="log", xlabel="timesteps T at inference", ylabel="test 3D Dice (5-fold CV)",
             title="Dice vs T", ylim=(0.5, 0.93))
    ax_e.axvline(0.25, color="grey", ls="-.", lw=0.8, label="target: 0.25 x ANN energy")
    ax_e.set(xscale="log", xlabel="energy per ROI / ANN's (45 nm convention)", ylabel="test 3D Dice (5-fold CV)",
             title="Dice vs energy", ylim=(0.5, 0.93))
    for ax in (ax_t, ax_e):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot: the points are dense
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_colours(count: int) -> List[Any]:
    """One distinct colour per run: the default cycle (10 colours) while it lasts, tab20 beyond (a zip with the
    10-colour cycle dropped the 11th run from the plot)."""
    if count <= 10:
        return list(plt.rcParams["axes.prop_cycle"].by_key()["color"])[:count]
    cmap = plt.get_cmap("tab20")
    return [cmap(i % 20) for i in range(count)]


def compare_figure(runs: List[Tuple[str, Path]], path: Path) -> None:
    """Dice vs energy of several low-T CV runs on one zoomed plot (their ``summary.json``): the paths differ
    by a few thousandths of Dice, which the full-range plot of :func:`figures` cannot show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10.5, max(4.8, 0.8 + 0.17 * (3 * len(runs) + 2))))  # room for the legend
    lows = [(label, json.loads((folder / "summary.json").read_text())["lowt"]) for label, folder in runs]
    for (label, low), colour in zip(lows, run_colours(len(lows))):
        for key, style, what in (("converted", "o--", "converted"), ("finetuned", "*-", "fine-tuned")):
            if low.get(key):
                _dice_vs_energy(ax, low[key], style, colour, f"{label}: {what}", big=9)
        ax.axhline(low["ann"]["dice_3d"], color=colour, ls=":", lw=1, label=f"{label}: quantised ANN")
    ax.axhline(0.900, color="grey", ls="-.", lw=0.8, label="target 0.900")
    ax.axvline(0.25, color="grey", ls="--", lw=0.8, label="target: 0.25 x ANN energy")
    ax.set(xscale="log", xlabel="energy per ROI / ANN's (45 nm convention)", ylabel="test 3D Dice (5-fold CV)",
           title="Low-T paths, 5-fold CV: Dice vs energy")
    ax.set_ylim(bottom=COMPARE_FLOOR)  # the paths differ by thousandths; a collapse far below would flatten them
    below = [f"{label.split(',')[0]}: {what} T={t} at {r['dice_3d']:.3f}" for label, low in lows
             for what, key in (("converted", "converted"), ("fine-tuned", "finetuned"))
             for t, r in (low.get(key) or {}).items() if r["dice_3d"] < COMPARE_FLOOR]
    if below:
        ax.text(0.01, 0.01, "below the plot: " + "; ".join(below), transform=ax.transAxes, fontsize=6, va="bottom")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot: the points are dense
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _labelled(text: str) -> Tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--compare takes LABEL=FOLDER, not {text!r}")
    return label, Path(folder)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lowt", type=Path, default=ROOT / "docs" / "results" / "lowt_cv")
    ap.add_argument("--reference", type=Path, nargs="*",
                    default=[ROOT / "docs" / "results" / "cv_run", ROOT / "docs" / "results" / "reference_run"])
    ap.add_argument("--copy-from", type=Path, default=None,
                    help="recipe run folder whose logs and results (no weights) are first copied into --lowt")
    ap.add_argument("--ann-from", type=Path, default=None,
                    help="run folder holding the ANN jobs (when --lowt reused another run's ANNs)")
    ap.add_argument("--coding", choices=("binary", "ternary"), default="ternary",
                    help="which coding's jobs of the run to report (a run of one coding: that one)")
    ap.add_argument("--figure", default=str(FIG / "lowt_dice_vs_T_energy.png"), help="'' for none")
    ap.add_argument("--compare", type=_labelled, nargs="+", default=None, metavar="LABEL=FOLDER",
                    help="only draw Dice vs energy of these reported CV folders (summary.json) into --figure")
    args = ap.parse_args(argv)
    if args.compare:
        compare_figure(args.compare, Path(args.figure))
        return 0
    if args.copy_from is not None:
        copy_results(args.copy_from, args.lowt)
    s = summarise(args.lowt, args.reference, coding=args.coding, ann_from=args.ann_from)
    (args.lowt / "summary.json").write_text(json.dumps(s, indent=1))
    text = table(s)
    (args.lowt / "table.md").write_text(text + "\n")
    if args.figure:  # a Path('') would be '.', and matplotlib would write '.png'
        figures(s, Path(args.figure))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
