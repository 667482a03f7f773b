"""Turn a recipe run (logs and results, no weights needed) into docs/models.md, figures and model cards.

Usage: python tools/report_recipe.py RUN_DIR CV_EVAL_JSON
  RUN_DIR       a `hipposnn recipe` run folder (docs/results/reference_run holds the shipped one)
  CV_EVAL_JSON  scores of fine-tuned fold models on their test folds (tools/eval_cv_models.py)
Writes docs/models.md, docs/figures/*.png and HippoSNN/hipposnn/models/hipposnn_{snn,ann}.{json,md}.
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
from hipposnn import __version__  # noqa: E402
from hipposnn.metrics import AC_PJ, MAC_PJ, ann_macs  # noqa: E402
from hipposnn.recipe import spec_from_config  # noqa: E402
from hipposnn.unet import describe  # noqa: E402
from hipposnn.weights import MODELS_DIR, read_payload, sha256_file, write_card  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_GPU = "recipe jobs in parallel on one NVIDIA H200 (2 calls, 484 s + 251 s wall, 14 worker processes)"
_MSD = "boundaries follow the MSD protocol, not FreeSurfer's"
# shipped file -> (compute, limitations)
SHIPPED_NOTES = {
    "hipposnn_snn": (f"{_GPU}; ANN 40 epochs (~2 min), conversion (~7 s), fine-tuning 2 epochs",
                     f"fine-tuning was cut after 2 epochs (134 batches) by the GPU time limit; {_MSD}"),
    "hipposnn_ann": (f"{_GPU}; 40 epochs (~2 min)", _MSD),
    "hipposnn_snn_ternary": (f"ANN: {_GPU}, 40 epochs; conversion (78 s) and 1 epoch of fine-tuning "
                             "(135 batches of 32, 22.5 min) on the 2-core CPU: `bash tools/finetune_ternary_final.sh`",
                             f"fine-tuned for 1 epoch only; {_MSD}"),
}
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
    return out


def main() -> None:
    run, cv_path = Path(sys.argv[1]), Path(sys.argv[2])
    cv = json.loads(cv_path.read_text())
    config = json.loads((run / "config.json").read_text())
    # the config saved last may list fewer codings than the run holds (a resumed partial run)
    config["codings"] = [c for c in ("binary", "ternary") if (run / c).is_dir()]
    spec = spec_from_config(config)
    ann_roi_macs = sum(ann_macs(describe(spec), spec, 56, 48).values()) * SLICES_PER_ROI
    FIG.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {}
    for coding in config["codings"]:
        ann_res = [json.loads(p.read_text()) for p in sorted(run.glob(f"{coding}/fold_[0-9]/ann/result.json"))]
        ann = pooled([r["ann"] for r in ann_res])
        conv = {t: pooled([r["converted"][t] for r in ann_res]) for t in ann_res[0]["converted"]}
        ft_keys = sorted(k for k in cv if k.startswith(f"{coding}/") and k.endswith("@T32"))
        ft = pooled([cv[k] for k in ft_keys]) if ft_keys else None
        ft_ann = pooled([r["ann"] for r in ann_res if any(f"fold_{r['fold']}/" in k for k in ft_keys)])
        summary[coding] = {"ann": ann, "converted": conv, "finetuned_T32": ft, "ann_same_folds": ft_ann,
                           "finetuned_folds": [k.split("/")[1] for k in ft_keys]}
        rows.append((coding, "ANN", "-", ann, ann_roi_macs * MAC_PJ))
        for t in ("200", "32"):
            rows.append((coding, "converted (early stop, balanced at T=200)", t, conv[t],
                         conv[t]["synops_roi"] * AC_PJ))
        if ft is not None:
            rows.append((coding, f"fine-tuned ({len(ft_keys)}/5 folds)", "32", ft, ft["synops_roi"] * AC_PJ))
            rows.append((coding, f"ANN on the same {len(ft_keys)} folds", "-", ft_ann, ann_roi_macs * MAC_PJ))

    curves = learning_curves(run, config)
    dice_vs_t(summary)
    rates_plot(run, cv)
    write_models_md(rows, summary, curves, config)
    write_cards(summary, config)


def learning_curves(run: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """Validation Dice vs batches of fine-tuning and direct training; ANN validation Dice vs epoch."""
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
    axes[0].set(title="ANN: validation 3D Dice per epoch (blue binary, orange ternary)", xlabel="epoch",
                ylabel="3D Dice", ylim=(0.6, 0.95))
    axes[1].set(title="SNN at T=32: fine-tuning (solid) vs direct training (dashed)", xlabel="training batches",
                ylabel="validation 3D Dice", ylim=(0.0, 0.95))
    fig.tight_layout()
    fig.savefig(FIG / "learning_curves.png", dpi=110)
    plt.close(fig)
    # batches to reach 95 % of the fine-tuned net's final validation Dice
    out: Dict[str, Any] = {}
    for key, ft in reach.items():
        if not key.endswith("finetune_T32"):
            continue
        target = 0.95 * ft["dice"][-1]
        ft_batches = next(b for b, d in zip(ft["batches"], ft["dice"]) if d >= target)
        direct = reach.get(key.replace("finetune_T32", "direct_T32"))
        direct_batches = None
        if direct:
            direct_batches = next((b for b, d in zip(direct["batches"], direct["dice"]) if d >= target), None)
        out[key] = {"target": target, "finetune_batches": ft_batches, "direct_batches": direct_batches,
                    "direct_budget": direct["batches"][-1] if direct else None,
                    "direct_best": max(direct["dice"]) if direct else None}
    return out


def dice_vs_t(summary: Dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for coding, colour in zip(summary, ("tab:blue", "tab:orange")):
        conv = summary[coding]["converted"]
        ts = sorted(int(t) for t in conv)
        ax.plot(ts, [conv[str(t)]["dice_3d"] for t in ts], "o-", color=colour, label=f"converted, {coding}")
        ax.axhline(summary[coding]["ann"]["dice_3d"], color=colour, ls=":", lw=1, label=f"ANN, {coding}")
        ft = summary[coding]["finetuned_T32"]
        if ft:
            ax.plot([32], [ft["dice_3d"]], "*", ms=14, color=colour, label=f"fine-tuned at T=32, {coding}")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="test 3D Dice (CV)", title="Dice vs T")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "dice_vs_T.png", dpi=110)
    plt.close(fig)


def rates_plot(run: Path, cv: Dict[str, Any]) -> None:
    key = next((k for k in sorted(cv) if k.startswith("binary/") and k.endswith("@T32")), None)
    if key is None:
        return
    fold = key.split("/")[1]
    before = json.loads((run / "binary" / fold / "ann" / "result.json").read_text())["converted"]["32"]
    after = cv[key]
    layers = list(before["firing_rates"])
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.bar(x - 0.2, [before["firing_rates"][n] for n in layers], 0.4, label="converted (T=32)")
    ax.bar(x + 0.2, [after["firing_rates"][n] for n in layers], 0.4, label="fine-tuned (T=32)")
    ax.set_xticks(x, layers, rotation=60, fontsize=8)
    ax.set(ylabel="spikes per neuron per step", title=f"Per-layer firing rates, binary coding, {fold} test crops")
    ax.legend()
    fig.tight_layout()
    fig.savefig(FIG / "firing_rates.png", dpi=110)
    plt.close(fig)


def _fmt(r: Dict[str, float]) -> str:
    return f"{r['dice_3d']:.4f} ± {r['sd_3d']:.4f} | {r['dice_2d']:.4f} ± {r['sd_2d']:.4f}"


def write_models_md(rows, summary, curves, config) -> None:
    lines = [
        "# Reference models",
        "",
        "Produced by `hipposnn recipe --config configs/reference.json --data ../shared/data/msd_hippocampus`",
        "(run on a lent NVIDIA H200 with `tools/device_recipe.sh`; raw logs and results in",
        "`docs/results/reference_run/`), scored with `python tools/eval_cv_models.py` and reported with",
        "`python tools/report_recipe.py docs/results/reference_run docs/results/cv_finetuned_eval.json`.",
        "",
        "**Status: partial.** The GPU run was cut at its time limit: every ANN and every early-stop",
        "conversion of the 5-fold CV finished (both codings); the fine-tuning and direct-training jobs ran",
        "2-7 epochs; fine-tuned checkpoints of only some folds came back and were scored on their test",
        "folds. The numbers below say how many folds each row covers.",
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
    lines += ["", "![Dice vs T](figures/dice_vs_T.png)", "", "Converted SNN, test 3D Dice by T (all 5 folds):", ""]
    ts = sorted(summary[next(iter(summary))]["converted"], key=int)
    lines.append("| coding | " + " | ".join(f"T={t}" for t in ts) + " |")
    lines.append("|---|" + "---|" * len(ts))
    for coding in summary:
        conv = summary[coding]["converted"]
        lines.append(f"| {coding} | " + " | ".join(f"{conv[t]['dice_3d']:.3f}" for t in ts) + " |")
    lines += ["", "## Fine-tuning vs direct training", "", "![learning curves](figures/learning_curves.png)", "",
              "Batches (of 64 slices, T = 32) to reach 95 % of the fine-tuned net's last validation Dice:", "",
              "| fold / coding | target Dice | fine-tuning | direct training | direct: best Dice within its batches |",
              "|---|---|---|---|---|"]
    for key, c in sorted(curves.items()):
        d = c["direct_batches"]
        direct = f"{d}" if d is not None else (f"not reached in {c['direct_budget']}" if c["direct_budget"] else "-")
        best = f"{c['direct_best']:.3f}" if c["direct_best"] is not None else "-"
        lines.append(f"| {key.rsplit('/', 1)[0]} | {c['target']:.3f} | {c['finetune_batches']} | {direct} | {best} |")
    lines += ["", "## Firing rates before and after fine-tuning", "", "![firing rates](figures/firing_rates.png)", ""]
    lines += ["## Shipped models", "", "In `HippoSNN/hipposnn/models/`, each with a JSON and a Markdown model card "
              "(SHA-256, data, split, preprocessing, thresholds, settings, CV metrics, compute, limitations):", "",
              "| file | kind | coding | T | how it was made |", "|---|---|---|---|---|"]
    finals = {"binary": ROOT / "docs/results/reference_run/binary/fold_all/finetune_T32/log.json",
              "ternary": ROOT / "docs/results/ternary_final/log.json"}
    val = {c: max(e["val_dice_3d"] for e in json.loads(p.read_text())["epochs"])
           for c, p in finals.items() if p.exists()}
    if len(val) == 2:
        lines += [f"Validation 3D Dice of the final SNNs on the same held-out 10 % of the crops: binary "
                  f"{val['binary']:.4f}, ternary {val['ternary']:.4f}. Ternary is ahead in cross-validation too; it "
                  "ships as the `--coding ternary` variant and should become the default once the whole-brain "
                  "numbers (docs/segmentation.md, measured with the binary model) are re-measured with it.", ""]
    for name, (compute, limitations) in SHIPPED_NOTES.items():
        path = MODELS_DIR / f"{name}.pt"
        if path.exists():
            meta = read_payload(path)["meta"]
            lines.append(f"| `{name}.pt` | {read_payload(path)['kind']} | {meta.get('coding')} | "
                         f"{meta.get('timesteps') or '-'} | {compute}; {limitations} |")
    (ROOT / "docs" / "models.md").write_text("\n".join(lines) + "\n")


def write_cards(summary, config) -> None:
    for name, (compute, limitations) in SHIPPED_NOTES.items():
        path = MODELS_DIR / f"{name}.pt"
        if not path.exists():
            continue
        payload = read_payload(path)
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
                             + "; centre crop/pad to 24x56x48 voxels; sagittal slices along axis 0 with one "
                               "neighbour slice on each side as extra channels",
            "roi": "24 x 56 x 48 voxels at 1 mm (crops); 32 x 56 x 48 for whole-brain inference",
            "coding": coding,
            "timesteps": meta.get("timesteps"),
            "thresholds": payload.get("thresholds"),
            "output_scaling": payload.get("output_scaling"),
            "training": {"recipe": config, "meta": meta},
            "cv_metrics": s,
            "code_version": f"hipposnn {__version__}, recipe run at commit a183a18",
            "compute": compute,
            "limitations": limitations,
        }
        write_card(MODELS_DIR / f"{name}.json", card)
        ann = s["ann"]
        md = [f"# Model card: {name}.pt", "", f"- SHA-256: `{card['sha256']}`",
              f"- Kind: {kind.upper()}; coding: {coding}; T: {card['timesteps']}",
              f"- Architecture: {payload['spec']}", f"- Data: {card['data']}", f"- Split: {card['training_split']}",
              f"- Preprocessing: {card['preprocessing']}", f"- ROI: {card['roi']}",
              f"- Cross-validation (5 folds, {coding}): ANN 3D Dice {ann['dice_3d']:.4f} ± {ann['sd_3d']:.4f}",
              f"- Compute: {card['compute']}", f"- Code: {card['code_version']}",
              f"- Limitations: {card['limitations']}", "", "Full settings, thresholds and metrics: "
              f"`{name}.json`; tables and figures: `docs/models.md`."]
        if s["finetuned_T32"]:
            ft = s["finetuned_T32"]
            md.insert(9, f"- Fine-tuned SNN at T=32 ({ft['folds']} of 5 folds): 3D Dice {ft['dice_3d']:.4f} ± "
                         f"{ft['sd_3d']:.4f} (ANN on the same folds {s['ann_same_folds']['dice_3d']:.4f})")
        (MODELS_DIR / f"{name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
