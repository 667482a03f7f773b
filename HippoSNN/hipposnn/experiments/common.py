"""What every paper experiment shares: modes and their settings, data, fold models, scoring, output.

Three modes, one code path:

* ``smoke``: seconds on a tiny synthetic MSD-layout folder and a tiny U-Net, so CI proves that every
  experiment still runs end to end (its numbers mean nothing);
* ``reduced`` (the default): the real MSD crops on a 2-core CPU in minutes. It reuses the reference
  run (``docs/results/reference_run``: 5-fold ANN and converted-SNN scores, learning curves) and its
  fold checkpoints (``/tmp/cv`` or ``--checkpoints``) instead of retraining, evaluates on a subset of
  the test fold, and trains only what the reference run never trained, with fewer epochs;
* ``full``: the paper's setting (5 folds, 100 ANN epochs, 35 SNN epochs, batch 26, T = 200), for a GPU.

Settings live in one dictionary per mode (:data:`SETTINGS`) and are written beside every result, so a
CSV always says which setting produced it.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..atomicio import atomic_write_text
from ..data import SliceSet, build_slices, from_slices, load_cases
from ..metrics import AC_PJ, MAC_PJ, ann_macs, dice, mean_sd, slice_dice
from ..pipeline import convert_ann, split_names, train_ann, train_snn
from ..simulate import predict_slices
from ..training import TrainConfig
from ..unet import SpikeStats, SpikingUNet, UNet, UNetSpec, describe
from ..weights import load_model

MODES = ("smoke", "reduced", "full")
from .paths import DEFAULT_CHECKPOINTS, DEFAULT_CV_RUN, DEFAULT_DATA, DEFAULT_RUN, REPO_ROOT  # noqa: E402,F401

SLICES_PER_ROI = 24

_REFERENCE_SPEC = {"in_channels": 3, "channels": (16, 32, 64, 128), "convs_per_level": 2, "kernel_size": 3,
                   "dropout": 0.1}

SETTINGS: Dict[str, Dict[str, Any]] = {
    "smoke": {
        "description": "tiny synthetic data and a tiny U-Net; checks that the code runs, numbers mean nothing",
        "folds": [0], "k": 4, "eval_cases": None,
        "spec": {"in_channels": 1, "channels": (4, 8), "convs_per_level": 1, "kernel_size": 3, "dropout": 0.1},
        "ann": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_batches": 3},
        "convert": {"timesteps": 8, "scale": 0.7, "percentile": 99.9, "slices": 4},
        "finetune": {"epochs": 1, "batch_size": 16, "lr": 5e-4, "timesteps": 4, "max_batches": 2, "eval_every": 1},
        "direct": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "timesteps": 4, "max_batches": 2, "eval_every": 1},
        "losses": ["bce", "dice", "bce_dice"], "convert_T": 8, "snn_T": 4,
        "thresholds": [0.1, 0.3, 0.48, 0.6], "fig6a_T": [4, 8, 16], "fig6a_scales": [0.7, 1.0],
        "fig6a_cases": 2, "reuse_reference": False,
    },
    "reduced": {
        "description": ("real MSD crops, fold 0 only, evaluated on the first 10 test subjects "
                        "(240 slices; fig6a: 2 subjects); "
                        "reference-run checkpoints and results reused; where models are trained here: "
                        "4 ANN epochs + 36 fine-tuning batches (table1 trains all three losses this way)"),
        "folds": [0], "k": 5, "eval_cases": 10,
        "spec": _REFERENCE_SPEC,
        "ann": {"epochs": 4, "batch_size": 32, "lr": 1e-3, "augment": True, "plateau_patience": 4},
        "convert": {"timesteps": 200, "scale": 0.7, "percentile": 99.9, "slices": 32},
        "finetune": {"epochs": 1, "batch_size": 64, "lr": 5e-4, "timesteps": 32, "max_batches": 36,
                     "augment": True, "eval_every": 18, "plateau_patience": 1},
        "direct": {"epochs": 8, "batch_size": 64, "lr": 1e-3, "timesteps": 32, "augment": True, "eval_every": 18,
                   "plateau_patience": 1},
        "losses": ["bce", "dice", "bce_dice"], "convert_T": 200, "snn_T": 32,
        "thresholds": [round(0.1 + 0.02 * i, 2) for i in range(26)],
        "fig6a_T": [8, 16, 32, 64, 128, 200, 256, 400, 600, 800, 1000], "fig6a_scales": [0.5, 0.7, 1.0],
        "fig6a_cases": 2, "reuse_reference": True,
    },
    "full": {
        "description": ("the paper's setting: 5 folds, all test subjects, ANN 100 epochs, SNN 35 epochs, "
                        "batch 26, conversion and fine-tuning at T = 200 (needs a GPU: --device cuda)"),
        "folds": [0, 1, 2, 3, 4], "k": 5, "eval_cases": None,
        "spec": _REFERENCE_SPEC,
        "ann": {"epochs": 100, "batch_size": 26, "lr": 1e-3, "augment": True, "plateau_patience": 4},
        "convert": {"timesteps": 200, "scale": 0.7, "percentile": 99.9, "slices": 32},
        "finetune": {"epochs": 35, "batch_size": 26, "lr": 1e-4, "timesteps": 200, "augment": True,
                     "eval_every": 20, "plateau_patience": 2},
        "direct": {"epochs": 35, "batch_size": 26, "lr": 1e-3, "timesteps": 200, "augment": True,
                   "eval_every": 20, "plateau_patience": 2},
        "losses": ["bce", "dice", "bce_dice"], "convert_T": 200, "snn_T": 200,
        "thresholds": [round(0.1 + 0.02 * i, 2) for i in range(26)],
        "fig6a_T": [8, 16, 32, 64, 128, 200, 256, 400, 600, 800, 1000, 1500, 2000, 2500],
        "fig6a_scales": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "fig6a_cases": None, "reuse_reference": False,
    },
}


@dataclass
class Context:
    """One experiment invocation: mode, folders and the settings of that mode."""

    name: str
    mode: str
    out: Path
    data: Path = DEFAULT_DATA
    run_dir: Path = DEFAULT_RUN
    cv_run: Path = DEFAULT_CV_RUN
    checkpoints: Path = DEFAULT_CHECKPOINTS
    device: str = "cpu"
    seed: int = 0
    log: Callable[[str], None] = print
    settings: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.settings = dict(SETTINGS[self.mode])
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.mode == "smoke":
            self.data = synthetic_msd(self.out / "_synthetic_msd")

    @property
    def spec(self) -> UNetSpec:
        return UNetSpec(**{**self.settings["spec"], "channels": tuple(self.settings["spec"]["channels"])})

    def note(self, text: str) -> None:
        """Record a provenance remark (written into the summary, shown in the report)."""
        self.notes.append(text)
        self.log(text)


# -- data -----------------------------------------------------------------------------------------
def synthetic_msd(root: Path, n: int = 8, seed: int = 0) -> Path:
    """A tiny MSD-layout folder of 24x56x48 synthetic crops (:mod:`hipposnn.synthetic`).

    Deterministic and written once, so every smoke experiment of one run shares it.
    """
    if (root / "labelsTr").is_dir() and len(list((root / "labelsTr").glob("*.nii.gz"))) >= n:
        return root
    from ..synthetic import write_synthetic_msd

    return write_synthetic_msd(root, n, seed, shape=(24, 56, 48))


def eval_names(ctx: Context, fold: int) -> List[str]:
    """The test subjects of ``fold`` that this mode evaluates (the first N in sorted order)."""
    test = split_names(ctx.data, fold, ctx.settings["k"], 0)[2]
    n = ctx.settings["eval_cases"]
    return test[:n] if n else test


def eval_slices(ctx: Context, fold: int, coding: str, context: int) -> SliceSet:
    return build_slices(load_cases(ctx.data, eval_names(ctx, fold)), coding, context)


# -- models ---------------------------------------------------------------------------------------
def fold_models(ctx: Context, coding: str, fold: int, loss: str = "dice", reuse: bool = True) -> Dict[str, Any]:
    """Paths of the ANN, converted and fine-tuned SNN of one fold, reusing or training them.

    Reduced mode reuses the reference run's checkpoints (trained with the Dice loss) where they
    exist, unless ``reuse`` is False (a comparison that needs every model trained alike); anything
    missing is trained here with this mode's settings under ``out/_models``.
    """
    s = ctx.settings
    ref = ctx.checkpoints / coding / f"fold_{fold}"
    tag = "" if reuse else "_same_budget"
    work = ctx.out / "_models" / f"{ctx.mode}{tag}" / coding / loss / f"fold_{fold}"
    found: Dict[str, Any] = {"source": {}}
    reuse = reuse and s["reuse_reference"] and loss == "dice"
    candidates = {
        "ann": [ref / "ann" / "best.pt"] if reuse else [],
        "converted": [ref / "ann" / "converted.pt"] if reuse else [],
        "finetuned": [ref / f"finetune_T{s['finetune']['timesteps']}" / "best.pt"] if reuse else [],
    }
    for key, paths in candidates.items():
        hit = next((p for p in paths if p.exists()), None)
        if hit is not None:
            found[key] = hit
            found["source"][key] = "reference run checkpoint"
    # best.pt exists from the first epoch on; only final.pt says a training ran to its end, so an
    # interrupted one is resumed from last.pt rather than taken as done
    retrained = False
    if "ann" not in found:
        path = work / "ann" / "best.pt"
        if not (work / "ann" / "final.pt").exists():
            t0 = time.time()
            cfg = TrainConfig(**{**s["ann"], "loss": loss, "coding": coding, "seed": ctx.seed, "device": ctx.device})
            resume = (work / "ann" / "last.pt").exists()
            train_ann(ctx.data, work / "ann", cfg, ctx.spec, fold, s["k"], resume=resume, log=_quiet(ctx),
                      overwrite=not resume)
            ctx.note(f"trained ANN {coding}/{loss}/fold {fold} in {time.time() - t0:.0f} s")
            retrained = True
        found["ann"] = path
        found["source"]["ann"] = f"trained here ({ctx.mode} setting)"
    if "converted" not in found:
        path = work / "converted" / "converted.pt"
        if retrained or not path.exists():
            c = s["convert"]
            convert_ann(found["ann"], ctx.data, path.parent, c["timesteps"], c["scale"], c["percentile"], coding,
                        c["slices"], fold, s["k"], ctx.seed, device=ctx.device, log=_quiet(ctx))
        found["converted"] = path
        found["source"]["converted"] = f"converted here ({ctx.mode} setting)"
    if "finetuned" not in found:
        path = work / "finetune" / "best.pt"
        if retrained or not (path.parent / "final.pt").exists():
            t0 = time.time()
            cfg = TrainConfig(**{**s["finetune"], "loss": loss, "coding": coding, "seed": ctx.seed,
                                 "device": ctx.device})
            resume = not retrained and (path.parent / "last.pt").exists()
            train_snn(ctx.data, path.parent, cfg, init=found["converted"], fold=fold, folds=s["k"],
                      resume=resume, log=_quiet(ctx), overwrite=not resume)
            ctx.note(f"fine-tuned {coding}/{loss}/fold {fold} in {time.time() - t0:.0f} s")
        found["finetuned"] = path
        found["source"]["finetuned"] = f"fine-tuned here ({ctx.mode} setting)"
    return found


def _quiet(ctx: Context) -> Callable[[str], None]:
    return lambda msg: ctx.log("    " + msg) if msg.startswith("epoch") else None


def snn_at(path: Union[str, Path]) -> SpikingUNet:
    model = load_model(path, "snn")
    assert isinstance(model, SpikingUNet)
    return model


# -- scoring --------------------------------------------------------------------------------------
def predict(model: Union[UNet, SpikingUNet], slices: SliceSet, timesteps: int, coding: str, seed: int = 0,
            stats: Optional[SpikeStats] = None, device: str = "cpu") -> np.ndarray:
    return predict_slices(model, slices.images, timesteps=timesteps, coding=coding, seed=seed, stats=stats,
                          device=device)


def score_probs(probs: np.ndarray, slices: SliceSet, threshold: float = 0.5) -> Dict[str, Any]:
    """3D Dice per subject and 2D Dice per slice (as :func:`hipposnn.training.evaluate_slices`)."""
    pred = probs >= threshold
    d3: List[float] = []
    d2: List[float] = []
    for i in range(len(slices.names)):
        sel = slices.case_index == i
        p = from_slices(pred[sel])
        t = from_slices(slices.labels[sel] > 0.5)
        d3.append(dice(p, t))
        d2.extend(slice_dice(p, t))
    a, b = mean_sd(d3), mean_sd(d2)
    return {"dice_3d": a["mean"], "sd_3d": a["sd"], "n_cases": a["n"], "dice_2d": b["mean"], "sd_2d": b["sd"],
            "n_slices_2d": b["n"], "case_dice_3d": d3, "slice_dice_2d": d2,
            "pred_voxels": int(pred.sum()), "true_voxels": int((slices.labels > 0.5).sum())}


def pool_scores(scores: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Pool :func:`evaluate` outputs of several folds: 3D over all subjects, 2D over all slices."""
    d3 = [d for s in scores for d in s["case_dice_3d"]]
    d2 = [d for s in scores for d in s["slice_dice_2d"]]
    a, b = mean_sd(d3), mean_sd(d2)
    out: Dict[str, Any] = {"dice_3d": a["mean"], "sd_3d": a["sd"], "n_cases": a["n"], "dice_2d": b["mean"],
                           "sd_2d": b["sd"], "folds": len(scores), "T": scores[0].get("T"),
                           "energy_uj": float(np.mean([s["energy_uj"] for s in scores])),
                           "seconds": float(sum(s.get("seconds", 0.0) for s in scores))}
    if "firing_rate" in scores[0]:
        out["firing_rate"] = float(np.mean([s["firing_rate"] for s in scores]))
        out["synops_roi"] = float(np.mean([s["synops_roi"] for s in scores]))
    return out


def evaluate(model: Union[UNet, SpikingUNet], slices: SliceSet, timesteps: int, coding: str,
             device: str = "cpu") -> Dict[str, Any]:
    """Dice plus, for an SNN, firing rates, synaptic operations and energy per 24-slice ROI."""
    stats = SpikeStats() if isinstance(model, SpikingUNet) else None
    t0 = time.time()
    out = score_probs(predict(model, slices, timesteps, coding, stats=stats, device=device), slices)
    out["seconds"] = round(time.time() - t0, 1)
    if stats is not None:
        out["T"] = timesteps
        out["firing_rate"] = stats.mean_firing_rate()
        out["firing_rates"] = stats.firing_rates()
        out["synops_roi"] = sum(stats.synops_per_sample().values()) * SLICES_PER_ROI
        out["energy_uj"] = out["synops_roi"] * AC_PJ * 1e-6
    else:
        out["T"] = None
        out["energy_uj"] = ann_energy_uj(model.spec)
    return out


def ann_energy_uj(spec: UNetSpec) -> float:
    return sum(ann_macs(describe(spec), spec, 56, 48).values()) * SLICES_PER_ROI * MAC_PJ * 1e-6


def pool_results(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Pool per-fold scores of the reference run's JSON (3D over cases, 2D over slices)."""
    d3 = [c["dice_3d"] for r in results for c in r["cases"]] if isinstance(results[0]["cases"], list) else []
    n = np.array([r["n_slices_2d"] for r in results], float)
    m = np.array([r["mean_dice_2d"] for r in results])
    s = np.array([r["sd_dice_2d"] for r in results])
    mean2 = float((n * m).sum() / n.sum())
    var2 = float((n * (s**2 + (m - mean2) ** 2)).sum() / n.sum())
    if d3:
        a = mean_sd(d3)
        dice_3d, sd_3d, n_cases = a["mean"], a["sd"], a["n"]
    else:  # only per-fold summaries stored: pool means and spreads by case counts
        counts = np.array([r["cases"] for r in results], float)
        means = np.array([r["mean_dice_3d"] for r in results])
        sds = np.array([r["sd_dice_3d"] for r in results])
        dice_3d = float((counts * means).sum() / counts.sum())
        sd_3d = float(np.sqrt((counts * (sds**2 + (means - dice_3d) ** 2)).sum() / counts.sum()))
        n_cases = int(counts.sum())
    out: Dict[str, Any] = {"dice_3d": dice_3d, "sd_3d": sd_3d, "n_cases": n_cases, "dice_2d": mean2,
                           "sd_2d": float(np.sqrt(var2)), "folds": len(results)}
    if "mean_firing_rate" in results[0]:
        out["firing_rate"] = float(np.mean([r["mean_firing_rate"] for r in results]))
        out["synops_roi"] = float(np.mean([r["synops_per_slice"] for r in results])) * SLICES_PER_ROI
        out["energy_uj"] = out["synops_roi"] * AC_PJ * 1e-6
    return out


def reference_results(ctx: Context, coding: str) -> List[Dict[str, Any]]:
    """Per fold, the stored ``ann/result.json`` of ``coding``: from the CV run where it retrained the
    fold, else from the reference run (folds that finished)."""
    out = []
    for fold in range(5):
        for run in (ctx.cv_run, ctx.run_dir):
            path = run / coding / f"fold_{fold}" / "ann" / "result.json"
            if path.exists():
                out.append(json.loads(path.read_text()))
                break
    return out


def reference_finetuned(ctx: Context, coding: str, timesteps: int = 32) -> Dict[str, Dict[str, Any]]:
    """Test scores of the cross-validated fine-tuned fold models ({"fold_k": scores}) from the CV run."""
    out = {}
    for path in sorted(ctx.cv_run.glob(f"{coding}/fold_[0-9]/finetune_T{timesteps}/result.json")):
        out[path.parent.parent.name] = json.loads(path.read_text())["test"]
    return out


# -- output ---------------------------------------------------------------------------------------
def write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> Path:
    """Rows of plain values to CSV (the union of keys, in first-seen order; floats to 6 digits)."""
    keys: List[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys and not isinstance(row[k], (dict, list)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for row in rows:
            writer.writerow([_cell(row.get(k)) for k in keys])
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_json(path: Path, obj: Any) -> Path:
    atomic_write_text(path, json.dumps(obj, indent=1, default=_jsonable))
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on CI or servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Lay out, write and release a figure (figures pile up in memory otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def fmt_pm(mean: Optional[float], sd: Optional[float]) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "-"
    return f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f}"


def set_threads() -> None:
    """One intra-op thread: the experiments share small machines with other jobs."""
    torch.set_num_threads(1)
