"""The paper's hippocampus experiments: Tables 1, 2, 3 (Figure 6B), 5 and Figures 3, 4, 6A.

Each function takes a :class:`Context`, writes ``NAME.csv``, ``exp_NAME.png`` and ``NAME.json`` into
``ctx.out`` and returns a small summary. Models come from :func:`fold_models` (reference-run
checkpoints where they fit, trained otherwise); scores use the same Poisson seeds as ``hipposnn
evaluate``, so a number here can be checked with the CLI.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any, Dict, List

import numpy as np
import torch

from ..encoding import make_generator
from ..pipeline import convert_ann
from ..simulate import snn_logits
from ..unet import SpikeStats, SpikingUNet, UNet
from ..weights import load_model
from .common import (
    Context,
    ann_energy_uj,
    eval_slices,
    evaluate,
    fmt_pm,
    fold_models,
    pool_results,
    pool_scores,
    predict,
    pyplot,
    reference_finetuned,
    reference_results,
    save_figure,
    score_probs,
    snn_at,
    write_csv,
)

STAGES = ("ANN", "converted", "fine-tuned")


# -- shared building blocks -----------------------------------------------------------------------
def computed_rows(ctx: Context, coding: str, loss: str, reuse: bool = True) -> List[Dict[str, Any]]:
    """ANN, converted (at the conversion T and at the low SNN T) and fine-tuned scores of ``folds``."""
    s = ctx.settings
    per: Dict[str, List[Dict[str, Any]]] = {}
    sources: Dict[str, str] = {}
    for fold in s["folds"]:
        models = fold_models(ctx, coding, fold, loss, reuse)
        ann = load_model(models["ann"], "ann")
        conv = snn_at(models["converted"])
        ft = snn_at(models["finetuned"])
        sl = eval_slices(ctx, fold, coding, ann.spec.context)
        jobs = [("ANN", ann, 0), ("converted", conv, s["convert_T"]), ("converted", conv, s["snn_T"]),
                ("fine-tuned", ft, s["snn_T"])]
        for stage, model, t in jobs:
            key = f"{stage}@{t}"
            if key in per and len(per[key]) > s["folds"].index(fold):
                continue
            per.setdefault(key, []).append(evaluate(model, sl, t, coding, ctx.device))
            src = {"ANN": "ann", "converted": "converted", "fine-tuned": "finetuned"}[stage]
            sources[key] = models["source"][src]
    subset = f"folds {s['folds']}, " + (f"first {s['eval_cases']} test subjects" if s["eval_cases"] else "all test")
    rows = []
    for key, scores in per.items():
        stage, t = key.split("@")
        pooled = pool_scores(scores)
        rows.append({"coding": coding, "loss": loss, "model": stage, "T": int(t) or None, **_plain(pooled),
                     "evaluated_on": subset, "source": sources[key]})
    return rows


def reference_rows(ctx: Context, coding: str, loss: str = "dice") -> List[Dict[str, Any]]:
    """Rows pooled from the reference run's stored test results (no computation)."""
    res = reference_results(ctx, coding)
    if not res:
        return []
    src = f"reference run, {len(res)}/5 folds, all test subjects"
    rows = [{"coding": coding, "loss": loss, "model": "ANN", "T": None, **pool_results([r["ann"] for r in res]),
             "evaluated_on": src, "source": "docs/results/reference_run"}]
    rows[0]["energy_uj"] = ann_energy_uj(ctx.spec)
    for t in sorted(res[0]["converted"], key=int):
        if int(t) in (ctx.settings["convert_T"], ctx.settings["snn_T"]):
            rows.append({"coding": coding, "loss": loss, "model": "converted", "T": int(t),
                         **pool_results([r["converted"][t] for r in res]), "evaluated_on": src,
                         "source": "docs/results/reference_run"})
    ft = reference_finetuned(ctx, coding, ctx.settings["snn_T"])
    if ft:
        names = sorted(ft)
        rows.append({"coding": coding, "loss": loss, "model": "fine-tuned", "T": ctx.settings["snn_T"],
                     **pool_results([ft[k] for k in names]),
                     "evaluated_on": f"reference run, {len(names)}/5 folds ({', '.join(names)}), all test subjects",
                     "source": "docs/results/cv_run"})
        same = [r["ann"] for r in res if f"fold_{r['fold']}" in names]
        if same:
            rows.append({"coding": coding, "loss": loss, "model": f"ANN (same {len(same)} folds)", "T": None,
                         **pool_results(same), "energy_uj": ann_energy_uj(ctx.spec),
                         "evaluated_on": "folds " + ", ".join(names), "source": "docs/results/reference_run"})
    return rows


def _plain(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if not isinstance(v, (list, dict))}


def _bar_table(ctx: Context, rows: List[Dict[str, Any]], group: str, title: str, name: str) -> None:
    plt = pyplot()
    groups = list(dict.fromkeys(str(r[group]) for r in rows))
    labels = list(dict.fromkeys(f"{r['model']}{'' if not r.get('T') else ' T=' + str(r['T'])}" for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(labels), 1)
    for ax, metric in zip(axes, ("3d", "2d")):
        for j, lab in enumerate(labels):
            xs, ys, es = [], [], []
            for i, g in enumerate(groups):
                hit = [r for r in rows if str(r[group]) == g
                       and f"{r['model']}{'' if not r.get('T') else ' T=' + str(r['T'])}" == lab]
                if hit:
                    xs.append(i + j * width)
                    ys.append(hit[0][f"dice_{metric}"])
                    es.append(hit[0][f"sd_{metric}"])
            ax.bar(xs, ys, width, yerr=es, label=lab, capsize=2)
        ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(groups))])
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"{metric.upper()} Dice")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, ctx.out / f"exp_{name}.png", dpi=120)


# -- Table 1 --------------------------------------------------------------------------------------
def table1(ctx: Context) -> Dict[str, Any]:
    """ANN / early-stop converted / fine-tuned SNN for the BCE, Dice and BCE-Dice losses (binary coding).

    Every loss gets the same training budget (the Dice models are retrained too rather than taken
    from the longer reference run, which would favour the Dice loss); the reference run's Dice-loss
    rows are listed beside them for scale.
    """
    rows: List[Dict[str, Any]] = []
    for loss in ctx.settings["losses"]:
        if ctx.settings["reuse_reference"] and loss == "dice":
            rows.extend(reference_rows(ctx, "binary", "dice"))
        rows.extend(computed_rows(ctx, "binary", loss, reuse=False))
    for r in rows:
        r["table_cell_3d"] = fmt_pm(r["dice_3d"], r["sd_3d"])
        r["table_cell_2d"] = fmt_pm(r["dice_2d"], r["sd_2d"])
    write_csv(ctx.out / "table1.csv", rows)
    sub = [r for r in rows if "reference run" not in r["evaluated_on"] and not r["model"].startswith("ANN (")]
    _bar_table(ctx, sub, "loss", "Table 1: Dice by loss (same folds and subjects for every bar)", "table1")
    return {"rows": rows}


# -- Figure 3 -------------------------------------------------------------------------------------
def fig3(ctx: Context) -> Dict[str, Any]:
    """One test slice: input, ground truth, ANN, converted (low and conversion T), fine-tuned."""
    s = ctx.settings
    fold = s["folds"][0]
    models = fold_models(ctx, "binary", fold)
    ann = load_model(models["ann"], "ann")
    conv, ft = snn_at(models["converted"]), snn_at(models["finetuned"])
    sl = eval_slices(ctx, fold, "binary", ann.spec.context)
    area = sl.labels.reshape(len(sl), -1).sum(1)
    idx = int(np.argmax(area))
    one = type(sl)(sl.images[idx : idx + 1], sl.labels[idx : idx + 1], np.zeros(1, int), [sl.names[sl.case_index[idx]]])
    truth = one.labels[0, 0] > 0.5
    panels = [("ANN", ann, 0), (f"converted T={s['snn_T']}", conv, s["snn_T"]),
              (f"converted T={s['convert_T']}", conv, s["convert_T"]), (f"fine-tuned T={s['snn_T']}", ft, s["snn_T"])]
    rows = [{"panel": "ground truth", "T": None, "pixels": int(truth.sum()), "slice_dice": 1.0}]
    maps = []
    for label, model, t in panels:
        prob = predict(model, one, t, "binary", device=ctx.device)[0, 0]
        mask = prob >= 0.5
        inter = int(np.logical_and(mask, truth).sum())
        rows.append({"panel": label, "T": t or None, "pixels": int(mask.sum()),
                     "slice_dice": 2 * inter / max(int(mask.sum()) + int(truth.sum()), 1)})
        maps.append((label, prob))
    write_csv(ctx.out / "fig3.csv", rows)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 + len(maps), figsize=(2.2 * (2 + len(maps)), 2.9))
    centre = one.images[0, one.images.shape[1] // 2]
    axes[0].imshow(centre, cmap="gray")
    axes[0].set_title(f"input\n{one.names[0]} slice {idx % 24}", fontsize=8)
    axes[1].imshow(truth, cmap="gray")
    axes[1].set_title(f"ground truth\n{int(truth.sum())} px", fontsize=8)
    for ax, (label, prob), row in zip(axes[2:], maps, rows[1:]):
        ax.imshow(prob >= 0.5, cmap="gray")
        ax.contour(truth, levels=[0.5], colors="r", linewidths=0.6)
        ax.set_title(f"{label}\n{row['pixels']} px, Dice {row['slice_dice']:.3f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("Figure 3: outputs on one test slice (red: ground-truth outline)", fontsize=9)
    save_figure(fig, ctx.out / "exp_fig3.png", dpi=120)
    return {"rows": rows, "slice": {"case": one.names[0], "index": idx % 24}}


# -- Figure 4 -------------------------------------------------------------------------------------
def fig4(ctx: Context) -> Dict[str, Any]:
    """Per-layer firing rates (and thresholds) of the converted and the fine-tuned SNN at the same T."""
    s = ctx.settings
    fold = s["folds"][0]
    models = fold_models(ctx, "binary", fold)
    conv, ft = snn_at(models["converted"]), snn_at(models["finetuned"])
    sl = eval_slices(ctx, fold, "binary", conv.spec.context)
    t = s["snn_T"]
    res = {"converted": evaluate(conv, sl, t, "binary", ctx.device), "fine-tuned": evaluate(ft, sl, t, "binary",
                                                                                             ctx.device)}
    th = {"converted": conv.threshold_dict(), "fine-tuned": ft.threshold_dict()}
    rows = [{"layer": layer, "threshold_converted": th["converted"][layer],
             "threshold_finetuned": th["fine-tuned"][layer],
             "rate_converted": res["converted"]["firing_rates"][layer],
             "rate_finetuned": res["fine-tuned"]["firing_rates"][layer]} for layer in th["converted"]]
    rows.append({"layer": "mean", "rate_converted": res["converted"]["firing_rate"],
                 "rate_finetuned": res["fine-tuned"]["firing_rate"]})
    write_csv(ctx.out / "fig4.csv", rows)
    plt = pyplot()
    layers = [r["layer"] for r in rows[:-1]]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(x - 0.2, [r["rate_converted"] for r in rows[:-1]], 0.4, label=f"converted (T={t})")
    ax.bar(x + 0.2, [r["rate_finetuned"] for r in rows[:-1]], 0.4, label=f"fine-tuned (T={t})")
    ax.set_yscale("log")
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=60, fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(x, [r["threshold_converted"] for r in rows[:-1]], "k.--", lw=0.8, label="threshold (converted)")
    ax2.plot(x, [r["threshold_finetuned"] for r in rows[:-1]], "r+:", lw=0.8, label="threshold (fine-tuned)")
    ax2.set_ylabel("threshold")
    ax.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="upper right", fontsize=7)
    ax.set_title("Figure 4: per-layer firing rates before and after fine-tuning", fontsize=10)
    save_figure(fig, ctx.out / "exp_fig4.png", dpi=120)
    mask_ratio = {k: v["pred_voxels"] / max(v["true_voxels"], 1) for k, v in res.items()}
    return {"rows": rows, "dice_3d": {k: v["dice_3d"] for k, v in res.items()}, "mask_to_truth_ratio": mask_ratio,
            "T": t}


# -- Table 2 / Figure 5 ---------------------------------------------------------------------------
def table2(ctx: Context) -> Dict[str, Any]:
    """Dice of the converted SNN for output thresholds 0.10 ... 0.60 (ANN and low T beside it)."""
    s = ctx.settings
    fold = s["folds"][0]
    models = fold_models(ctx, "binary", fold)
    ann = load_model(models["ann"], "ann")
    conv = snn_at(models["converted"])
    sl = eval_slices(ctx, fold, "binary", ann.spec.context)
    probs = {f"converted_T{s['convert_T']}": predict(conv, sl, s["convert_T"], "binary", device=ctx.device),
             f"converted_T{s['snn_T']}": predict(conv, sl, s["snn_T"], "binary", device=ctx.device),
             "ann": predict(ann, sl, 0, "binary", device=ctx.device)}
    rows = []
    for thr in s["thresholds"]:
        row: Dict[str, Any] = {"threshold": thr}
        for key, p in probs.items():
            sc = score_probs(p, sl, thr)
            row[f"{key}_dice_3d"] = sc["dice_3d"]
            row[f"{key}_dice_2d"] = sc["dice_2d"]
        rows.append(row)
    write_csv(ctx.out / "table2.csv", rows)
    best = {k: max(rows, key=lambda r, k=k: r[f"{k}_dice_3d"])["threshold"] for k in probs}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in probs:
        ax.plot([r["threshold"] for r in rows], [r[f"{key}_dice_3d"] for r in rows], "o-", ms=3,
                label=f"{key} (best {best[key]:.2f})")
    ax.axvline(0.48, color="gray", ls=":", lw=0.8, label="paper's optimum 0.48")
    ax.set_xlabel("output threshold")
    ax.set_ylabel("3D Dice")
    ax.legend(fontsize=7)
    ax.set_title("Table 2 / Figure 5: Dice vs output threshold", fontsize=10)
    save_figure(fig, ctx.out / "exp_table2.png", dpi=120)
    return {"rows": rows, "best_threshold": best}


# -- Figure 6A ------------------------------------------------------------------------------------
@torch.no_grad()
def dice_vs_timesteps(model: SpikingUNet, sl: Any, steps: List[int], coding: str, seed: int = 0) -> Dict[int, Any]:
    """Dice at every T in ``steps`` from one run to max(steps) (membranes carried over, same spikes)."""
    chunk = reduce(math.gcd, steps)
    model.eval()
    probs = {t: np.zeros((len(sl), 1, *sl.images.shape[2:]), np.float32) for t in steps}
    for start in range(0, len(sl), 24):
        x = torch.from_numpy(np.ascontiguousarray(sl.images[start : start + 24]))
        trace: List[torch.Tensor] = []
        gen = make_generator(seed * 1_000_003 + start)
        snn_logits(model, x, max(steps), gen, coding, chunk=chunk, trace=trace)
        for t in steps:
            probs[t][start : start + x.shape[0]] = torch.sigmoid(trace[t // chunk - 1]).numpy()
    return {t: score_probs(p, sl) for t, p in probs.items()}


def fig6a(ctx: Context) -> Dict[str, Any]:
    """Converted-SNN Dice vs inference timesteps for several threshold scaling factors."""
    s = ctx.settings
    fold = s["folds"][0]
    models = fold_models(ctx, "binary", fold)
    ann = load_model(models["ann"], "ann")
    assert isinstance(ann, UNet)
    sl = eval_slices(ctx, fold, "binary", ann.spec.context)
    n = s["fig6a_cases"]
    if n:
        keep = np.isin(sl.case_index, np.arange(n))
        sl = type(sl)(sl.images[keep], sl.labels[keep], sl.case_index[keep], sl.names[:n])
    ann_score = score_probs(predict(ann, sl, 0, "binary"), sl)
    c = s["convert"]
    rows = []
    for scale in s["fig6a_scales"]:
        path = ctx.out / "_models" / ctx.mode / "fig6a" / f"scale_{scale}" / "converted.pt"
        if not path.exists():
            convert_ann(models["ann"], ctx.data, path.parent, c["timesteps"], scale, c["percentile"], "binary",
                        c["slices"], fold, s["k"], ctx.seed, device=ctx.device, log=lambda m: None)
        scores = dice_vs_timesteps(snn_at(path), sl, s["fig6a_T"], "binary")
        for t, sc in scores.items():
            rows.append({"scale": scale, "T": t, "dice_3d": sc["dice_3d"], "sd_3d": sc["sd_3d"],
                         "dice_2d": sc["dice_2d"], "sd_2d": sc["sd_2d"]})
        ctx.log(f"  scale {scale}: " + ", ".join(f"T{t} {scores[t]['dice_3d']:.3f}" for t in s["fig6a_T"]))
    write_csv(ctx.out / "fig6a.csv", rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for scale in s["fig6a_scales"]:
        sub = [r for r in rows if r["scale"] == scale]
        ax.plot([r["T"] for r in sub], [r["dice_3d"] for r in sub], "o-", ms=3, label=f"scale {scale}")
    ax.axhline(ann_score["dice_3d"], color="k", ls="--", lw=0.8, label=f"ANN {ann_score['dice_3d']:.3f}")
    ax.axvline(200, color="gray", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("3D Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Figure 6A: converted SNN Dice vs timesteps, by threshold scale", fontsize=10)
    save_figure(fig, ctx.out / "exp_fig6a.png", dpi=120)
    return {"rows": rows, "ann_dice_3d": ann_score["dice_3d"], "n_cases": len(sl.names)}


# -- Figure 6B / Table 3 --------------------------------------------------------------------------
def fig6b(ctx: Context) -> Dict[str, Any]:
    """Validation 2D Dice vs training batches: fine-tuning a converted SNN vs direct training."""
    import json

    from ..pipeline import train_snn
    from ..training import TrainConfig

    s = ctx.settings
    curves: Dict[str, Dict[str, List[Any]]] = {"fine-tuning": {}, "direct": {}}
    t = s["finetune"]["timesteps"]
    if s["reuse_reference"]:
        for method, folder in (("fine-tuning", f"finetune_T{t}"), ("direct", f"direct_T{s['direct']['timesteps']}")):
            for p in sorted(ctx.run_dir.glob(f"binary/fold_[0-9]/{folder}/log.json")):
                curves[method][p.parent.parent.name] = json.loads(p.read_text())["curve"]
        source = "reference run logs (validation subjects, batches of 64 slices, T = 32)"
    else:
        for fold in s["folds"]:
            models = fold_models(ctx, "binary", fold)
            curves["fine-tuning"][f"fold_{fold}"] = json.loads((models["finetuned"].parent / "log.json").read_text())[
                "curve"]
            out = ctx.out / "_models" / ctx.mode / "binary" / "direct" / f"fold_{fold}"
            if not (out / "log.json").exists():
                cfg = TrainConfig(**{**s["direct"], "loss": "dice", "coding": "binary", "seed": ctx.seed,
                                     "device": ctx.device})
                train_snn(ctx.data, out, cfg, init=None, spec=ctx.spec, fold=fold, folds=s["k"], log=lambda m: None,
                          overwrite=True)
            curves["direct"][f"fold_{fold}"] = json.loads((out / "log.json").read_text())["curve"]
        source = f"trained here ({ctx.mode} setting)"
    rows = [{"method": m, "fold": f, "batches": p["batches"], "val_dice_2d": p["val_dice_2d"],
             "val_dice_3d": p["val_dice_3d"]} for m, per in curves.items() for f, pts in per.items() for p in pts]
    write_csv(ctx.out / "fig6b.csv", rows)
    # Table 3: mean over folds at each batch count every fold reached
    table = []
    for m, per in curves.items():
        counts = sorted({p["batches"] for pts in per.values() for p in pts})
        for b in counts:
            vals = [p["val_dice_2d"] for pts in per.values() for p in pts if p["batches"] == b]
            table.append({"method": m, "batches": b, "mean_val_dice_2d": float(np.mean(vals)), "folds": len(vals)})
    write_csv(ctx.out / "table3.csv", table)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = {"fine-tuning": "tab:blue", "direct": "tab:orange"}
    for m, per in curves.items():
        for pts in per.values():
            ax.plot([p["batches"] for p in pts], [p["val_dice_2d"] for p in pts], color=colours[m], alpha=0.3, lw=0.8)
        mean = [r for r in table if r["method"] == m]
        ax.plot([r["batches"] for r in mean], [r["mean_val_dice_2d"] for r in mean], color=colours[m], lw=2,
                label=f"{m} (mean of {len(per)} folds)")
    ax.set_xlabel("training batches")
    ax.set_ylabel("validation 2D Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Figure 6B: fine-tuning vs direct training", fontsize=10)
    save_figure(fig, ctx.out / "exp_fig6b.png", dpi=120)
    return {"rows": table, "source": source}


# -- Table 5 --------------------------------------------------------------------------------------
def table5(ctx: Context) -> Dict[str, Any]:
    """Binary vs ternary coding on hippocampus segmentation (Dice loss)."""
    rows: List[Dict[str, Any]] = []
    for coding in ("binary", "ternary"):
        if ctx.settings["reuse_reference"]:
            rows.extend(reference_rows(ctx, coding))
        rows.extend(computed_rows(ctx, coding, "dice"))
    for r in rows:
        r["table_cell_3d"] = fmt_pm(r["dice_3d"], r["sd_3d"])
        r["table_cell_2d"] = fmt_pm(r["dice_2d"], r["sd_2d"])
    write_csv(ctx.out / "table5.csv", rows)
    sub = [r for r in rows if not r["model"].startswith("ANN (")]
    for r in sub:
        r["group"] = f"{r['coding']}\n{'reference 5-fold' if 'reference run' in r['evaluated_on'] else 'subset'}"
    _bar_table(ctx, sub, "group", "Table 5: binary vs ternary coding", "table5")
    return {"rows": rows}


__all__ = ["table1", "fig3", "fig4", "table2", "fig6a", "fig6b", "table5", "ann_energy_uj", "SpikeStats", "STAGES"]
