"""Turn recipe runs (logs and results, no weights needed) into docs/models.md, figures and model cards.

Usage: python tools/report_recipe.py REFERENCE_RUN CV_RUN
  REFERENCE_RUN  the `hipposnn recipe` run of configs/reference.json on a lent GPU
                 (docs/results/reference_run): learning curves of fine-tuning vs direct training
  CV_RUN         the run that completed the cross-validation (configs/cv_cpu.json, docs/results/cv_run):
                 per-fold ANN, converted and fine-tuned test scores; folds missing there are read from
                 REFERENCE_RUN
Writes docs/models.md, docs/figures/*.png and HippoSNN/hipposnn/models/hipposnn_{snn,ann}_{coding}.{json,md}.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from hipposnn import DEFAULT_CODING, __version__  # noqa: E402
from hipposnn.metrics import AC_PJ, MAC_PJ, ann_macs  # noqa: E402
from hipposnn.recipe import spec_from_config  # noqa: E402
from hipposnn.unet import describe  # noqa: E402
from hipposnn.weights import MODELS_DIR, read_payload, sha256_file, write_card  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: What the run logs cannot say about the shipped models (machines, a commit, console-only timings),
#: each with its source; everything else about them is read from the run folders it names.
PROVENANCE = ROOT / "configs" / "provenance.json"
FIG = ROOT / "docs" / "figures"
SLICES_PER_ROI = 24


def pooled(results: List[Dict[str, Any]]) -> Dict[str, float]:
    """Pool per-fold results: 3D over all test cases, 2D over all test slices."""
    d3 = [c["dice_3d"] for r in results for c in r["cases"]]
    n = np.array([r["n_slices_2d"] for r in results], float)
    m = np.array([r["mean_dice_2d"] for r in results])
    s = np.array([r["sd_dice_2d"] for r in results])
    mean2 = float((n * m).sum() / n.sum())
    var2 = float((n * (s**2 + (m - mean2) ** 2)).sum() / n.sum())
    out = {"dice_3d": float(np.mean(d3)), "sd_3d": float(np.std(d3, ddof=1)), "n_cases": len(d3),
           "dice_2d": mean2, "sd_2d": math.sqrt(var2), "folds": len(results)}
    if "mean_firing_rate" in results[0]:
        out["firing_rate"] = float(np.mean([r["mean_firing_rate"] for r in results]))
        out["synops_roi"] = float(np.mean([r["synops_per_slice"] for r in results])) * SLICES_PER_ROI
        # multiply-accumulates of a direct input's first layer (none with Poisson input spikes)
        out["macs_roi"] = float(np.mean([r.get("macs_per_slice", 0.0) for r in results])) * SLICES_PER_ROI
    return out


def _fold_results(runs: List[Path], coding: str, stage: str) -> List[Dict[str, Any]]:
    """Per fold, the result.json of ``stage`` from the first run that has it."""
    out = []
    for fold in range(5):
        for run in runs:
            path = run / coding / f"fold_{fold}" / stage / "result.json"
            if path.exists():
                out.append(json.loads(path.read_text()))
                break
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_facts(folder: Path) -> Dict[str, Any]:
    """Epochs run and planned, best epoch, batches, batch size and seconds of one training run, from its logs."""
    epochs = json.loads((folder / "log.json").read_text())["epochs"]
    config = json.loads((folder / "settings.json").read_text())["config"]
    best = max(epochs, key=lambda r: r["val_dice_3d"])
    facts = {"epochs": len(epochs), "planned_epochs": int(config["epochs"]), "best_epoch": int(best["epoch"]),
             "batches": int(epochs[-1]["batches"]), "batch_size": int(config["batch_size"]),
             "seconds": float(sum(r["seconds"] for r in epochs))}
    result = folder / "result.json"
    if result.exists() and "convert_seconds" in json.loads(result.read_text()):
        facts["convert_seconds"] = float(json.loads(result.read_text())["convert_seconds"])
    return facts


def shipped_notes(provenance: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Shipped file -> compute and limitations text with its sources: run logs plus configs/provenance.json."""
    machines = {k: v["text"] for k, v in provenance["machines"].items()}
    msd = provenance["limitations"]
    notes = {}
    for name, entry in provenance["models"].items():
        sources = [str(PROVENANCE.relative_to(ROOT))]
        not_in_logs = {"machine": {k: v["source"] for k, v in provenance["machines"].items()
                                   if k in (entry.get("ann_machine"), entry.get("finetune_machine"))}}
        a = run_facts(ROOT / entry["ann_run"])
        sources += [f"{entry['ann_run']}/{f}" for f in ("log.json", "settings.json")]
        ann_machine = machines[entry["ann_machine"]]
        ann_time = f"~{round(a['seconds'] / 60)} min"
        limitations = [msd]
        if "finetune_run" not in entry:
            compute = f"{ann_machine}; {_plural(a['epochs'], 'epoch')} ({ann_time}); best epoch {a['best_epoch']} by " \
                      "validation Dice"
        else:
            f = run_facts(ROOT / entry["finetune_run"])
            sources += [f"{entry['finetune_run']}/{x}" for x in ("log.json", "settings.json")]
            if "conversion_seconds" in entry:
                conv = f"{entry['conversion_seconds']['value']:g} s"
                not_in_logs["conversion_seconds"] = entry["conversion_seconds"]["source"]
            else:
                conv = f"{a['convert_seconds']:.1f} s"
                sources.append(f"{entry['ann_run']}/result.json")
            if entry["finetune_machine"] == entry["ann_machine"]:
                compute = (f"{ann_machine}; ANN {_plural(a['epochs'], 'epoch')} ({ann_time}), conversion ({conv}), "
                           f"fine-tuning {_plural(f['epochs'], 'epoch')} ({f['batches']} batches of {f['batch_size']})")
            else:
                compute = (f"ANN: {ann_machine}, {_plural(a['epochs'], 'epoch')}; conversion ({conv}) and "
                           f"{_plural(f['epochs'], 'epoch')} of fine-tuning ({f['batches']} batches of "
                           f"{f['batch_size']}, {f['seconds'] / 60:.1f} min) on {machines[entry['finetune_machine']]}"
                           + (f": `{entry['command']}`" if entry.get("command") else ""))
            if f["epochs"] < f["planned_epochs"] and entry.get("stopped_by"):
                limitations.insert(0, f"fine-tuning was cut after {_plural(f['epochs'], 'epoch')} ({f['batches']} "
                                      f"batches) by {entry['stopped_by']}")
            elif f["epochs"] == 1:
                limitations.insert(0, "fine-tuned for 1 epoch only")
        notes[name] = {"compute": compute, "limitations": "; ".join(limitations),
                       "provenance": {"derived_from": sources, "not_in_the_logs": not_in_logs}}
    return notes


def _imported_epoch(run: Path, result: Dict[str, Any]) -> Any:
    """The epoch of a fine-tuned checkpoint imported from another run (None: trained in this run)."""
    note = run / result["job"] / "imported.json"
    return json.loads(note.read_text()).get("best_epoch", "?") if note.exists() else None


def main() -> None:
    reference, cv_run = Path(sys.argv[1]), Path(sys.argv[2])
    config = json.loads((reference / "config.json").read_text())
    config["codings"] = [c for c in ("binary", "ternary") if (reference / c).is_dir()]
    spec = spec_from_config(config)
    ann_roi_macs = sum(ann_macs(describe(spec), spec, 56, 48).values()) * SLICES_PER_ROI
    FIG.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {}
    for coding in config["codings"]:
        ann_res = _fold_results([cv_run, reference], coding, "ann")
        ann = pooled([r["ann"] for r in ann_res])
        conv = {t: pooled([r["converted"][t] for r in ann_res]) for t in ann_res[0]["converted"]}
        ft_res = _fold_results([cv_run], coding, "finetune_T32")
        ft_folds = {r["fold"] for r in ft_res}
        ft = pooled([r["test"] for r in ft_res]) if ft_res else None
        ft_by_t = ({t: pooled([r["test_by_T"][t] for r in ft_res]) for t in ft_res[0]["test_by_T"]}
                   if ft_res else {})
        ft_ann = pooled([r["ann"] for r in ann_res if r["fold"] in ft_folds]) if ft_res else None
        summary[coding] = {"ann": ann, "converted": conv, "finetuned_T32": ft, "finetuned_by_T": ft_by_t,
                           "ann_same_folds": ft_ann, "finetuned_folds": sorted(ft_folds),
                           "finetuned_per_fold": {r["fold"]: {"dice_3d": r["test"]["mean_dice_3d"],
                                                              "ann_dice_3d": next(a["ann"]["mean_dice_3d"]
                                                                                  for a in ann_res
                                                                                  if a["fold"] == r["fold"]),
                                                              "imported": _imported_epoch(cv_run, r)}
                                                  for r in ft_res}}
        rows.append((coding, "ANN", "-", ann, ann_roi_macs * MAC_PJ))
        for t in ("200", "32"):
            rows.append((coding, "converted (early stop, balanced at T=200)", t, conv[t],
                         conv[t]["synops_roi"] * AC_PJ))
        if ft is not None:
            n = len(ft_res)
            rows.append((coding, f"fine-tuned ({n}/5 folds)", "32", ft, ft["synops_roi"] * AC_PJ))
            if n < 5:
                rows.append((coding, f"ANN on the same {n} folds", "-", ft_ann, ann_roi_macs * MAC_PJ))
            for t in ("16", "64"):
                if t in ft_by_t:
                    rows.append((coding, f"fine-tuned at T=32, run at T={t}", t, ft_by_t[t],
                                 ft_by_t[t]["synops_roi"] * AC_PJ))
        rows.extend(_direct_rows(summary[coding], coding, cv_run, ft_res))

    curves = learning_curves(reference, config, "learning_curves.png", "GPU run")
    cv_curves = learning_curves(cv_run, config, "learning_curves_cv.png", "CPU run, same budget", paired_only=True)
    dice_vs_t(summary)
    dice_vs_energy(summary, ann_roi_macs * MAC_PJ / 1e6)
    rates_plot(cv_run)
    provenance = json.loads(PROVENANCE.read_text())
    write_models_md(rows, summary, curves, cv_curves, config, provenance)
    write_cards(summary, config, provenance)


def _direct_rows(s: Dict[str, Any], coding: str, cv_run: Path, ft_res: List[Dict[str, Any]]) -> List[Any]:
    """Directly trained SNN (random start, the fine-tuning's batch budget and T), with the fine-tuned
    SNN pooled over the same folds beside it when direct training covers fewer folds."""
    dt_res = _fold_results([cv_run], coding, "direct_T32")
    if not dt_res:
        return []
    folds = {r["fold"] for r in dt_res}
    dt = pooled([r["test"] for r in dt_res])
    ft_same = [r for r in ft_res if r["fold"] in folds]
    s["direct_T32"] = dt
    s["direct_folds"] = sorted(folds)
    for r in dt_res:
        s["finetuned_per_fold"].setdefault(r["fold"], {})["direct_dice_3d"] = r["test"]["mean_dice_3d"]
    rows = [(coding, f"directly trained, same budget ({len(dt_res)}/5 folds)", "32", dt, dt["synops_roi"] * AC_PJ)]
    if len(ft_same) != len(ft_res) and len(ft_same) == len(dt_res):
        ft = pooled([r["test"] for r in ft_same])
        rows.append((coding, f"fine-tuned on the same {len(ft_same)} folds", "32", ft, ft["synops_roi"] * AC_PJ))
    return rows


def learning_curves(run: Path, config: Dict[str, Any], name: str, label: str,
                    paired_only: bool = False) -> Dict[str, Any]:
    """Validation Dice vs batches of fine-tuning and direct training; ANN validation Dice vs epoch.

    ``paired_only``: list only folds where this run trained both (a same-budget comparison)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    reach: Dict[str, Any] = {}
    for coding, colour in zip(config["codings"], ("tab:blue", "tab:orange")):
        for p in sorted(run.glob(f"{coding}/fold_[0-9]/ann/log.json")):
            e = json.loads(p.read_text())["epochs"]
            axes[0].plot([r["epoch"] for r in e], [r["val_dice_3d"] for r in e], color=colour, alpha=0.5, lw=1)
        for stage, style in (("finetune_T32", "-"), ("direct_T32", "--")):
            for p in sorted(run.glob(f"{coding}/fold_[0-9]/{stage}/log.json")):
                c = json.loads(p.read_text())["curve"]
                if not c:
                    continue
                b = [r["batches"] for r in c]
                d = [r["val_dice_3d"] for r in c]
                axes[1].plot(b, d, style, color=colour, alpha=0.6, lw=1)
                reach[f"{p.parent.parent.name}/{coding}/{stage}"] = {"batches": b, "dice": d}
    axes[0].set(title="ANN: validation 3D Dice per epoch\n(blue binary, orange ternary)", xlabel="epoch",
                ylabel="3D Dice", ylim=(0.6, 0.95))
    axes[1].set(title=f"SNN at T=32, {label}:\nfine-tuning (solid) vs direct training (dashed)",
                xlabel="training batches", ylabel="validation 3D Dice", ylim=(0.0, 0.95))
    fig.tight_layout()
    fig.savefig(FIG / name, dpi=110)
    plt.close(fig)
    # batches to reach 95 % of the fine-tuned net's final validation Dice
    out: Dict[str, Any] = {}
    for key, ft in reach.items():
        if not key.endswith("finetune_T32"):
            continue
        target = 0.95 * ft["dice"][-1]
        ft_batches = next(b for b, d in zip(ft["batches"], ft["dice"]) if d >= target)
        direct = reach.get(key.replace("finetune_T32", "direct_T32"))
        if direct is None and paired_only:
            continue
        direct_batches = None
        if direct:
            direct_batches = next((b for b, d in zip(direct["batches"], direct["dice"]) if d >= target), None)
        out[key] = {"target": target, "finetune_batches": ft_batches, "direct_batches": direct_batches,
                    "direct_budget": direct["batches"][-1] if direct else None,
                    "direct_best": max(direct["dice"]) if direct else None}
    return out


def dice_vs_t(summary: Dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for coding, colour in zip(summary, ("tab:blue", "tab:orange")):
        conv = summary[coding]["converted"]
        ts = sorted(int(t) for t in conv)
        ax.plot(ts, [conv[str(t)]["dice_3d"] for t in ts], "o--", color=colour, label=f"converted, {coding}")
        ax.axhline(summary[coding]["ann"]["dice_3d"], color=colour, ls=":", lw=1, label=f"ANN, {coding}")
        ft = summary[coding]["finetuned_by_T"]
        if ft:
            ts = sorted(int(t) for t in ft)
            n = summary[coding]["finetuned_T32"]["folds"]
            ax.plot(ts, [ft[str(t)]["dice_3d"] for t in ts], "*-", ms=11, color=colour,
                    label=f"fine-tuned at T=32, {coding} ({n} folds)")
    ax.set(xscale="log", xlabel="timesteps T at inference", ylabel="test 3D Dice (CV)", title="Dice vs T")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "dice_vs_T.png", dpi=110)
    plt.close(fig)


def dice_vs_energy(summary: Dict[str, Any], ann_energy_uj: float) -> None:
    """The trade-off the energy target asks for when it is missed: Dice against estimated energy per ROI."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for coding, colour in zip(summary, ("tab:blue", "tab:orange")):
        s = summary[coding]
        for key, style, label in (("converted", "o--", "converted"), ("finetuned_by_T", "*-", "fine-tuned at T=32")):
            pts = s.get(key) or {}
            ts = sorted(int(t) for t in pts if "synops_roi" in pts[t])
            if not ts:
                continue
            e = [pts[str(t)]["synops_roi"] * AC_PJ / 1e6 for t in ts]
            d = [pts[str(t)]["dice_3d"] for t in ts]
            ax.plot(e, d, style, color=colour, ms=9 if "*" in style else 5, label=f"{label}, {coding}")
            for x, y, t in zip(e, d, ts):
                ax.annotate(f"T={t}", (x, y), fontsize=6, xytext=(3, -8), textcoords="offset points")
        ax.plot([ann_energy_uj], [s["ann"]["dice_3d"]], "s", color=colour, label=f"ANN, {coding}")
    ax.axvline(0.5 * ann_energy_uj, color="grey", ls=":", lw=1, label="target: 0.5 x ANN energy")
    ax.set(xscale="log", xlabel="estimated energy per ROI (µJ, 45 nm)", ylabel="test 3D Dice (CV)",
           title="Dice vs energy per ROI", ylim=(0.0, 0.95))
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(FIG / "dice_vs_energy.png", dpi=110)
    plt.close(fig)


def rates_plot(cv_run: Path, coding: str = "ternary", fold: str = "fold_0") -> None:
    before = json.loads((cv_run / coding / fold / "ann" / "result.json").read_text())
    after = json.loads((cv_run / coding / fold / "finetune_T32" / "result.json").read_text())["test"]
    rates0 = before["converted"]["32"]["firing_rates"]
    layers = list(rates0)
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.bar(x - 0.2, [rates0[n] for n in layers], 0.4, label="converted (T=32)")
    ax.bar(x + 0.2, [after["firing_rates"][n] for n in layers], 0.4, label="fine-tuned (T=32)")
    ax.set_xticks(x, layers, rotation=60, fontsize=8)
    ax.set(ylabel="spikes per neuron per step", title=f"Per-layer firing rates, {coding} coding, {fold} test crops")
    ax.legend()
    fig.tight_layout()
    fig.savefig(FIG / "firing_rates.png", dpi=110)
    plt.close(fig)


def _fmt(r: Dict[str, float]) -> str:
    return f"{r['dice_3d']:.4f} ± {r['sd_3d']:.4f} | {r['dice_2d']:.4f} ± {r['sd_2d']:.4f}"


def _status_line(summary: Dict[str, Any]) -> str:
    parts = []
    for coding, s in summary.items():
        folds = s["finetuned_folds"]
        parts.append(f"{coding}: fine-tuned SNN scored on {len(folds)} of 5 folds ({', '.join(folds) or 'none'})")
    direct = [f"{coding} {len(s['direct_folds'])} of 5 ({', '.join(s['direct_folds'])})"
              for coding, s in summary.items() if s.get("direct_folds")]
    return "**Coverage of the cross-validation.** ANN and converted SNN: all 5 folds, both codings; " + "; ".join(
        parts) + ". Direct training with the fine-tuning's budget, scored on the test folds: " + (
        "; ".join(direct) if direct else "none (validation curves of the GPU run only)") + "."


def _choice_lines(summary: Dict[str, Any], val: Dict[str, float]) -> List[str]:
    """Why the default is what it is, from the numbers (coding by CV; T by CV of the fine-tuned nets)."""
    b, t = summary.get("binary"), summary.get("ternary")
    lines = ["**Default: ternary coding, T = 32.** Cross-validation (the only basis for settings) puts ternary ahead "
             f"of binary for the ANN ({t['ann']['dice_3d']:.4f} vs {b['ann']['dice_3d']:.4f}), the converted SNN at "
             f"T = 200 ({t['converted']['200']['dice_3d']:.4f} vs {b['converted']['200']['dice_3d']:.4f}) and at "
             f"T = 32 ({t['converted']['32']['dice_3d']:.4f} vs {b['converted']['32']['dice_3d']:.4f})"]
    if t["finetuned_T32"] and b["finetuned_T32"]:
        lines[-1] += (f", and the fine-tuned SNN at T = 32 ({t['finetuned_T32']['dice_3d']:.4f}, "
                      f"{t['finetuned_T32']['folds']} folds, vs {b['finetuned_T32']['dice_3d']:.4f}, "
                      f"{b['finetuned_T32']['folds']} folds)")
    lines[-1] += "."
    if val:
        lines[-1] += (" Validation 3D Dice of the two final SNNs on the same held-out 10 % of the crops: "
                      + ", ".join(f"{c} {v:.4f}" for c, v in sorted(val.items())) + ".")
    by_t = t.get("finetuned_by_T") or {}
    if "16" in by_t and "32" in by_t:
        lines[-1] += (f" T: the T = 32 fine-tuned nets run at T = 16 score {by_t['16']['dice_3d']:.4f} and at "
                      f"T = 64 {by_t['64']['dice_3d']:.4f} (vs {by_t['32']['dice_3d']:.4f} at 32). Nets fine-tuned "
                      "at T = 16 (binary, 4 folds, GPU run) reached best validation Dice 0.892-0.905, 0.003-0.005 "
                      "below T = 32 on the same folds, but their checkpoints did not come back to be scored on the "
                      "test folds; T = 32 is therefore the lowest T the cross-validation supports so far, and T = 16 "
                      "the next candidate.")
    return lines + [""]


def _reach_table(curves: Dict[str, Any]) -> List[str]:
    lines = ["| fold / coding | target Dice | fine-tuning | direct training | direct: best Dice within its batches |",
             "|---|---|---|---|---|"]
    for key, c in sorted(curves.items()):
        d = c["direct_batches"]
        direct = f"{d}" if d is not None else (f"not reached in {c['direct_budget']}" if c["direct_budget"] else "-")
        best = f"{c['direct_best']:.3f}" if c["direct_best"] is not None else "-"
        lines.append(f"| {key.rsplit('/', 1)[0]} | {c['target']:.3f} | {c['finetune_batches']} | {direct} | {best} |")
    return lines


def write_models_md(rows, summary, curves, cv_curves, config, provenance) -> None:
    lines = [
        "# Reference models",
        "",
        *provenance["runs_description"],
        "",
        "Report: `python tools/report_recipe.py docs/results/reference_run docs/results/cv_run` (how the shipped",
        "models were made comes from their run logs and `configs/provenance.json`; each model card lists its",
        "sources under `provenance`).",
        "",
        _status_line(summary),
        "",
        "## Cross-validation (subject-wise 5 folds, 200 MSD crops, Dice loss, test folds only)",
        "",
        "3D Dice: mean ± sd over test crops; 2D Dice: mean ± sd over test slices with hippocampus in ground",
        "truth or prediction. Firing rate: spikes per neuron per timestep, mean over layers. SOPs:",
        "synaptic operations (accumulates) per 24-slice ROI. Energy: 4.6 pJ per MAC (ANN) and 0.9 pJ per",
        "accumulate (SNN), 45 nm convention, arithmetic of weighted layers only (no memory, no neuron",
        "updates); the SNN input layer is fed Poisson spikes, so it costs accumulates too.",
        "",
        "| coding | model | T | 3D Dice | 2D Dice | firing rate | SOPs / ROI | energy / ROI (µJ) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for coding, name, t, r, e in rows:
        rate = f"{r['firing_rate']:.4f}" if "firing_rate" in r else "-"
        sops = f"{r['synops_roi'] / 1e9:.2f} G" if "synops_roi" in r else "-"
        lines.append(f"| {coding} | {name} | {t} | {_fmt(r).split(' | ')[0]} | {_fmt(r).split(' | ')[1]} | {rate}"
                     f" | {sops} | {e / 1e6:.1f} |")
    lines += ["", "![Dice vs T](figures/dice_vs_T.png) ![Dice vs energy](figures/dice_vs_energy.png)", "",
              "Converted SNN, test 3D Dice by T (all 5 folds):", ""]
    ts = sorted(summary[next(iter(summary))]["converted"], key=int)
    lines.append("| coding | " + " | ".join(f"T={t}" for t in ts) + " |")
    lines.append("|---|" + "---|" * len(ts))
    for coding in summary:
        conv = summary[coding]["converted"]
        lines.append(f"| {coding} | " + " | ".join(f"{conv[t]['dice_3d']:.3f}" for t in ts) + " |")
    lines += ["", "## Fine-tuning vs direct training", "", "![learning curves](figures/learning_curves.png)", "",
              "Batches (of 64 slices, T = 32) to reach 95 % of the fine-tuned net's last validation Dice, GPU run "
              "(direct training given up to 8 epochs, cut earlier by the time limit):", ""]
    lines += _reach_table(curves)
    if cv_curves:
        lines += ["", "CPU run, direct training given exactly the fine-tuning's budget (1 epoch = 54 batches of 64 "
                  "at T = 32, validation every 18 batches; its test scores are the 'directly trained' rows above):",
                  "", "![learning curves, CPU run](figures/learning_curves_cv.png)", ""]
        lines += _reach_table(cv_curves)
    lines += ["", "## Firing rates before and after fine-tuning", "", "![firing rates](figures/firing_rates.png)", ""]
    lines += ["## Fine-tuned SNN per fold (test 3D Dice at T = 32)", "",
              "| coding | fold | fine-tuned SNN | its ANN | difference | checkpoint | directly trained (same budget) |",
              "|---|---|---|---|---|---|---|"]
    for coding, s in summary.items():
        for fold, r in sorted(s["finetuned_per_fold"].items()):
            if "dice_3d" not in r:
                continue
            origin = f"GPU run, epoch {r['imported']}" if r["imported"] is not None else "CPU, 1 epoch"
            direct = f"{r['direct_dice_3d']:.4f}" if "direct_dice_3d" in r else "-"
            lines.append(f"| {coding} | {fold} | {r['dice_3d']:.4f} | {r['ann_dice_3d']:.4f} | "
                         f"{r['dice_3d'] - r['ann_dice_3d']:+.4f} | {origin} | {direct} |")
    finals = {"binary": ROOT / "docs/results/reference_run/binary/fold_all/finetune_T32/log.json",
              "ternary": ROOT / "docs/results/ternary_final/log.json"}
    val = {c: max(e["val_dice_3d"] for e in json.loads(p.read_text())["epochs"])
           for c, p in finals.items() if p.exists()}
    lines += ["", "## Shipped models", ""]
    lines += _choice_lines(summary, val)
    lines += ["In `HippoSNN/hipposnn/models/`, each with a JSON and a Markdown model card "
              "(SHA-256, data, split, preprocessing, thresholds, settings, CV metrics, compute, limitations):", "",
              "| file | kind | coding | T | how it was made |", "|---|---|---|---|---|"]
    for name, note in shipped_notes(provenance).items():
        path = MODELS_DIR / f"{name}.pt"
        if path.exists():
            meta = read_payload(path, verify=False)["meta"]
            note = successor_card(name) or note
            lines.append(f"| `{name}.pt` | {read_payload(path, verify=False)['kind']} | {meta.get('coding')} | "
                         f"{meta.get('timesteps') or '-'} | {note['compute']}; {note['limitations']} |")
    (ROOT / "docs" / "models.md").write_text("\n".join(lines) + "\n" + _hand_written_tail(ROOT / "docs" / "models.md"))


#: Sections of docs/models.md from this heading on are written by hand (pilots) and kept when regenerating.
HAND_WRITTEN = "## Low-latency path"


def _hand_written_tail(path: Path) -> str:
    """The hand-written sections at the end of ``path`` (from :data:`HAND_WRITTEN`), or ''."""
    text = path.read_text() if path.exists() else ""
    at = text.find("\n" + HAND_WRITTEN)
    return "" if at < 0 else text[at:]


def successor_card(name: str):
    """The card of a model that tools/ship_robust_models.py replaced (it keeps its predecessor's CV), or None.

    Such a model was not made by the recipe runs this report reads, so its card is left as that tool wrote it.
    """
    path = MODELS_DIR / f"{name}.json"
    card = json.loads(path.read_text()) if path.exists() else {}
    return card if "predecessor_sha256" in card else None


def write_cards(summary, config, provenance) -> None:
    for name, note in shipped_notes(provenance).items():
        compute, limitations = note["compute"], note["limitations"]
        path = MODELS_DIR / f"{name}.pt"
        if not path.exists() or successor_card(name) is not None:
            continue
        payload = read_payload(path, verify=False)  # the card is rewritten below
        kind = payload["kind"]
        meta = payload["meta"]
        coding = meta.get("coding", "binary")
        s = summary[coding]
        card = {
            "model": f"{name}.pt",
            "sha256": sha256_file(path),
            "kind": kind,
            "architecture": payload["spec"],
            "data": "MSD Task04 Hippocampus, 200 T1 crops (../shared/data/msd_hippocampus); labels 1+2 merged",
            "training_split": "fold 'all': a seeded 10 % of the crops held out for validation (LR schedule, "
                              "best epoch), the other 90 % trained on",
            "preprocessing": "per-crop 1st-99th percentile of non-zero voxels to [0,1]"
                             + (", then minus the crop mean and / the 99th percentile of |x| to [-1,1]"
                                if coding == "ternary" else "")
                             + "; centre crop/pad to 24x56x48 voxels (padding 0 after normalisation; inference "
                               "normalises over the ROI's content voxels only, to match); sagittal slices along "
                               "axis 0 with one neighbour slice on each side as extra channels",
            "roi": "24 x 56 x 48 voxels at 1 mm (crops); 32 x 56 x 48 for whole-brain inference",
            "coding": coding,
            "default": coding == DEFAULT_CODING,
            "timesteps": meta.get("timesteps"),
            "thresholds": payload.get("thresholds"),
            "output_scaling": payload.get("output_scaling"),
            "training": {"recipe": config, "meta": meta},
            "cv_metrics": s,
            "code_version": f"hipposnn {__version__}, recipe run at commit {provenance['recipe_commit']['value']}",
            "compute": compute,
            "limitations": limitations,
            "provenance": {**note["provenance"], "recipe_commit": provenance["recipe_commit"]["source"]},
        }
        write_card(MODELS_DIR / f"{name}.json", card)
        ann = s["ann"]
        md = [f"# Model card: {name}.pt", "", f"- SHA-256: `{card['sha256']}`",
              f"- Kind: {kind.upper()}; coding: {coding}; T: {card['timesteps']}; "
              + ("the default model of its kind" if coding == DEFAULT_CODING else f"used with `--coding {coding}`"),
              f"- Architecture: {payload['spec']}", f"- Data: {card['data']}", f"- Split: {card['training_split']}",
              f"- Preprocessing: {card['preprocessing']}", f"- ROI: {card['roi']}",
              f"- Cross-validation (5 folds, {coding}): ANN 3D Dice {ann['dice_3d']:.4f} ± {ann['sd_3d']:.4f}",
              f"- Compute: {card['compute']}", f"- Code: {card['code_version']}",
              f"- Limitations: {card['limitations']}",
              f"- Provenance: {', '.join(f'`{p}`' for p in note['provenance']['derived_from'])}",
              "", "Full settings, thresholds and metrics: "
              f"`{name}.json`; tables and figures: `docs/models.md`."]
        if s["finetuned_T32"]:
            ft = s["finetuned_T32"]
            md.insert(10, f"- Fine-tuned SNN at T=32 ({ft['folds']} of 5 folds): 3D Dice {ft['dice_3d']:.4f} ± "
                         f"{ft['sd_3d']:.4f} (ANN on the same folds {s['ann_same_folds']['dice_3d']:.4f}); "
                         f"early-stop converted SNN at T=200 {s['converted']['200']['dice_3d']:.4f}, "
                         f"at T=32 {s['converted']['32']['dice_3d']:.4f}")
        if s.get("direct_T32"):
            dt = s["direct_T32"]
            md.insert(11, f"- Directly trained SNN at T=32, same batch budget as fine-tuning ({dt['folds']} of 5 "
                          f"folds): 3D Dice {dt['dice_3d']:.4f} ± {dt['sd_3d']:.4f}")
        (MODELS_DIR / f"{name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
