"""One training loop for the ANN, SNN fine-tuning and direct SNN training.

The three differ only in the model and in how a batch becomes logits: the ANN is called on the
images, an SNN on their Poisson spike trains (BPTT over T steps through the surrogate gradient).
Fine-tuning starts from a converted SNN, direct training from random weights with unit
thresholds, through exactly the same code.

Each epoch logs loss, validation Dice (3D and 2D), firing rates (SNN), learning rate, seconds and
the cumulative number of batches to ``log.csv`` and ``log.json``. ``last.pt`` (everything needed to
resume: model, optimiser, scheduler, RNG states, history) is written atomically after every epoch;
``best.pt`` keeps the model with the best validation 3D Dice. ``resume=True`` continues an
interrupted run from ``last.pt``.

Under ``torchrun`` (``WORLD_SIZE > 1``) the loop wraps the model in DistributedDataParallel
(gloo on CPU, nccl on CUDA), shards the batches by rank, and only rank 0 validates and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .averaging import WeightAverage
from .data import SliceSet, from_slices
from .encoding import make_generator
from .errors import Cancelled, HippoSNNError
from .losses import LOSSES, distill_loss
from .memory import frugal_allocator
from .metrics import dice, mean_sd, slice_dice
from .options import CLIP_PERCENTILE, SITE_THICK_MM
from .readout import smooth_readout
from .simulate import predict_slices
from .unet import SpikeStats, SpikingUNet, UNet
from .weights import atomic_torch_save, atomic_write_text, model_payload

Progress = Callable[[float, str], bool]

#: Settings a resumed run may change: how long and where it runs, not what it computes. Any other
#: difference from the run's own settings (learning rate, batch size, loss, coding, T, seed, ...) is
#: refused, so that ``settings.json`` and the checkpoints always describe the training that happened.
RESUME_MAY_CHANGE = ("epochs", "max_batches", "eval_every", "threads", "device", "frugal_memory")


@dataclass
class TrainConfig:
    """Settings of one training run (saved in the log and the checkpoint)."""

    stage: str = "ann"  # "ann", "finetune" or "direct"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    loss: str = "dice"
    timesteps: int = 32  # SNN stages only
    coding: str = "binary"
    seed: int = 0
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    augment: bool = False
    site_augment: bool = False  # per-epoch site augmentation of the raw crops (hipposnn.augment)
    site_thick_mm: float = SITE_THICK_MM  # site augmentation: thickest single-axis voxel (SiteAugmentation.thick_mm)
    max_batches: Optional[int] = None  # stop after this many batches (training budget)
    eval_every: Optional[int] = None  # extra validation every N batches (learning curves)
    eval_timesteps: Optional[int] = None  # T for SNN validation (default: timesteps)
    quant_levels: Optional[int] = None  # ANN: quantised-clip levels L (0: ReLU; None: the --init model's own)
    clip_percentile: float = CLIP_PERCENTILE  # ANN warm start: percentile of the ReLU activations the clips start at
    clip_lr: Optional[float] = None  # quantised ANN: each clip's own lr, a fraction of its start (None: the lr above)
    ema: float = 0.0  # decay of a moving average of the weights, validated and saved instead of them (0: off)
    rate_penalty: float = 0.0  # SNN: loss += rate_penalty * mean firing rate of the hidden layers
    distill: float = 0.0  # loss += distill * per-pixel KL from a teacher ANN (losses.distill_loss)
    frugal_memory: bool = False  # CPU: return freed activations to the system (hipposnn.memory)
    threads: Optional[int] = None
    device: str = "cpu"
    extra: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.stage not in ("ann", "finetune", "direct"):
            raise HippoSNNError(f"unknown stage {self.stage!r}")
        if self.loss not in LOSSES:
            raise HippoSNNError(f"--loss must be one of {', '.join(LOSSES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.timesteps < 1:
            raise HippoSNNError("epochs, batch size and timesteps must be positive")
        if not self.lr > 0:
            raise HippoSNNError("learning rate must be positive")
        if self.quant_levels is not None and self.quant_levels < 0:
            raise HippoSNNError("--quant-levels must be 0 (plain ReLU) or positive")
        if not (math.isfinite(self.rate_penalty) and self.rate_penalty >= 0):
            raise HippoSNNError("--rate-penalty must be a non-negative number")
        if not (math.isfinite(self.distill) and self.distill >= 0):
            raise HippoSNNError("--distill must be a non-negative number")
        if not (math.isfinite(self.clip_percentile) and 0 < self.clip_percentile <= 100):
            raise HippoSNNError("--clip-percentile must be in (0, 100]")
        if self.clip_lr is not None and not (math.isfinite(self.clip_lr) and self.clip_lr > 0):
            raise HippoSNNError("--clip-lr must be a positive number")
        if not (math.isfinite(self.ema) and 0.0 <= self.ema < 1.0):
            raise HippoSNNError("--ema must be a decay in [0, 1) (0: off)")
        if not (math.isfinite(self.site_thick_mm) and 1.5 <= self.site_thick_mm <= 8.0):
            raise HippoSNNError("--site-thick-mm must be between 1.5 and 8 (mm)")


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> List[Dict[str, Any]]:
    """Adam's parameter groups: the network at ``cfg.lr`` and, with ``cfg.clip_lr``, each clip in its own group.

    Why: a clip is in activation units (1.5-184 in the shipped path) and Adam moves a parameter by about its
    learning rate per step whatever its scale, so at the network's lr the clips stay where they start (at most
    4.8 % in 864 steps, docs/models.md). ``clip_lr`` gives each clip the lr ``clip_lr`` x its value when the
    optimiser is built (its calibrated start), i.e. the same relative step in every layer. The plateau
    scheduler scales every group alike; a resumed run takes the groups' lrs from its checkpoint.
    """
    clips = getattr(model, "clips", None)
    if cfg.clip_lr is None or not clips:
        return [{"params": list(model.parameters())}]
    clip_ids = {id(p) for p in clips.values()}
    groups: List[Dict[str, Any]] = [{"params": [p for p in model.parameters() if id(p) not in clip_ids]}]
    for clip in clips.values():
        groups.append({"params": [clip], "lr": cfg.clip_lr * max(abs(float(clip.detach())), 1e-3)})
    return groups


def _distributed() -> bool:
    return dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextlib.contextmanager
def _denormals_flushed(enabled: bool) -> Iterator[None]:
    """Flush denormals to zero while training an SNN on the CPU (BPTT), and only then.

    Extreme logits make the sigmoid's gradient denormal, and BPTT carries such values through every step:
    the hard-reset path (no fused kernels) took 32 s vs 6 s per batch of 32 at T = 8 on one thread, same
    losses, and the whole-brain default (binary, direct input) 2.10 vs 0.52 s per BPTT step of 24 slices at
    T = 8 on two threads (bench/bench_engine.py without and with --flush-denormal, docs/benchmarks.md).
    Values below ~1e-38 become 0, nothing else changes. The flag is process-wide, so it is set back
    afterwards (to torch's default: torch has no getter to restore another state), and ANN training and
    inference run as they did.
    """
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def augment_batch(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple:
    """Small in-plane affine (rotation +-10 deg, scale +-10 %, shift +-3 px) and contrast changes."""
    b = x.shape[0]
    rnd = torch.rand(b, 5, generator=generator)
    angle = (rnd[:, 0] - 0.5) * (2 * math.pi * 10 / 180)
    scale = 1.0 + (rnd[:, 1] - 0.5) * 0.2
    h, w = x.shape[-2:]
    tx = (rnd[:, 2] - 0.5) * 6 * 2 / w
    ty = (rnd[:, 3] - 0.5) * 6 * 2 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = (F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).to(y.dtype)
    contrast = (0.85 + 0.3 * rnd[:, 4]).view(b, 1, 1, 1)
    lo = -1.0 if float(x.min()) < 0 else 0.0
    return (x * contrast).clamp(lo, 1.0), y


def model_logits(
    model: Any, x: Tensor, cfg: TrainConfig, generator: torch.Generator, rates: Optional[list] = None
) -> Tensor:
    """Logits of a batch: direct for the ANN, through T Poisson steps for an SNN.

    ``rates`` (SNN): receives each hidden layer's spike sum and neuron-step count, with gradients.
    """
    core = model.module if hasattr(model, "module") else model
    if isinstance(core, SpikingUNet):
        spikes = core.encode(x, cfg.timesteps, generator, cfg.coding)
        out = model(spikes, rates=rates) if rates is not None else model(spikes)
        return core.logits(out, cfg.timesteps)
    return model(x)


def mean_rate(rates: List[Tuple[Tensor, int]]) -> Tensor:
    """Spikes per neuron per step over all hidden layers (as SpikeStats counts it), differentiable."""
    spikes = torch.stack([r[0] for r in rates]).sum()
    count = float(sum(float(r[1]) for r in rates))
    return spikes / max(count, 1.0)


def evaluate_slices(
    model: Union[UNet, SpikingUNet],
    slices: SliceSet,
    *,
    timesteps: int = 32,
    coding: str = "binary",
    threshold: float = 0.5,
    seed: int = 0,
    batch_size: int = 24,
    device: str = "cpu",
    progress: Optional[Progress] = None,
    smooth: float = 0.0,
) -> Dict[str, Any]:
    """3D Dice per case and 2D Dice per slice of ``model`` on ``slices`` (plus SNN spike stats).

    ``smooth`` > 0 runs each case's probability volume through the segmentation pipeline's readout step
    (:func:`hipposnn.readout.smooth_readout`) before thresholding; 0 scores the raw map (training, the recipe).
    """
    stats = SpikeStats() if isinstance(model, SpikingUNet) else None
    probs = predict_slices(
        model, slices.images, timesteps=timesteps, coding=coding, seed=seed, batch_size=batch_size,
        device=device, stats=stats, progress=progress,
    )
    cases = []
    all_2d: List[float] = []
    for i, name in enumerate(slices.names):
        sel = slices.case_index == i
        if smooth > 0:
            p = smooth_readout(from_slices(probs[sel]), smooth, threshold) > threshold
        else:
            p = from_slices(probs[sel] >= threshold)
        t = from_slices(slices.labels[sel] > 0.5)
        d2 = slice_dice(p, t)
        all_2d.extend(d2)
        cases.append({"name": name, "dice_3d": dice(p, t), "dice_2d_mean": float(np.mean(d2)) if d2 else 1.0})
    d3 = mean_sd([c["dice_3d"] for c in cases])
    d2s = mean_sd(all_2d)
    result: Dict[str, Any] = {
        "mean_dice_3d": d3["mean"],
        "sd_dice_3d": d3["sd"],
        "mean_dice_2d": d2s["mean"],
        "sd_dice_2d": d2s["sd"],
        "n_slices_2d": d2s["n"],
        "cases": cases,
    }
    if stats is not None:
        result["firing_rates"] = stats.firing_rates()
        result["mean_firing_rate"] = stats.mean_firing_rate()
        result["synops_per_slice"] = sum(stats.synops_per_sample().values())
        result["macs_per_slice"] = sum(stats.macs_per_sample().values())
    return result


class Trainer:
    """Runs :class:`TrainConfig` on a model and writes logs and checkpoints into ``out_dir``."""

    def __init__(
        self,
        model: Union[UNet, SpikingUNet],
        cfg: TrainConfig,
        train: SliceSet,
        val: Optional[SliceSet],
        out_dir: Union[str, Path],
        meta: Optional[Dict[str, Any]] = None,
        progress: Optional[Progress] = None,
        log: Callable[[str], None] = print,
        train_for_epoch: Optional[Callable[[int], SliceSet]] = None,
        teacher: Optional[UNet] = None,
    ) -> None:
        cfg.validate()
        if cfg.distill > 0 and teacher is None:
            raise HippoSNNError("--distill needs a teacher ANN (--teacher)")
        self.cfg = cfg
        self.model = model
        self._spiking = isinstance(model, SpikingUNet)
        self.train_set = train
        # With site augmentation the training slices are rebuilt from freshly augmented crops each epoch.
        self.train_for_epoch = train_for_epoch
        self.val_set = val
        self.out_dir = Path(out_dir)
        self.meta = meta or {}
        self.progress = progress
        self.log = log
        self.history: List[Dict[str, Any]] = []
        self.curve: List[Dict[str, Any]] = []
        self.epoch = 0
        self.batches = 0
        self.best = -1.0
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        if cfg.frugal_memory and self.device.type == "cpu" and not frugal_allocator():
            log("--frugal-memory: not available on this platform (needs glibc); running with the default allocator")
        model.to(self.device)
        # The teacher only answers (eval mode, no gradients); it is neither saved nor optimised.
        self.teacher = teacher.to(self.device).eval() if teacher is not None and cfg.distill > 0 else None
        self.optimizer = torch.optim.Adam(param_groups(model, cfg), lr=cfg.lr)
        # with cfg.ema the average of the weights is validated and saved (best.pt, final.pt); last.pt keeps both
        self.average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> Dict[str, Any]:
        return {
            "model": model_payload(self.model, self.meta),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batches": self.batches,
            "best": self.best,
            **({"average": self.average.state_dict()} if self.average is not None else {}),
            "history": json.dumps(self.history),
            "curve": json.dumps(self.curve),
            "config": json.dumps(asdict(self.cfg)),
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": json.dumps(_numpy_state()),
            "rng_python": json.dumps(random.getstate()),
        }

    def _load_last(self) -> Optional[Dict[str, Any]]:
        path = self.out_dir / "last.pt"
        if not path.exists():
            return None
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HippoSNNError(f"cannot resume from {path}: {reason[:200]}") from None
        self._check_compatible(state)
        return state

    def check_resume(self) -> bool:
        """Whether ``last.pt`` exists; raises if resuming it would change a setting (see RESUME_MAY_CHANGE)."""
        return self._load_last() is not None

    def _check_compatible(self, state: Dict[str, Any]) -> None:
        """Refuse, in one line, to resume a run with other settings or another architecture than its own."""
        try:
            saved = json.loads(state["config"])
            model = state["model"]
        except (KeyError, TypeError, ValueError):
            raise HippoSNNError(f"cannot resume from {self.out_dir / 'last.pt'}: not a training checkpoint") from None
        now = json.loads(json.dumps(asdict(self.cfg)))
        was, new = [], []
        for key, value in now.items():
            if key in RESUME_MAY_CHANGE or key not in saved or saved[key] == value:
                continue
            flag = "stage" if key == "stage" else "--" + key.replace("_", "-")
            was.append(f"{flag} {saved[key]}")
            new.append(f"{flag} {value}")
        saved_spec, spec = model.get("spec") or {}, self.model.spec.to_dict()
        for key, value in spec.items():
            if key in saved_spec and json.dumps(saved_spec[key]) != json.dumps(value):
                flag = "--" + key.replace("_", "-")
                was.append(f"{flag} {_show(saved_spec[key])}")
                new.append(f"{flag} {_show(value)}")
        saved_meta = model.get("meta") or {}
        if "fold" in saved_meta and "fold" in self.meta and saved_meta["fold"] != self.meta["fold"]:
            was.append(f"--fold {saved_meta['fold']}")
            new.append(f"--fold {self.meta['fold']}")
        if was:
            raise HippoSNNError(
                f"cannot resume {self.out_dir} with other settings: it was started with {', '.join(was)}, "
                f"not {', '.join(new)}; use its settings, or --overwrite to start over"
            )

    def resume(self) -> bool:
        """Load ``last.pt`` if present; returns whether a run was resumed.

        Only the settings in :data:`RESUME_MAY_CHANGE` may differ from those the run was started with.
        """
        path = self.out_dir / "last.pt"
        state = self._load_last()
        if state is None:
            return False
        self.model.weights.load_state_dict(state["model"]["weights"])
        if isinstance(self.model, UNet) and state["model"].get("clips"):
            self.model.set_clips({k: float(v) for k, v in state["model"]["clips"].items()})
        if isinstance(self.model, SpikingUNet):
            for name, value in state["model"].get("thresholds", {}).items():
                self.model.set_threshold(name, float(value))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None and "average" in state:
            self.average.load_state_dict(state["average"])
        elif self.average is not None:  # a run started before --ema existed: the average starts here
            self.average = WeightAverage(self.model, self.cfg.ema)
            self.log(f"--ema: {path} holds no weight average; it starts from the resumed weights")
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.batches = int(state["batches"])
        self.best = float(state["best"])
        self.history = json.loads(state["history"])
        self.curve = json.loads(state["curve"])
        torch.set_rng_state(state["rng_torch"])
        _set_numpy_state(json.loads(state["rng_numpy"]))
        random.setstate(_tuplify(json.loads(state["rng_python"])))
        self.log(f"resumed from {path} after epoch {self.epoch} ({self.batches} batches)")
        return True

    def _write_logs(self) -> None:
        logs = {"epochs": self.history, "curve": self.curve}
        atomic_write_text(self.out_dir / "log.json", json.dumps(logs, indent=1))
        if self.history:
            keys = [k for k in self.history[0] if not isinstance(self.history[0][k], dict)]
            rate_keys = sorted(self.history[-1].get("firing_rates", {}) or {})
            lines = [",".join(keys + [f"rate_{k}" for k in rate_keys])]
            for row in self.history:
                rates = row.get("firing_rates") or {}
                lines.append(",".join([_fmt(row[k]) for k in keys] + [_fmt(rates.get(k, "")) for k in rate_keys]))
            atomic_write_text(self.out_dir / "log.csv", "\n".join(lines) + "\n")

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> Dict[str, Any]:
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        cfg = self.cfg
        with self.product():
            result = evaluate_slices(
                self.model, self.val_set, timesteps=cfg.eval_timesteps or cfg.timesteps, coding=cfg.coding,
                seed=cfg.seed + 12345, device=cfg.device, batch_size=max(24, cfg.batch_size),
            )
        self.model.train()
        return result

    @contextlib.contextmanager
    def product(self) -> Iterator[Union[UNet, SpikingUNet]]:
        """The model as validated and saved: with ``cfg.ema`` its weight average, else the model itself."""
        if self.average is None:
            yield self.model
        else:
            with self.average.applied(self.model) as model:
                yield model

    # -- training -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> List[Dict[str, Any]]:
        """Train until the epoch or batch budget is spent; returns the per-epoch log."""
        with _denormals_flushed(isinstance(self.model, SpikingUNet) and self.device.type == "cpu"):
            return self._fit(resume)

    def _fit(self, resume: bool) -> List[Dict[str, Any]]:
        cfg = self.cfg
        if _distributed() and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        rank, world = _rank(), _world()
        if rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        else:
            torch.manual_seed(cfg.seed)
        net: Any = self.model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(self.model)
        loss_fn = LOSSES[cfg.loss]
        n = len(self.train_set)
        images = torch.from_numpy(self.train_set.images)
        labels = torch.from_numpy(self.train_set.labels)
        total_epochs_batches = cfg.epochs * math.ceil(n / (cfg.batch_size * world))
        while self.epoch < cfg.epochs:
            if cfg.max_batches is not None and self.batches >= cfg.max_batches:
                break
            t0 = time.time()
            if self.train_for_epoch is not None:
                self.train_set = self.train_for_epoch(self.epoch)
                images = torch.from_numpy(self.train_set.images)
                labels = torch.from_numpy(self.train_set.labels)
            self.model.train()
            # same permutation on every rank; each takes its own stride of it
            perm = torch.randperm(n, generator=make_generator(cfg.seed * 1000 + self.epoch))
            aug_gen = make_generator(cfg.seed * 7919 + self.epoch * 31 + rank)
            spike_gen = make_generator(cfg.seed * 104729 + self.epoch * 17 + rank, self.device)
            losses: List[float] = []
            step = cfg.batch_size * world
            for start in range(0, n - step + 1 if n >= step else 1, step):
                idx = perm[start + rank * cfg.batch_size : start + (rank + 1) * cfg.batch_size]
                x, y = images[idx], labels[idx]
                if cfg.augment:
                    x, y = augment_batch(x, y, aug_gen)
                x, y = x.to(self.device), y.to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                rates: Optional[list] = [] if cfg.rate_penalty > 0 and self._spiking else None
                logits = model_logits(net, x, cfg, spike_gen, rates)
                loss = loss_fn(logits, y)
                if rates:
                    loss = loss + cfg.rate_penalty * mean_rate(rates)
                if self.teacher is not None:
                    with torch.no_grad():
                        answer = self.teacher(x)
                    loss = loss + cfg.distill * distill_loss(logits, answer)
                loss.backward()
                self.optimizer.step()
                if self.average is not None:
                    self.average.update(self.model)
                losses.append(float(loss.detach()))
                self.batches += 1
                if self.progress is not None and rank == 0:
                    frac = min(1.0, self.batches / max(total_epochs_batches, 1))
                    if self.progress(frac, f"epoch {self.epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f}") is False:
                        raise Cancelled("training cancelled")
                if cfg.eval_every and self.batches % cfg.eval_every == 0 and rank == 0:
                    v = self.validate()
                    self.curve.append({"batches": self.batches, "val_dice_3d": v.get("mean_dice_3d"),
                                       "val_dice_2d": v.get("mean_dice_2d")})
                if cfg.max_batches is not None and self.batches >= cfg.max_batches:
                    break
            self.epoch += 1
            row: Dict[str, Any] = {
                "epoch": self.epoch,
                "batches": self.batches,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            if rank == 0:
                v = self.validate()
                row["val_dice_3d"] = v.get("mean_dice_3d", float("nan"))
                row["val_dice_2d"] = v.get("mean_dice_2d", float("nan"))
                if "firing_rates" in v:
                    row["mean_firing_rate"] = v["mean_firing_rate"]
                    row["firing_rates"] = v["firing_rates"]
            score = _broadcast_float(row.get("val_dice_3d", float("nan")))
            if not math.isnan(score):
                self.scheduler.step(score)
            row["seconds"] = round(time.time() - t0, 2)
            self.history.append(row)
            if rank == 0:
                if not math.isnan(score) and score > self.best:
                    self.best = score
                    with self.product() as model:
                        atomic_torch_save(model_payload(model, {**self.meta, "epoch": self.epoch}),
                                          self.out_dir / "best.pt")
                atomic_torch_save(self._state(), self.out_dir / "last.pt")
                self._write_logs()
                self.log(
                    f"epoch {self.epoch}: loss {row['loss']:.4f} val dice 3D {row.get('val_dice_3d', float('nan')):.4f}"
                    f" 2D {row.get('val_dice_2d', float('nan')):.4f} lr {row['lr']:.2e} {row['seconds']:.1f}s"
                )
        if rank == 0:
            with self.product() as model:
                atomic_torch_save(model_payload(model, {**self.meta, "epoch": self.epoch}), self.out_dir / "final.pt")
                if not (self.out_dir / "best.pt").exists():
                    atomic_torch_save(model_payload(model, self.meta), self.out_dir / "best.pt")
        if world > 1:
            dist.barrier()
        return self.history


def _broadcast_float(value: float) -> float:
    if _world() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, 0)
    return float(t[0])


def _show(value: Any) -> str:
    """A setting as the user types it: ``4,8,8,8`` for a list of channels."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_numpy_state(state: list) -> None:
    np.random.set_state((state[0], np.array(state[1], dtype=np.uint32), state[2], state[3], state[4]))


def _tuplify(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_tuplify(o) for o in obj)
    return obj
