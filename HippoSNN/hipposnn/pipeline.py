"""The three-stage pipeline on labelled data, as functions the CLI and the Slicer logic call.

``data`` is anything :func:`hipposnn.data.list_cases` reads: an MSD-layout folder, a folder of
image/label pairs (``<case>.nii.gz`` + ``<case>_label.nii.gz`` / ``<case>_seg.nii.gz``) or a list of
``(image, label)`` paths.

Every stage reads a data folder and a fold, writes its outputs into a run folder
(``best.pt``, ``final.pt``, ``last.pt``, ``log.csv``, ``log.json``, ``settings.json``) and returns
a small summary. Splits: the fold's test cases are never seen in training; a seeded 10 % of its
training cases is held out for validation (learning-rate schedule and best-epoch choice).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__
from .conversion import convert
from .data import DataSource, SliceSet, build_slices, describe_source, fold_names, load_cases
from .errors import Cancelled, HippoSNNError
from .training import Progress, TrainConfig, Trainer, evaluate_slices
from .unet import SpikingUNet, UNet, UNetSpec
from .weights import atomic_write_text, load_model, save_model

PathLike = Union[str, Path]
#: Where labelled cases come from (see the module docstring).
Data = DataSource


def split_names(
    data: Data, fold: Optional[int], k: int = 5, seed: int = 0, val_fraction: float = 0.1
) -> Tuple[List[str], List[str], List[str]]:
    """(train, validation, test) case names for ``fold`` (``None``: train on all, no test)."""
    train, test = fold_names(data, fold, k, seed)
    rng = np.random.default_rng(seed + 1000 + (fold if fold is not None else k))
    order = rng.permutation(len(train))
    n_val = int(round(val_fraction * len(train))) if len(train) > 4 else 0
    val = sorted(train[i] for i in order[:n_val])
    train = sorted(train[i] for i in order[n_val:])
    return train, val, test


def slices_for(data: Data, names: Sequence[str], coding: str, context: int = 0) -> Optional[SliceSet]:
    if not names:
        return None
    return build_slices(load_cases(data, names), coding, context)


def _meta(stage: str, data: Data, fold: Optional[int], cfg: Optional[TrainConfig], **extra: Any) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "stage": stage,
        "data": describe_source(data),
        "fold": fold,
        "code_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cfg is not None:
        meta["train_config"] = json.dumps(asdict(cfg))
    plain = (int, float, str, bool, type(None))
    meta.update({k: v if isinstance(v, plain) else json.dumps(v) for k, v in extra.items()})
    return meta


def train_ann(
    data: Data,
    out: PathLike,
    cfg: TrainConfig,
    spec: Optional[UNetSpec] = None,
    fold: Optional[int] = None,
    folds: int = 5,
    resume: bool = False,
    progress: Optional[Progress] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Stage 1: train the bias-free ANN U-Net."""
    cfg.stage = "ann"
    spec = spec or UNetSpec()
    train, val, test = split_names(data, fold, folds, cfg.seed)
    model = UNet(spec)
    trainer = Trainer(
        model, cfg, build_slices(load_cases(data, train), cfg.coding, spec.context),
        slices_for(data, val, cfg.coding, spec.context), out,
        meta=_meta("ann", data, fold, cfg, coding=cfg.coding), progress=progress, log=log,
    )
    _write_settings(out, {"stage": "ann", "fold": fold, "train": train, "val": val, "test": test,
                          "config": asdict(cfg), "spec": spec.to_dict()})
    history = trainer.fit(resume=resume)
    return {"history": history, "best_val_dice_3d": trainer.best, "out": str(out)}


def convert_ann(
    ann_path: PathLike,
    data: Data,
    out: PathLike,
    timesteps: int = 200,
    scale: float = 0.7,
    percentile: Optional[float] = None,
    coding: str = "binary",
    slices: int = 32,
    fold: Optional[int] = None,
    folds: int = 5,
    seed: int = 0,
    output_scaling: str = "mean",
    device: str = "cpu",
    log: Callable[[str], None] = print,
    progress: Optional[Progress] = None,
) -> SpikingUNet:
    """Stage 2: early-stop conversion, balancing thresholds on ``slices`` training slices.

    ``progress(fraction, message)`` is told the reading of the data and each balanced layer; returning
    False stops with :class:`~hipposnn.errors.Cancelled` before anything is written.
    """

    def report(fraction: float, message: str) -> None:
        if progress is not None and progress(fraction, message) is False:
            raise Cancelled("conversion cancelled")

    report(0.0, "reading the training data")
    ann = load_model(ann_path, "ann")
    assert isinstance(ann, UNet)
    train, _, _ = split_names(data, fold, folds, seed)
    train_set = build_slices(load_cases(data, train), coding, ann.spec.context)
    images = _balancing_slices(train_set, slices, seed)
    report(0.1, f"balancing thresholds on {len(images)} slices, T={timesteps}")
    t0 = time.time()
    snn = convert(
        ann, images, timesteps, scale, percentile, coding, seed, output_scaling, device=device,
        log=lambda name, raw, theta: log(f"  {name}: statistic {raw:.4g} -> threshold {theta:.4g}"),
        progress=None if progress is None else (lambda f, m: progress(0.1 + 0.85 * f, m)),
    )
    seconds = time.time() - t0
    meta = _meta("converted", data, fold, None, coding=coding, balance_timesteps=timesteps, scale=scale,
                 percentile=percentile, balance_slices=len(images), seed=seed, balance_seconds=round(seconds, 2),
                 source=str(ann_path))
    out = Path(out)
    save_model(snn, out / "converted.pt", meta)
    report(1.0, "converted")
    log(f"converted in {seconds:.1f} s -> {out / 'converted.pt'}")
    return snn


def _balancing_slices(train_set: SliceSet, count: int, seed: int) -> np.ndarray:
    """A seeded choice of training slices that contain hippocampus (balancing needs activity)."""
    has_label = np.where(train_set.labels.reshape(len(train_set), -1).max(1) > 0)[0]
    pool = has_label if len(has_label) >= count else np.arange(len(train_set))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))
    return train_set.images[pick]


def train_snn(
    data: Data,
    out: PathLike,
    cfg: TrainConfig,
    init: Optional[PathLike] = None,
    spec: Optional[UNetSpec] = None,
    fold: Optional[int] = None,
    folds: int = 5,
    resume: bool = False,
    progress: Optional[Progress] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Stage 3 (``init`` = a converted SNN) or the direct-training baseline (``init`` = None)."""
    if init is not None:
        cfg.stage = "finetune"
        model = load_model(init, "snn")
    else:
        cfg.stage = "direct"
        model = SpikingUNet(spec or UNetSpec())
    assert isinstance(model, SpikingUNet)
    train, val, test = split_names(data, fold, folds, cfg.seed)
    ctx = model.spec.context
    trainer = Trainer(
        model, cfg, build_slices(load_cases(data, train), cfg.coding, ctx), slices_for(data, val, cfg.coding, ctx), out,
        meta=_meta(cfg.stage, data, fold, cfg, coding=cfg.coding, timesteps=cfg.timesteps,
                   source=str(init) if init else None),
        progress=progress, log=log,
    )
    _write_settings(out, {"stage": cfg.stage, "fold": fold, "train": train, "val": val, "test": test,
                          "config": asdict(cfg), "init": str(init) if init else None})
    history = trainer.fit(resume=resume)
    return {"history": history, "best_val_dice_3d": trainer.best, "out": str(out)}


def evaluate_model(
    model: Union[UNet, SpikingUNet],
    data: Data,
    names: Optional[Sequence[str]] = None,
    timesteps: int = 32,
    coding: str = "binary",
    threshold: float = 0.5,
    seed: int = 0,
    device: str = "cpu",
    progress: Optional[Progress] = None,
    batch_size: int = 24,
) -> Dict[str, Any]:
    """Score a model on labelled data (all cases, or ``names``)."""
    cases = load_cases(data, names)
    if not cases:
        raise HippoSNNError(f"no cases to evaluate in {data}")
    result = evaluate_slices(
        model, build_slices(cases, coding, model.spec.context), timesteps=timesteps, coding=coding,
        threshold=threshold, seed=seed,
        device=device, progress=progress, batch_size=batch_size,
    )
    result["settings"] = {
        "model": "snn" if isinstance(model, SpikingUNet) else "ann",
        "timesteps": timesteps if isinstance(model, SpikingUNet) else None,
        "coding": coding,
        "threshold": threshold,
        "seed": seed,
        "data": describe_source(data),
        "n_cases": len(cases),
    }
    return result


def _write_settings(out: PathLike, settings: Dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "settings.json", json.dumps(settings, indent=1, default=str))
