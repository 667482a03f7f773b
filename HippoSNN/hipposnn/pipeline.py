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
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import __version__
from .augment import SiteAugmentation, augment_cases
from .conversion import convert, convert_from_clip
from .data import DataSource, SliceSet, build_slices, describe_source, fold_names, load_cases
from .errors import Cancelled, HippoSNNError
from .options import RUN_FILES, existing_run_files
from .quant import calibrate_clips
from .training import Progress, TrainConfig, Trainer, evaluate_slices
from .unet import SpikingUNet, UNet, UNetSpec
from .weights import atomic_write_text, load_model, model_from_payload, read_payload, save_model

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


def training_slices(
    data: Data, names: Sequence[str], cfg: TrainConfig, context: int
) -> Tuple[SliceSet, Optional[Callable[[int], SliceSet]]]:
    """The training slices, and with ``cfg.site_augment`` a function giving each epoch's augmented set.

    Every epoch sees new site-augmented crops (:mod:`hipposnn.augment`), seeded from ``cfg.seed`` and the
    epoch, so a resumed run sees exactly what an uninterrupted one would.
    """
    cases = load_cases(data, names)
    plain = build_slices(cases, cfg.coding, context)
    if not cfg.site_augment:
        return plain, None

    site = SiteAugmentation(thick_mm=cfg.site_thick_mm)

    def for_epoch(epoch: int) -> SliceSet:
        return build_slices(augment_cases(cases, seed=cfg.seed * 100_003 + epoch, cfg=site), cfg.coding, context)

    return plain, for_epoch


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


def check_out_folder(out: PathLike, what: str = "--out") -> Path:
    """Refuse, in one line, an output folder that is a file or lies under one."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise HippoSNNError(f"{what} {out} is a file: give a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise HippoSNNError(f"{what} {out} lies under the file {parent}: give a folder")
            break
    return out


def _check_run_folder(out: PathLike, resume: bool, overwrite: bool) -> Path:
    """Refuse to replace a finished or interrupted run unless ``resume`` or ``overwrite`` says what to do."""
    if resume and overwrite:
        raise HippoSNNError("--resume and --overwrite exclude each other: continue the run or start it over")
    out = check_out_folder(out)
    found = existing_run_files(out)
    if found and not resume and not overwrite:
        raise HippoSNNError(f"{out} already holds a training run ({', '.join(found)}): pass --resume to "
                            "continue it or --overwrite to replace it")
    return out


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def _run_folder(out: Path, trainer: Trainer, resume: bool, overwrite: bool) -> Iterator[None]:
    """Prepare ``out`` for a run (resume check, ``overwrite`` clears the old run) and clean up on failure.

    A run that fails or is cancelled before its first checkpoint removes what it wrote, and the folders
    this run created; after that ``last.pt`` stays for ``--resume``.
    """
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # innermost first
    if resume:
        trainer.check_resume()
    try:
        try:
            if overwrite and _is_rank0():
                for name in RUN_FILES:
                    (out / name).unlink(missing_ok=True)
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HippoSNNError(f"cannot prepare the run folder {out}: {exc.strerror or exc}") from None
        yield
    except BaseException:
        if _is_rank0() and not (out / "last.pt").exists():
            for name in RUN_FILES:
                try:
                    (out / name).unlink()
                except OSError:
                    pass
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


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
    overwrite: bool = False,
    init: Optional[PathLike] = None,
    teacher: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Stage 1: train the bias-free ANN U-Net (from random weights, or from the ANN file ``init``).

    ``out`` must not hold a run already unless ``resume`` (continue it, with the same settings but
    those in :data:`~hipposnn.training.RESUME_MAY_CHANGE`) or ``overwrite`` (start over) is given.
    The weights are initialised from ``cfg.seed``: the same call gives the same run.
    With ``cfg.distill`` the loss also pulls the ANN towards the ANN ``teacher`` (default: ``init``):
    a quantised-clip ANN warm-started from a ReLU ANN loses some of its Dice to the quantisation, and
    the ReLU ANN's per-pixel answer might win it back. Cross-validated on the whole-brain default's path
    it did not (quantised ANN 0.8945 against 0.8958 without; docs/models.md), so no shipped recipe uses it.
    """
    cfg.stage = "ann"
    if cfg.distill > 0 and teacher is None and init is None:
        raise HippoSNNError("--distill on an ANN needs the ANN to learn from: --init (its default) or --teacher")
    teacher, teacher_model = _load_teacher(teacher if teacher is not None else init, cfg.distill)
    out = _check_run_folder(out, resume, overwrite)
    spec = spec or UNetSpec()
    train, val, test = split_names(data, fold, folds, cfg.seed)
    torch.manual_seed(cfg.seed)
    if init is not None:
        model = load_model(init, "ann")
        assert isinstance(model, UNet)
    else:
        model = UNet(replace(spec, quant_levels=cfg.quant_levels or 0))
    if cfg.quant_levels is None:  # the --init model's own activation, else plain ReLU
        cfg.quant_levels = model.spec.quant_levels
    calibrate = cfg.quant_levels > 0 and (init is None or model.spec.quant_levels == 0)
    model = requantise(model, cfg.quant_levels)
    spec = model.spec
    train_set, for_epoch = training_slices(data, train, cfg, spec.context)
    if calibrate and not resume:
        clips = calibrate_clips(model, _calibration_batches(train_set, cfg.seed), cfg.clip_percentile)
        log(f"clips initialised from the {cfg.clip_percentile:g}th percentile of each layer's ReLU activations: "
            + ", ".join(f"{k} {v:.3g}" for k, v in clips.items()))
    trainer = Trainer(
        model, cfg, train_set, slices_for(data, val, cfg.coding, spec.context), out,
        meta=_meta("ann", data, fold, cfg, coding=cfg.coding, source=str(init) if init else None,
                   **({"quant_levels": cfg.quant_levels} if cfg.quant_levels else {}),
                   **({"teacher": str(teacher)} if teacher else {})),
        progress=progress, log=log, train_for_epoch=for_epoch, teacher=teacher_model,
    )
    with _run_folder(out, trainer, resume, overwrite):
        _write_settings(out, {"stage": "ann", "fold": fold, "train": train, "val": val, "test": test,
                              "config": asdict(cfg), "spec": spec.to_dict(), "init": str(init) if init else None,
                              **({"teacher": str(teacher)} if teacher else {})})
        history = trainer.fit(resume=resume)
    return {"history": history, "best_val_dice_3d": trainer.best, "out": str(out)}


def requantise(model: UNet, levels: int) -> UNet:
    """``model`` with ``levels`` quantisation levels (0: ReLU), same weights; clips kept where it had them."""
    if model.spec.quant_levels == levels:
        return model
    new = UNet(replace(model.spec, quant_levels=levels))
    new.weights.load_state_dict(model.weights.state_dict())
    new.set_clips(model.clip_dict())
    return new


def _calibration_batches(train_set: SliceSet, seed: int, count: int = 256, batch: int = 32) -> List[torch.Tensor]:
    """A seeded choice of training slices, in batches, for the first clips of a quantised ANN."""
    rng = np.random.default_rng(seed + 77)
    pick = np.sort(rng.choice(len(train_set), size=min(count, len(train_set)), replace=False))
    images = torch.from_numpy(np.ascontiguousarray(train_set.images[pick]))
    return list(images.split(batch))


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
    from_clip: bool = False,
    reset: str = "subtract",
    input_encoding: str = "poisson",
) -> SpikingUNet:
    """Stage 2: early-stop conversion, balancing thresholds on ``slices`` training slices.

    ``from_clip``: thresholds from the learned clips of a quantised ANN instead (no data, no balancing;
    ``timesteps`` is then only recorded as the T to run it at). ``reset``: the neurons' reset;
    ``input_encoding``: Poisson or regular input spikes, or the image itself (see :class:`~hipposnn.unet.SpikingUNet`).
    ``progress(fraction, message)`` is told the reading of the data and each balanced layer; returning
    False stops with :class:`~hipposnn.errors.Cancelled` before anything is written.
    """

    def report(fraction: float, message: str) -> None:
        if progress is not None and progress(fraction, message) is False:
            raise Cancelled("conversion cancelled")

    out = check_out_folder(out)
    report(0.0, "reading the training data")
    ann = load_model(ann_path, "ann")
    assert isinstance(ann, UNet)
    if from_clip:
        if ann.spec.quant_levels <= 0:
            raise HippoSNNError(f"{ann_path} has no quantisation levels: --from-clip needs an ANN trained with "
                                "--quant-levels (or convert it by balancing, without --from-clip)")
        snn = convert_from_clip(ann, output_scaling, reset, input_encoding)
        meta = _meta("converted", data, fold, None, coding=coding, conversion="clip", timesteps=timesteps,
                     quant_levels=ann.spec.quant_levels, initial_membrane=snn.initial_membrane, reset=reset,
                     input_encoding=input_encoding, seed=seed, source=str(ann_path))
        save_model(snn, out / "converted.pt", meta)
        report(1.0, "converted")
        log("thresholds from the learned clips: " + ", ".join(f"{k} {v:.3g}" for k, v in snn.threshold_dict().items()))
        log(f"converted from the clip (L = {ann.spec.quant_levels}, run at T = {timesteps}) -> {out / 'converted.pt'}")
        return snn
    if ann.spec.quant_levels > 0:
        log(f"note: {ann_path} is a quantised ANN (L = {ann.spec.quant_levels}); --from-clip converts it "
            "without balancing")
    train, _, _ = split_names(data, fold, folds, seed)
    train_set = build_slices(load_cases(data, train), coding, ann.spec.context)
    images = _balancing_slices(train_set, slices, seed)
    report(0.1, f"balancing thresholds on {len(images)} slices, T={timesteps}")
    t0 = time.time()
    snn = convert(
        ann, images, timesteps, scale, percentile, coding, seed, output_scaling, device=device,
        log=lambda name, raw, theta: log(f"  {name}: statistic {raw:.4g} -> threshold {theta:.4g}"),
        progress=None if progress is None else (lambda f, m: progress(0.1 + 0.85 * f, m)), reset=reset,
        input_encoding=input_encoding,
    )
    seconds = time.time() - t0
    meta = _meta("converted", data, fold, None, coding=coding, balance_timesteps=timesteps, scale=scale,
                 percentile=percentile, balance_slices=len(images), seed=seed, balance_seconds=round(seconds, 2),
                 source=str(ann_path), **({"reset": reset} if reset != "subtract" else {}),
                 **({"input_encoding": input_encoding} if input_encoding != "poisson" else {}))
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
    overwrite: bool = False,
    teacher: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Stage 3 (``init`` = a converted SNN) or the direct-training baseline (``init`` = None).

    ``resume``, ``overwrite`` and seeding as in :func:`train_ann`. With ``cfg.distill`` the loss also
    pulls the SNN towards the ANN ``teacher`` (default: the ANN that ``init`` was converted from).
    """
    cfg.stage = "finetune" if init is not None else "direct"
    teacher, teacher_model = _teacher(cfg, init, teacher)
    out = _check_run_folder(out, resume, overwrite)
    if init is not None:
        model = load_model(init, "snn")
    else:
        torch.manual_seed(cfg.seed)
        model = SpikingUNet(spec or UNetSpec())
    assert isinstance(model, SpikingUNet)
    train, val, test = split_names(data, fold, folds, cfg.seed)
    ctx = model.spec.context
    train_set, for_epoch = training_slices(data, train, cfg, ctx)
    trainer = Trainer(
        model, cfg, train_set, slices_for(data, val, cfg.coding, ctx), out,
        meta=_meta(cfg.stage, data, fold, cfg, coding=cfg.coding, timesteps=cfg.timesteps,
                   source=str(init) if init else None, **({"teacher": str(teacher)} if teacher else {})),
        progress=progress, log=log, train_for_epoch=for_epoch,
        teacher=teacher_model,
    )
    with _run_folder(out, trainer, resume, overwrite):
        _write_settings(out, {"stage": cfg.stage, "fold": fold, "train": train, "val": val, "test": test,
                              "config": asdict(cfg), "spec": model.spec.to_dict(),
                              "init": str(init) if init else None,
                              **({"teacher": str(teacher)} if teacher else {})})
        history = trainer.fit(resume=resume)
    return {"history": history, "best_val_dice_3d": trainer.best, "out": str(out)}


def _teacher(
    cfg: TrainConfig, init: Optional[PathLike], teacher: Optional[PathLike]
) -> Tuple[Optional[Path], Optional[UNet]]:
    """The ANN to distil from and its path: ``teacher``, else the ANN ``init`` was converted from (None, None
    without --distill). Its file is read once, for the kind check and the weights."""
    if cfg.distill <= 0:
        return None, None
    if teacher is None and init is not None:
        source = (read_payload(init).get("meta") or {}).get("source")
        teacher = source if source and Path(source).is_file() else None
        if teacher is None:
            raise HippoSNNError(f"--distill: {init} does not name an ANN file that exists here; give --teacher ANN.pt")
    if teacher is None:
        raise HippoSNNError("--distill needs a converted SNN to fine-tune (direct training has no teacher)")
    return _load_teacher(teacher, cfg.distill)


def _load_teacher(teacher: Optional[PathLike], weight: float) -> Tuple[Optional[Path], Optional[UNet]]:
    """The ANN file ``teacher`` and its model, read once (None, None when ``weight`` is 0 or no teacher)."""
    if weight <= 0 or teacher is None:
        return None, None
    if not Path(teacher).is_file():
        raise HippoSNNError(f"--teacher: file not found: {teacher}")
    payload = read_payload(teacher)
    if payload.get("kind") != "ann":  # an SNN file would load as ANN weights: refuse it instead
        raise HippoSNNError(f"--teacher: {teacher} is not an ANN")
    model = model_from_payload(payload, "ann", source=str(teacher))
    assert isinstance(model, UNet)
    return Path(teacher), model


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
    smooth: float = 0.0,
) -> Dict[str, Any]:
    """Score a model on labelled data (all cases, or ``names``); ``smooth``: the readout step's sigma
    (:mod:`hipposnn.readout`; 0, the raw map, for the recipe and the tools that reproduce its numbers)."""
    cases = load_cases(data, names)
    if not cases:
        raise HippoSNNError(f"no cases to evaluate in {data}")
    result = evaluate_slices(
        model, build_slices(cases, coding, model.spec.context), timesteps=timesteps, coding=coding,
        threshold=threshold, seed=seed,
        device=device, progress=progress, batch_size=batch_size, smooth=smooth,
    )
    result["settings"] = {
        "model": "snn" if isinstance(model, SpikingUNet) else "ann",
        "timesteps": timesteps if isinstance(model, SpikingUNet) else None,
        "coding": coding,
        "threshold": threshold,
        "readout_sigma": smooth,
        "seed": seed,
        "data": describe_source(data),
        "n_cases": len(cases),
    }
    return result


def _write_settings(out: PathLike, settings: Dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "settings.json", json.dumps(settings, indent=1, default=str))
