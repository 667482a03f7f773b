"""The reference-model recipe: cross-validated three-stage training plus the final models, one command.

``hipposnn recipe --config configs/reference.json --data DIR --out RUN`` runs, for every spike coding
in the config and every fold (plus "all" = the final model on every crop):

1. ANN training, then early-stop conversion (threshold balancing at the config's T) and the
   converted SNN's Dice-vs-T curve on the fold's test crops;
2. SNN fine-tuning from the converted net at each fine-tuning T of the config;
3. direct SNN training from random weights at the default T with the same batch budget (folds only;
   ``"direct": {"epochs": 0}`` leaves it out).

The low-latency path is the same recipe with other settings (``configs/lowt_cv.json``):
``"ann": {"quant_levels": L}`` trains quantised-clip ANNs, ``"convert": {"from_clip": true}`` takes
the thresholds from the learned clips (no balancing pass; ``"reset": "zero"`` for a hard reset;
``"input": "regular"`` or ``"direct"`` gives the first layer evenly spaced spikes or the image itself
instead of Poisson spikes, :class:`hipposnn.encoding.InputStream`), and
``"ann": {"warm_start": {"epochs": E, ...}}`` first trains a ReLU ANN with those changes to the
``"ann"`` settings (folder ``ann_relu``) and starts the quantised-clip ANN from it, its clips at the
``"clip_percentile"``-th percentile of the ReLU activations (99.9 unless told; the whole-brain default's path
uses 90: the clips hardly move in training, so their start sets how coarsely the levels cut each layer;
``"clip_lr": R`` lets each clip learn at R x its start per step; ``"ema": D`` validates and keeps a moving
average of the weights with decay D per step, :mod:`hipposnn.averaging`);
``max_batches`` / ``rate_penalty`` in ``"ann"``, ``"finetune"`` and ``"direct"`` bound the budget and
penalise firing; ``"finetune": {"distill": W}`` adds W x the per-pixel KL from the fold's ANN to the
fine-tuning loss (:func:`hipposnn.losses.distill_loss`; ``"teacher": "relu"`` takes the warm start's ReLU
ANN, which the quantised one approximates, instead), and ``"ann": {"distill": W}`` the same from
the warm start's ReLU ANN to the quantised-clip ANN's loss. ``"finetune": {"frugal_memory": true}`` runs BPTT
with :func:`hipposnn.memory.frugal_allocator`
(CPU: about half the peak memory per step, about 20 % slower; docs/benchmarks.md). A config with
``"base": "other.json"`` holds only its changes to that file (``configs/lowt_cv_long_lr1e3.json``);
the run folder's ``config.json`` is the merged whole.

Jobs run in parallel worker processes (``--jobs``); each writes ``result.json`` when done, so an
interrupted recipe rerun skips finished jobs and resumes unfinished training from ``last.pt``. A
training folder that holds ``final.pt`` (training finished, scoring did not) or ``imported.json`` (a
``best.pt`` brought back from another machine's run, with a note of where it came from) is scored,
not retrained.
:mod:`hipposnn.report` turns the run folder into tables, plots and model cards.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import HippoSNNError
from .weights import atomic_write_text

ALL = "all"


@dataclass(frozen=True)
class Job:
    stage: str  # "ann" (ANN + conversion), "finetune" or "direct"
    coding: str
    fold: str  # "0".."k-1" or "all"
    timesteps: int = 0

    @property
    def folder(self) -> str:
        name = self.stage if self.stage == "ann" else f"{self.stage}_T{self.timesteps}"
        return f"{self.coding}/fold_{self.fold}/{name}"


def _merged(base: Dict[str, Any], changes: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``changes`` applied: nested sections merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_config(path: Path, seen: tuple = ()) -> Dict[str, Any]:
    """A config file; one with ``"base": "other.json"`` (next to it) holds only what differs from that one.

    Why: experiments on one path (``configs/lowt_cv_*.json``) change a setting or two, and full copies
    would hide which.
    """
    if path.resolve() in seen:
        raise HippoSNNError(f"recipe config {path}: its \"base\" chain loops")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HippoSNNError(f"cannot read recipe config {path}: {exc}") from None
    base = config.pop("base", None)
    if base is None:
        return config
    return _merged(_read_config(path.parent / base, seen + (path.resolve(),)), config)


#: Whom the fine-tuning distils from (``"finetune": {"teacher": ...}``): the fold's quantised-clip ANN, which
#: the SNN was converted from, or the ReLU ANN of its warm start, which that ANN approximates.
FINETUNE_TEACHERS = ("ann", "relu")


def _finetune_teacher(ann: Path, settings: Dict[str, Any]) -> Path:
    """The checkpoint a fold's fine-tuning distils from (``ann`` is the fold's quantised-ANN folder)."""
    if settings.get("teacher", "ann") == "relu":
        return ann.parent / "ann_relu" / "best.pt"
    return ann / "best.pt"


def load_config(path: os.PathLike) -> Dict[str, Any]:
    from .options import INPUT_ENCODINGS

    config = _read_config(Path(path))
    for key in ("spec", "ann", "convert", "finetune", "direct", "eval", "codings", "folds"):
        if key not in config:
            raise HippoSNNError(f"recipe config {path} lacks '{key}'")
    if config["convert"].get("from_clip") and not int(config["ann"].get("quant_levels") or 0) > 0:
        raise HippoSNNError(f"recipe config {path}: conversion from the clip needs \"ann\": {{\"quant_levels\": L}}")
    if config["convert"].get("input", "poisson") not in INPUT_ENCODINGS:
        raise HippoSNNError(f"recipe config {path}: \"convert\": {{\"input\": ...}} must be one of "
                            + ", ".join(INPUT_ENCODINGS))
    warm = config["ann"].get("warm_start")
    if warm is not None and not (isinstance(warm, dict) and int(config["ann"].get("quant_levels") or 0) > 0):
        raise HippoSNNError(f"recipe config {path}: \"ann\": {{\"warm_start\": {{...}}}} takes the settings of a ReLU "
                            "ANN (e.g. {\"epochs\": 16}) that a quantised-clip ANN (\"quant_levels\": L) starts from")
    teacher = config["finetune"].get("teacher", "ann")
    if teacher not in FINETUNE_TEACHERS:
        raise HippoSNNError(f"recipe config {path}: \"finetune\": {{\"teacher\": ...}} must be one of "
                            + ", ".join(FINETUNE_TEACHERS))
    if teacher == "relu" and (warm is None or not float(config["finetune"].get("distill") or 0) > 0):
        raise HippoSNNError(f"recipe config {path}: \"finetune\": {{\"teacher\": \"relu\"}} distils the warm "
                            "start's ReLU ANN into the SNN; it needs \"ann\": {\"warm_start\": ...} and "
                            "\"finetune\": {\"distill\": W} with W > 0")
    if float(config["ann"].get("distill") or 0) > 0 and warm is None:
        raise HippoSNNError(f"recipe config {path}: \"ann\": {{\"distill\": W}} distils the warm start's ReLU ANN "
                            "into the quantised-clip ANN; it needs \"warm_start\"")
    return config


def smoke_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A seconds-long variant of ``config`` for CI: tiny net, one epoch, short T, one coding."""
    c = json.loads(json.dumps(config))
    c["spec"].update(channels=[4, 8], dropout=0.0)
    c["ann"].update(epochs=1, batch_size=16)
    if c["ann"].get("warm_start"):
        c["ann"]["warm_start"].update(epochs=1)
    c["convert"].update(timesteps=8, slices=8)
    c["finetune"].update(epochs=1, batch_size=16, timesteps=[4], eval_every=None)
    c["direct"].update(epochs=min(1, int(c["direct"].get("epochs", 1))), batch_size=16, eval_every=None)
    c["eval"].update(timesteps=[4, 8])
    c["eval"]["finetune_timesteps"] = [4]
    c["default_timesteps"] = 4
    c["codings"] = c["codings"][:1]
    c["folds"] = 2
    c["final"] = False
    return c


def plan(config: Dict[str, Any]) -> List[Job]:
    """All jobs in priority order: every ANN first (cheap), then per coding the default-T fine-tuning
    and direct training, then the other fine-tuning T; a deadline cuts the least important ones."""
    folds = [str(f) for f in range(int(config["folds"]))]
    if config.get("final", True):
        folds.append(ALL)
    default_t = int(config["default_timesteps"])
    jobs: List[Job] = [Job("ann", coding, fold) for coding in config["codings"] for fold in folds]
    for coding in config["codings"]:
        for fold in folds:
            jobs.append(Job("finetune", coding, fold, default_t))
            if fold != ALL and int(config["direct"].get("epochs", 1)) > 0:
                jobs.append(Job("direct", coding, fold, default_t))
    for coding in config["codings"]:
        for t in config["finetune"]["timesteps"]:
            if int(t) != default_t:
                jobs.extend(Job("finetune", coding, fold, int(t)) for fold in folds)
    return jobs


def spec_from_config(config: Dict[str, Any]):
    """The UNetSpec of a recipe config (its ``context`` neighbour slices become input channels)."""
    from .unet import UNetSpec

    spec_cfg = dict(config["spec"])
    context = int(spec_cfg.pop("context", 0))
    return UNetSpec(in_channels=1 + 2 * context, **{**spec_cfg, "channels": tuple(spec_cfg["channels"])})


def _depends_on(job: Job) -> Optional[Job]:
    return None if job.stage == "ann" else Job("ann", job.coding, job.fold)


def run_recipe(
    config: Dict[str, Any], data: os.PathLike, out: os.PathLike, jobs: int = 2, device: str = "cpu",
    threads: int = 1, log=print, deadline: Optional[float] = None, only: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Run every job of ``config`` (skipping finished ones); returns {job folder: result}.

    ``deadline`` (seconds): start no new job after it; finished jobs are kept, so rerunning the
    same command later completes the rest. ``only``: shell patterns of job folders
    (``ternary/*``, ``*/fold_[0-3]/*``) to restrict the run to when compute is short; the ANN job a
    chosen job starts from is always included.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(config, indent=1))
    every = plan(config)
    todo = every
    if only:
        chosen = {j for j in todo if any(fnmatch.fnmatchcase(j.folder, pattern) for pattern in only)}
        if not chosen:
            raise HippoSNNError(f"--only {' '.join(only)} matches no job of this recipe")
        chosen |= {d for d in map(_depends_on, chosen) if d is not None}  # a fine-tuning needs its ANN
        todo = [j for j in todo if j in chosen]
    results: Dict[str, Any] = {}
    done = set()
    for job in todo:
        path = out / job.folder / "result.json"
        if path.exists():
            results[job.folder] = json.loads(path.read_text())
            done.add(job)
    pending = [j for j in todo if j not in done]
    failed: List[str] = []
    running: Dict[Future, Job] = {}
    ctx = get_context("spawn")
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        while pending or running:
            if deadline is not None and time.time() - t0 > deadline and pending:
                log(f"deadline reached: {len(pending)} job(s) not started (rerun to complete them)")
                pending.clear()
            for job in list(pending):
                dep = _depends_on(job)
                if dep is not None and dep not in done:
                    if dep.folder in failed:
                        pending.remove(job)
                        failed.append(job.folder)
                    continue
                if len(running) >= max(1, jobs):
                    break
                pending.remove(job)
                running[pool.submit(_run_job, config, str(data), str(out), job, device, threads)] = job
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                ok, payload = fut.result()
                if ok:
                    done.add(job)
                    results[job.folder] = payload
                    log(f"[{time.time() - t0:7.1f}s] done {job.folder}")
                else:
                    failed.append(job.folder)
                    log(f"[{time.time() - t0:7.1f}s] FAILED {job.folder}:\n{payload}")
    # every job of the recipe finished in this folder (each writes its result.json), by this run or an earlier one
    finished = [j.folder for j in every if (out / j.folder / "result.json").exists()]
    atomic_write_text(out / "jobs.json", json.dumps({"finished": sorted(finished), "failed": failed}, indent=1))
    if failed:
        raise HippoSNNError(f"{len(failed)} recipe job(s) failed: {', '.join(failed[:5])}")
    return results


def parent_watch(parent: int):
    """A progress callback that cancels the job once the recipe process that started it is gone.

    Killing the recipe process (not its process group) leaves its worker processes running; a rerun
    would then start a second writer on the same job folder. A worker whose parent died is
    re-parented, so its parent PID changes: the next progress report then stops the job.
    """

    def alive(fraction: float = 0.0, message: str = "") -> bool:
        return os.getppid() == parent

    return alive


def _run_job(config: Dict[str, Any], data: str, out: str, job: Job, device: str, threads: int) -> Tuple[bool, Any]:
    try:
        import torch

        torch.set_num_threads(threads)
        result = _execute(config, Path(data), Path(out), job, device, threads, parent_watch(os.getppid()))
        atomic_write_text(Path(out) / job.folder / "result.json", json.dumps(result, indent=1))
        return True, result
    except BaseException:  # report any failure to the parent, keep other jobs going
        return False, traceback.format_exc()


def _execute(
    config: Dict[str, Any], data: Path, out: Path, job: Job, device: str, threads: int, progress=None
) -> Dict[str, Any]:
    from .pipeline import convert_ann, evaluate_model, split_names, train_ann, train_snn
    from .training import TrainConfig
    from .weights import load_model

    seed = int(config.get("seed", 0))
    k = int(config["folds"])
    fold = None if job.fold == ALL else int(job.fold)
    folder = out / job.folder
    test = split_names(data, fold, k, seed)[2] if fold is not None else []
    spec = spec_from_config(config)
    quiet = lambda message: None  # noqa: E731
    t0 = time.time()
    result: Dict[str, Any] = {"job": job.folder, "stage": job.stage, "coding": job.coding, "fold": job.fold,
                              "test_cases": test}

    def score(model, t: Optional[int] = None) -> Dict[str, Any]:
        r = evaluate_model(model, data, test, timesteps=t or 1, coding=job.coding,
                           threshold=config["eval"].get("threshold", 0.5), seed=seed, device=device,
                           batch_size=240 if device != "cpu" else 24)
        r.pop("settings", None)
        return r

    if job.stage == "ann":
        a = config["ann"]

        def ann_config(settings: Dict[str, Any], quant_levels: Optional[int]) -> TrainConfig:
            return TrainConfig(stage="ann", epochs=settings["epochs"], batch_size=settings["batch_size"],
                               lr=settings["lr"], loss=settings["loss"], coding=job.coding, seed=seed,
                               augment=settings.get("augment", False),
                               site_augment=settings.get("site_augment", False),
                               site_thick_mm=settings.get("site_thick_mm", TrainConfig.site_thick_mm),
                               device=device, threads=threads,
                               plateau_patience=settings.get("plateau_patience", 3), quant_levels=quant_levels,
                               max_batches=settings.get("max_batches"), distill=settings.get("distill", 0.0),
                               clip_percentile=settings.get("clip_percentile", TrainConfig.clip_percentile),
                               clip_lr=settings.get("clip_lr"), ema=settings.get("ema", 0.0))

        init = None
        trained = (folder / "final.pt").exists()  # a finished ANN (e.g. linked from another run) is converted as is
        if a.get("warm_start"):  # a ReLU ANN first; the quantised-clip ANN starts from it
            relu = folder.parent / "ann_relu"
            if not (trained or (relu / "final.pt").exists()):
                resume = (relu / "last.pt").exists()
                # the ReLU ANN learns from the labels alone: "distill" is the quantised ANN's, from this one
                relu_settings = _merged(_merged(a, {"distill": 0.0}), a["warm_start"])
                train_ann(data, relu, ann_config(relu_settings, 0), spec, fold, k, resume=resume,
                          log=quiet, progress=progress, overwrite=not resume)
                result["relu_ann_seconds"] = round(time.time() - t0, 1)
            init = relu / "best.pt"
        if not trained:
            resume = (folder / "last.pt").exists()  # an unfinished job continues; one without last.pt starts over
            train_ann(data, folder, ann_config(a, a.get("quant_levels")), spec, fold, k, resume=resume, log=quiet,
                      progress=progress, overwrite=not resume, init=init)
            result["ann_seconds"] = round(time.time() - t0, 1)
        c = config["convert"]
        t1 = time.time()
        from_clip = bool(c.get("from_clip", False))  # low-latency path: thresholds = the learned clips
        snn = convert_ann(folder / "best.pt", data, folder, int(a["quant_levels"]) if from_clip else c["timesteps"],
                          c.get("scale", 1.0), c.get("percentile"), job.coding, c.get("slices", 0), fold, k, seed,
                          c.get("output_scaling", "mean"), device, log=quiet, progress=progress,
                          from_clip=from_clip, reset=c.get("reset", "subtract"),
                          input_encoding=c.get("input", "poisson"))
        result["convert_seconds"] = round(time.time() - t1, 1)
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()  # balancing at T=200 peaks at ~13 GB; give it back to sibling jobs
        result["thresholds"] = snn.threshold_dict()
        if test:
            result["ann"] = score(load_model(folder / "best.pt"))
            if init is not None:
                result["relu_ann"] = score(load_model(init))
            result["converted"] = {str(t): score(snn, t) for t in config["eval"]["timesteps"]}
    else:
        s = config[job.stage]
        cfg = TrainConfig(stage=job.stage, epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                          loss=s["loss"], timesteps=job.timesteps, coding=job.coding, seed=seed,
                          augment=s.get("augment", False),
                          site_augment=s.get("site_augment", False),
                          site_thick_mm=s.get("site_thick_mm", TrainConfig.site_thick_mm),
                          eval_every=s.get("eval_every"), device=device,
                          threads=threads, plateau_patience=s.get("plateau_patience", 2),
                          max_batches=s.get("max_batches"), rate_penalty=s.get("rate_penalty", 0.0),
                          frugal_memory=s.get("frugal_memory", False), distill=s.get("distill", 0.0))
        ann = out / job.coding / f"fold_{job.fold}" / "ann"
        init = ann / "converted.pt" if job.stage == "finetune" else None
        if (folder / "final.pt").exists() or (folder / "imported.json").exists():
            result["imported"] = (folder / "imported.json").exists()
        else:
            resume = (folder / "last.pt").exists()
            train_snn(data, folder, cfg, init, spec, fold, k, resume=resume, log=quiet, progress=progress,
                      overwrite=not resume, teacher=_finetune_teacher(ann, s) if cfg.distill > 0 else None)
            result["train_seconds"] = round(time.time() - t0, 1)
        result["log"] = json.loads((folder / "log.json").read_text())
        if test:
            model = load_model(folder / "best.pt")
            result["test"] = score(model, job.timesteps)
            if job.stage == "finetune":  # Dice by T is a fine-tuning figure; direct training is scored at its T
                result["test_by_T"] = {str(t): result["test"] if int(t) == job.timesteps else score(model, t)
                                       for t in config["eval"].get("finetune_timesteps", [])}
    result["seconds"] = round(time.time() - t0, 1)
    return result
