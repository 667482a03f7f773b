"""Benchmark hipposnn's spiking U-Net against the same network in SpikingJelly and snnTorch.

1. Equality: the same fixed input spikes [T, B, C, H, W] through ours and every peer (float32 and
   float64), comparing output logits and the spikes of every layer; in float64 also the BPTT
   gradients of ours against SpikingJelly with our triangle surrogate and a detached reset.
2. Inference (``--infer-steps``, default T = 200; ``torch.inference_mode``), ours swept over chunk
   sizes (default: 1, 2, 4, 8, 16, 25 where <= T, and T itself).
3. One BPTT training step (forward, BCE loss, backward) at ``--train-steps`` (default T = 32), every
   engine under each ``--allocator``: glibc's default malloc, and "frugal"
   (``hipposnn.memory.frugal_allocator``: large blocks mmapped and returned when freed, PyTorch's
   huge pages), which ``hipposnn finetune --frugal-memory`` uses. The same process-wide setting is
   given to every engine, so each one's lowest memory is on the table, not only ours. ``--flush-denormal``
   flushes denormal floats to zero in every engine's process, as hipposnn's SNN training does.

The model is a random one with balanced thresholds (default) or a model file (``--model``, e.g. the
shipped SNN) with its own thresholds, start potential (``initial_membrane``) and reset, which the
peers reproduce (``peers.py``). Dropout is off in every engine (the peers have none). The input
spikes are Poisson-coded random images, or with ``--data`` real MSD slices prepared for the model's
coding and context (``hipposnn.data.build_slices``; the first ``--batch`` of a seeded choice,
slices with hippocampus first), with their labels as the BPTT target. Every engine gets the same
input spikes.

Each engine x task runs in a fresh subprocess: peak memory is the highest resident set size sampled
every millisecond during the first full call, minus the resident set size just before it. Time is the best and
median of ``--repeats`` runs after a warm-up. The report gives every run, then the best configuration
(layout, or our chunk size) of each engine.

    python bench/bench_engine.py            # full (about 10 minutes on 2 cores)
    python bench/bench_engine.py --quick    # tiny smoke run, in-process, no memory numbers

The product's settings (issue: "ours must lead on the shipped model's inference on real slices and on
one BPTT step at the fine-tuning T"), on a quiet machine (``uptime`` first), from the repository root:

    # the shipped SNN (ternary, context 1, initial membrane 0, soft reset), fine-tuned at T = 32
    python bench/bench_engine.py --model HippoSNN/hipposnn/models/hipposnn_snn_ternary.pt \\
        --data ../shared/data/msd_hippocampus --infer-steps 32 --train-steps 32 --batch 24 --repeats 2 \\
        --json docs/results/bench_engine_snn_t32.json
    # the shipped low-latency SNN (--model snn-t8: clip-converted, initial membrane 0.5, soft reset), T = 8
    python bench/bench_engine.py --model HippoSNN/hipposnn/models/hipposnn_snn_t8_ternary.pt \\
        --data ../shared/data/msd_hippocampus --infer-steps 8 --train-steps 8 --batch 24 --repeats 3 \\
        --json docs/results/bench_engine_snn_t8.json
    # self-check (in-process, batch 2, one repeat, no memory numbers; 4 minutes niced beside a training
    # run on 2 cores, most of it the float64 equality of all ten peers); --eq-steps 8 because the
    # shipped model's output layer gets no spike within the 4 steps --quick would otherwise use
    python bench/bench_engine.py --quick --model HippoSNN/hipposnn/models/hipposnn_snn_ternary.pt \\
        --data ../shared/data/msd_hippocampus --infer-steps 8 --train-steps 8 --eq-steps 8
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HIPPOSNN_NATIVE", "wait")  # measure the fused kernels, compiled before timing

from hipposnn.conversion import balance_thresholds  # noqa: E402
from hipposnn.data import build_slices, list_cases, load_cases  # noqa: E402
from hipposnn.encoding import CODINGS, make_generator, poisson_spikes  # noqa: E402
from hipposnn.errors import HippoSNNError  # noqa: E402
from hipposnn.memory import frugal_allocator  # noqa: E402
from hipposnn.neurons import RESETS  # noqa: E402
from hipposnn.unet import SpikeStats, SpikingUNet, UNetSpec  # noqa: E402
from hipposnn.weights import model_from_payload, model_payload, read_payload  # noqa: E402
from peers import LAYOUT_SUFFIX, PEERS, build_peer, reset_peer, stack_record, weight_scales  # noqa: E402

H, W = 56, 48
#: Our inference chunk sizes at T = 200; at other T the default keeps those <= T and adds T itself.
CHUNKS = (1, 2, 4, 8, 16, 25)


# -- model and inputs -------------------------------------------------------------------------------
def make_model(seed: int, n_images: int, spec: Optional[UNetSpec] = None, initial_membrane: float = 0.0,
               reset: str = "subtract") -> SpikingUNet:
    """A random network with thresholds balanced on random images (the default benchmark model)."""
    torch.manual_seed(seed)
    spec = spec or UNetSpec(dropout=0.0)
    model = SpikingUNet(spec, initial_membrane=initial_membrane, reset=reset)
    images = torch.rand(n_images, spec.in_channels, H, W, generator=make_generator(seed + 1))
    balance_thresholds(model, images.numpy(), timesteps=32, scale=0.7, percentile=99.9, seed=seed)
    return model


def load_model_copy(model: SpikingUNet, **spec_changes) -> SpikingUNet:
    """An independent copy with the same exact thresholds and dynamics (``spec_changes``: e.g. dropout).

    Goes through the model-file payload rather than ``state_dict``, whose float32 threshold buffer
    would round the thresholds the peers are given.
    """
    payload = model_payload(model)
    payload["spec"] = {**payload["spec"], **spec_changes}
    copy = model_from_payload(payload, "snn")
    copy.gamma = model.gamma
    return copy


def without_dropout(model: SpikingUNet) -> SpikingUNet:
    """The same network with dropout 0: the peers have no dropout, so the training step must not either."""
    return load_model_copy(model, dropout=0.0)


def load_bench_model(path: str) -> Tuple[SpikingUNet, str]:
    """A model file (read safely, as ``hipposnn.weights.load_model`` does) without dropout, and its coding."""
    payload = read_payload(path)
    model = model_from_payload(payload, "snn", source=str(path))
    coding = str((payload.get("meta") or {}).get("coding", "binary"))
    return without_dropout(model), coding


def describe_model(model: SpikingUNet) -> dict:
    spec = model.spec
    return {"in_channels": spec.in_channels, "context": spec.context, "channels": list(spec.channels),
            "quant_levels": spec.quant_levels, "initial_membrane": model.initial_membrane,
            "reset": model.reset, "output_scaling": model.output_scaling, "gamma": model.gamma}


def save_state(model: SpikingUNet, path: str) -> None:
    """The model as the worker processes rebuild it: the model-file payload (weights, spec, exact
    thresholds, initial membrane, reset, output scaling) plus the surrogate's gamma."""
    payload = model_payload(model)
    payload["gamma"] = float(model.gamma)
    torch.save(payload, path)


def load_state(path: str) -> SpikingUNet:
    """The model a worker benchmarks (see :func:`save_state`); loads data only (``weights_only``)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = model_from_payload(payload, "snn")
    model.gamma = float(payload.get("gamma", model.gamma))
    return model


@dataclass
class InputSource:
    """What every engine is fed: Poisson-coded ``images`` (real slices) or, without them, random images.

    Saved to a file that each worker process loads, so that all engines draw the same spikes from
    the same seed.
    """

    channels: int = 1
    height: int = H
    width: int = W
    coding: str = "binary"
    #: what the first layer receives: Poisson spikes, or with "direct" (a direct-input model such as the
    #: whole-brain default) the normalised image itself at every step, the same tensor for every engine
    encoding: str = "poisson"
    images: Optional[Tensor] = None  # [N, C, H, W] normalised slices; None: random images
    labels: Optional[Tensor] = None  # [N, 1, H, W] their hippocampus masks (the BPTT target)
    names: List[str] = field(default_factory=list)  # "case/slice" of each real slice

    def make(self, steps: int, batch: int, seed: int, dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
        """Input [T, B, C, H, W] (spikes, or the repeated image for direct input) and target [B, 1, H, W]."""
        gen = make_generator(seed)
        if self.images is None:
            # random images drawn, coded and labelled from one generator, in this order
            images = torch.rand(batch, self.channels, self.height, self.width, generator=gen)
            if self.coding == "ternary":
                images = images * 2.0 - 1.0
            target = (torch.rand(batch, 1, self.height, self.width, generator=gen) > 0.5).to(dtype)
            return self._drive(images, steps, gen, dtype), target
        if batch > len(self.images):
            raise ValueError(f"batch {batch} needs more slices than the {len(self.images)} prepared")
        assert self.labels is not None
        return self._drive(self.images[:batch], steps, gen, dtype), self.labels[:batch].to(dtype)

    def _drive(self, images: Tensor, steps: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
        """What the first layer gets: Poisson spikes, or for direct input the image at every step, made
        contiguous so that every engine (ours included) convolves it at every step, as a peer's user would."""
        if self.encoding == "direct":
            return images.to(dtype).unsqueeze(0).repeat(steps, 1, 1, 1, 1)
        return poisson_spikes(images, steps, gen, self.coding).to(dtype)

    def describe(self) -> dict:
        kind = "random" if self.images is None else "real"
        return {"kind": kind, "coding": self.coding, "encoding": self.encoding, "channels": self.channels,
                "height": self.height, "width": self.width, "slices": list(self.names)}

    def save(self, path: str) -> None:
        torch.save({"channels": self.channels, "height": self.height, "width": self.width, "coding": self.coding,
                    "encoding": self.encoding, "images": self.images, "labels": self.labels,
                    "names": list(self.names)}, path)

    @classmethod
    def load(cls, path: str) -> InputSource:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def real_slices(data: str, count: int, seed: int, coding: str, context: int) -> InputSource:
    """``count`` real slices of an MSD-style folder, prepared as the model reads them.

    Cases are taken in a seeded order, at least ``max(2, ceil(count / 4))`` of them (a spread of
    subjects) and more until ``count`` slices with hippocampus are found; the chosen slices are a
    seeded permutation of those with hippocampus, then of the others if there are too few.
    """
    names = [name for name, _, _ in list_cases(data)]
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    want_cases = min(len(order), max(2, math.ceil(count / 4)))
    loaded: List[str] = []
    images, labels, ids = [], [], []
    n_fg = 0
    while order and (len(loaded) < want_cases or n_fg < count):
        take = max(1, want_cases - len(loaded))
        group, order = order[:take], order[take:]
        cases = load_cases(data, names=group)
        sl = build_slices(cases, coding, context)
        for i, case in enumerate(cases):
            rows = np.flatnonzero(sl.case_index == i)
            images.append(sl.images[rows])
            labels.append(sl.labels[rows])
            ids.extend(f"{case.name}/{k}" for k in range(len(rows)))
        loaded.extend(c.name for c in cases)
        n_fg = int(sum((lab.reshape(len(lab), -1).max(1) > 0).sum() for lab in labels))
    all_images, all_labels = np.concatenate(images), np.concatenate(labels)
    fg = all_labels.reshape(len(all_labels), -1).max(1) > 0
    pick = np.concatenate([rng.permutation(np.flatnonzero(fg)), rng.permutation(np.flatnonzero(~fg))])[:count]
    if len(pick) < count:
        raise HippoSNNError(f"{data} holds only {len(pick)} slices; need {count} (lower --batch)")
    chosen = torch.from_numpy(np.ascontiguousarray(all_images[pick]))
    return InputSource(channels=chosen.shape[1], height=chosen.shape[2], width=chosen.shape[3], coding=coding,
                       images=chosen, labels=torch.from_numpy(np.ascontiguousarray(all_labels[pick])),
                       names=[ids[i] for i in pick])


def make_inputs(steps: int, batch: int, seed: int, dtype: torch.dtype = torch.float32,
                source: Optional[InputSource] = None) -> Tuple[Tensor, Tensor]:
    """Input spikes and target from ``source`` (default: random binary images, 1 channel, 56 x 48)."""
    return (source or InputSource()).make(steps, batch, seed, dtype)


def default_chunks(steps: int, candidates: Sequence[int] = CHUNKS) -> List[int]:
    """Our inference chunk sizes at ``steps`` timesteps: the candidates <= T, and T itself.

    At low T the balance shifts (a chunk of all T steps is one convolution per layer over T x B
    images), so the sweep must reach T; sizes above T would all run as one chunk of T.
    """
    return sorted({c for c in candidates if 0 < c <= steps} | {steps})


# -- one engine, one task ---------------------------------------------------------------------------
def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the high-water mark elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return maxrss_mb()


class PeakSampler:
    """Samples the current RSS every millisecond in a thread: the peak of a call, not the process's."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


ALLOCATORS = {"default": ["default"], "frugal": ["frugal"], "both": ["default", "frugal"]}


def run_task(cfg: dict) -> dict:
    """Time (and measure the memory of) one engine on one task; ``cfg`` is a plain dict."""
    allocator = cfg.get("allocator", "default")
    if allocator == "frugal" and not frugal_allocator():
        raise HippoSNNError("the frugal allocator needs glibc (Linux)")
    torch.set_num_threads(cfg["threads"])
    # process-wide like the allocator, so given to every engine alike; hipposnn's SNN training sets it
    # (hipposnn.training._denormals_flushed): BPTT otherwise drags denormal gradients through every step
    torch.set_flush_denormal(bool(cfg.get("flush_denormal")))
    model = load_state(cfg["state"])
    engine, task, steps, chunk = cfg["engine"], cfg["task"], cfg["steps"], cfg.get("chunk")
    spikes, target = InputSource.load(cfg["inputs"]).make(steps, cfg["batch"], cfg["seed"])
    net = None if engine == "ours" else build_peer(model, engine)
    if task == "train":
        if engine == "ours":
            model.train()
            params = list(model.parameters())
        else:
            net.train()
            params = list(net.parameters())
        for p in params:
            p.requires_grad_(True)

        def once(x: torch.Tensor) -> None:
            for p in params:
                p.grad = None
            if engine == "ours":
                out = model.logits(model(x), x.shape[0])
            else:
                reset_peer(net, engine)
                out = model.logits(net(x), x.shape[0])
            F.binary_cross_entropy_with_logits(out, target).backward()

        warm = spikes
    else:
        model.eval()
        if net is not None:
            net.eval()

        def once(x: torch.Tensor) -> None:
            with torch.inference_mode():
                if engine == "ours":
                    state: dict = {}
                    total = None
                    for start in range(0, x.shape[0], chunk):
                        out = model(x[start : start + chunk], state=state)
                        total = out if total is None else total + out
                else:
                    reset_peer(net, engine)
                    net(x)

        # per-step engines warm up on a short prefix; multi-step ones need the full shapes
        warm = spikes if engine.startswith("sj-m") else spikes[: max(chunk or 1, 10)]
    gc.collect()
    base = rss_mb()
    with PeakSampler() as sampler:
        once(warm if task != "train" else spikes)  # the first full step allocates everything it needs
    peak = sampler.peak - base
    times = []
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter()
        once(spikes)
        times.append(time.perf_counter() - t0)
    return {
        "engine": engine,
        "task": task,
        "chunk": chunk,
        "allocator": allocator,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "times": times,
        "peak_mb": peak,
        "base_mb": base,
    }


def run_isolated(cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(cfg["threads"])},
    )
    if proc.returncode != 0:
        return {"engine": cfg["engine"], "task": cfg["task"], "chunk": cfg.get("chunk"),
                "allocator": cfg.get("allocator", "default"), "error": proc.stderr[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- equality ---------------------------------------------------------------------------------------
def equality(model: SpikingUNet, steps: int, batch: int, seed: int, dtype, peers: List[str],
             source: Optional[InputSource] = None) -> dict:
    """Same input spikes through ours and each peer; logits and per-layer spike agreement."""
    model = load_model_copy(model).to(dtype).eval()
    spikes, target = make_inputs(steps, batch, seed, dtype, source)
    stats = SpikeStats()
    rec: Dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        ours = model.logits(model(spikes, stats=stats, record=rec), steps)
    stats.samples, stats.timesteps = batch, steps
    ours_spk = {k: v.to(torch.bool) for k, v in rec.items()}
    del rec
    scale = float(ours.abs().max())
    result = {"dtype": str(dtype).replace("torch.", ""), "steps": steps, "batch": batch,
              "firing_rate": stats.mean_firing_rate(), "layer_rates": stats.firing_rates(),
              "logit_scale": scale, "peers": {}}
    grads_ours = None
    if dtype == torch.float64:
        grads_ours = _grads_ours(model, spikes, target)
    for name in peers:
        net = build_peer(model, name).eval()
        raw: Dict[str, list] = {}
        with torch.inference_mode():
            reset_peer(net, name)
            logits = model.logits(net(spikes, record=raw), steps)
        spk = stack_record(raw, multi_step=name.startswith("sj-m"))
        agree = {k: float((spk[k] == ours_spk[k]).float().mean()) for k in ours_spk}
        diff = (logits - ours).abs()
        row = {
            "mean_rel_diff": _relative(float(diff.mean()), float(ours.abs().mean())),
            "max_abs_diff": float(diff.max()),
            "rel_diff": _relative(float(diff.max()), scale),
            "min_layer_agreement": min(agree.values()),
            "worst_layer": min(agree, key=agree.get),
            "identical_spikes": all(v == 1.0 for v in agree.values()),
        }
        if grads_ours is not None and name.startswith("sj"):
            row.update(_grad_compare(model, net, name, spikes, target, grads_ours))
        result["peers"][name] = row
        print(f"  equality {result['dtype']} {name}: {row}", file=sys.stderr, flush=True)
        del net, spk, raw
        gc.collect()
    return result


def _relative(diff: float, scale: float) -> float:
    """``diff / scale``; 0 when both are 0 (at low T a deep network may not reach its output yet)."""
    if scale > 0:
        return diff / scale
    return 0.0 if diff == 0 else float("inf")


def _grads_ours(model: SpikingUNet, spikes, target) -> Dict[str, torch.Tensor]:
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    out = model.logits(model(spikes), spikes.shape[0])
    F.binary_cross_entropy_with_logits(out, target).backward()
    grads = {k: v.grad.detach().clone() for k, v in model.weights.items()}
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    model.eval()
    return grads


def _grad_compare(model, net, name, spikes, target, grads_ours) -> dict:
    """Peer gradients of the folded weights, mapped back to our raw weights, against ours."""
    net.train()
    reset_peer(net, name)
    out = model.logits(net(spikes), spikes.shape[0])
    F.binary_cross_entropy_with_logits(out, target).backward()
    scales = weight_scales(model)
    mine, theirs = [], []
    for key, mod in net.blocks.items():
        weight = next(p for n, p in mod.named_parameters() if n.endswith("weight"))
        theirs.append((weight.grad * scales[key]).flatten())
        mine.append(grads_ours[key].flatten())
    a, b = torch.cat(mine), torch.cat(theirs)
    # all-zero gradients (no spike reaches the output yet at a low T) agree exactly; cosine is undefined
    both = bool(a.norm() > 0 and b.norm() > 0)
    return {"grad_rel_l2": _relative(float((a - b).norm()), float(a.norm())),
            "grad_cosine": float(F.cosine_similarity(a, b, 0)) if both else float("nan")}


# -- report -----------------------------------------------------------------------------------------
def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def label(r: dict) -> str:
    """The engine with its allocator when not the default (``sj-s-cl +frugal``)."""
    return r["engine"] + (" +frugal" if r.get("allocator", "default") != "default" else "")


def report(results: List[dict], isolated: bool) -> str:
    """Every run; ratios against our fastest run (inference) or ours under the same allocator (training)."""
    lines = ["| task | engine | chunk | best s | median s | peak MB | ours faster by | ours / peer memory |",
             "|---|---|---|---|---|---|---|---|"]
    targets = []
    for task in ("infer", "train"):
        rows = [r for r in results if r["task"] == task and "error" not in r]
        mine = [r for r in rows if r["engine"] == "ours"]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["best_s"])
        same = {r.get("allocator", "default"): r for r in mine} if task == "train" else {}
        for r in rows:
            is_peer = r["engine"] != "ours"
            ref = same.get(r.get("allocator", "default"), best)
            speed = r["best_s"] / ref["best_s"] if is_peer else None
            mem = ref["peak_mb"] / r["peak_mb"] if is_peer and isolated and r["peak_mb"] > 0 else None
            mark = " (used)" if r is best or (task == "train" and not is_peer) else ""
            lines.append(
                f"| {task} | {label(r)}{mark} | {r['chunk'] or '-'} | {r['best_s']:.2f} | {r['median_s']:.2f} | "
                f"{r['peak_mb']:.0f} | {fmt_ratio(speed)} | {fmt_ratio(mem)} |"
            )
        peers = [r for r in rows if r["engine"] != "ours"]
        if not peers:
            continue
        # the best-configured peer: the fastest peer run in any layout and allocator
        fastest = min(peers, key=lambda r: r["best_s"])
        if task == "infer":
            speedup = fastest["best_s"] / best["best_s"]
            targets.append(f"inference: {speedup:.2f}x faster than the fastest peer ({label(fastest)}); "
                           f"target >= 1.5x: {'met' if speedup >= 1.5 else 'MISSED'}")
            continue
        kin = [r for r in peers if family(r["engine"]) == family(fastest["engine"])]
        pools = (("the fastest peer's lowest-memory configuration", kin), ("the lowest of any peer", peers),
                 ("the lowest peer without memopt", [r for r in peers if "ckpt" not in r["engine"]]))
        for ours in sorted(mine, key=lambda r: r["best_s"]):
            speedup = fastest["best_s"] / ours["best_s"]
            targets.append(f"training, {label(ours)}: {ours['best_s']:.2f} s vs the fastest peer {label(fastest)} "
                           f"{fastest['best_s']:.2f} s ({speedup:.2f}x): {'met' if speedup >= 1.0 else 'MISSED'}")
            if not isolated:
                continue
            for name, pool in pools:
                if not pool:
                    continue
                low = min(pool, key=lambda r: r["peak_mb"])
                ratio = ours["peak_mb"] / low["peak_mb"] if low["peak_mb"] > 0 else float("inf")
                targets.append(f"  memory {ours['peak_mb']:.0f} MB vs {name} ({label(low)}, {low['peak_mb']:.0f} "
                               f"MB): {ratio:.2f}x; target <= 0.5x: {'met' if ratio <= 0.5 else 'MISSED'}")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['task']} | {label(r)} | {r['chunk'] or '-'} | error | | | | |")
    return "\n".join(lines + [""] + targets)


def family(engine: str) -> str:
    """The engine without its layout: ``sj-m-cl`` and ``sj-m`` are two configurations of ``sj-m``."""
    return engine[: -len(LAYOUT_SUFFIX)] if engine.endswith(LAYOUT_SUFFIX) else engine


def _configuration(r: dict) -> str:
    if r["engine"] == "ours":
        parts = [f"chunk {r['chunk']}"] if r["chunk"] else []
    else:
        parts = ["channels-last" if r["engine"].endswith(LAYOUT_SUFFIX) else "default layout"]
    if r["task"] == "train":
        parts.append(f"{r.get('allocator', 'default')} allocator")
    return ", ".join(parts) or "-"


def best_configurations(results: List[dict], isolated: bool) -> str:
    """Per engine and task its fastest configuration (layout, our chunk size, allocator) and, for
    training, its lowest-memory one; each compared with ours in the same role."""
    lines = ["| task | engine | which | configuration | best s | peak MB | ours faster by | ours / peer memory |",
             "|---|---|---|---|---|---|---|---|"]
    for task in ("infer", "train"):
        rows = [r for r in results if r["task"] == task and "error" not in r]
        groups: Dict[str, List[dict]] = {}
        for r in rows:
            groups.setdefault(family(r["engine"]), []).append(r)
        roles = [("fastest", lambda row: row["best_s"])]
        if task == "train" and isolated:
            roles.append(("lowest memory", lambda row: row["peak_mb"]))
        for role, key in roles:
            ours = min(groups["ours"], key=key) if "ours" in groups else None
            for name, group in groups.items():
                r = min(group, key=key)
                speed = mem = None
                if ours is not None and name != "ours":
                    speed = r["best_s"] / ours["best_s"]
                    mem = ours["peak_mb"] / r["peak_mb"] if isolated and r["peak_mb"] > 0 else None
                lines.append(f"| {task} | {name} | {role} | {_configuration(r)} | {r['best_s']:.2f} | "
                             f"{r['peak_mb']:.0f} | {fmt_ratio(speed)} | {fmt_ratio(mem)} |")
    return "\n".join(lines)


def equality_report(eqs: List[dict]) -> str:
    lines = ["| dtype | peer | mean abs logit diff / mean abs logit | max abs logit diff | / max abs logit | "
             "min layer spike agreement | grad rel L2 | grad cosine |", "|---|---|---|---|---|---|---|---|"]
    for eq in eqs:
        for name, r in eq["peers"].items():
            g = (f"{r['grad_rel_l2']:.1e} | {r['grad_cosine']:.6f}" if "grad_rel_l2" in r else "- | -")
            lines.append(f"| {eq['dtype']} | {name} | {r['mean_rel_diff']:.2e} | {r['max_abs_diff']:.2e} | "
                         f"{r['rel_diff']:.2e} | "
                         f"{r['min_layer_agreement']:.6f} ({r['worst_layer']}) | {g} |")
    eq = eqs[0]
    rates = ", ".join(f"{k} {v:.3f}" for k, v in eq["layer_rates"].items())
    lines.append(f"\nT = {eq['steps']}, batch {eq['batch']}; mean firing rate {eq['firing_rate']:.4f} "
                 f"spikes/neuron/step; max |logit| {eq['logit_scale']:.3f}.\nPer layer: {rates}")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="in-process smoke run at small sizes (those left at their defaults), no memory numbers")
    ap.add_argument("--model", metavar="PATH",
                    help="SNN model file (e.g. the shipped HippoSNN/hipposnn/models/hipposnn_snn_ternary.pt); "
                         "default: a random model with balanced thresholds")
    ap.add_argument("--data", metavar="DIR",
                    help="MSD-style folder (imagesTr/, labelsTr/): input spikes from its real slices "
                         "(e.g. ../shared/data/msd_hippocampus); default: random images")
    ap.add_argument("--coding", choices=CODINGS, help="input spike coding (default: the model file's, else binary)")
    ap.add_argument("--initial-membrane", type=float,
                    help="random model only: start potential as a fraction of the threshold (default 0)")
    ap.add_argument("--reset", choices=RESETS, help="random model only: reset after a spike (default subtract)")
    ap.add_argument("--context", type=int,
                    help="random model only: neighbour slices on each side as input channels (default 0)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--infer-steps", type=int, default=200)
    ap.add_argument("--train-steps", type=int, default=32)
    ap.add_argument("--eq-steps", type=int, default=16)
    ap.add_argument("--eq-batch", type=int, default=4)
    ap.add_argument("--chunks", type=int, nargs="+",
                    help=f"our timesteps per call at inference (default: {', '.join(map(str, CHUNKS))} "
                         "where <= the inference T, and T itself)")
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    ap.add_argument("--allocator", choices=sorted(ALLOCATORS), default="both",
                    help="malloc setting of the training runs: default, frugal (hipposnn.memory) or both "
                         "(every engine under each; default)")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="flush denormal floats to zero in every engine's process (as hipposnn's SNN training does)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-equality", action="store_true", help="skip the equality check")
    ap.add_argument("--no-timing", action="store_true", help="equality check only")
    ap.add_argument("--json", help="also write all results to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_task(json.loads(args.worker))))
        return 0
    if args.quick:
        small = {"batch": 2, "infer_steps": 10, "train_steps": 4, "eq_steps": 4, "eq_batch": 2, "repeats": 1}
        for name, value in small.items():
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, value)
    if args.model and (args.initial_membrane is not None or args.reset is not None or args.context is not None):
        ap.error("--initial-membrane, --reset and --context describe the random model; a model file has its own")
    if args.context is not None and args.context < 0:
        ap.error("--context must be 0 or more")
    chunks = default_chunks(args.infer_steps) if args.chunks is None else sorted(
        {min(c, args.infer_steps) for c in args.chunks if c > 0})
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    try:
        if args.model:
            model, coding = load_bench_model(args.model)
        else:
            spec = UNetSpec(in_channels=1 + 2 * (args.context or 0), dropout=0.0)
            model = make_model(args.seed, args.batch, spec, initial_membrane=args.initial_membrane or 0.0,
                               reset=args.reset or "subtract")
            coding = "binary"
        coding = args.coding or coding
        if args.data:
            source = real_slices(args.data, max(args.batch, args.eq_batch), args.seed, coding, model.spec.context)
        else:
            source = InputSource(channels=model.spec.in_channels, coding=coding)
        # a direct-input model gets its image; the others Poisson spikes (a regular-input model's input is
        # spikes at the same rates)
        source.encoding = "direct" if model.input_encoding == "direct" else "poisson"
    except HippoSNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    about = {"model": {"path": args.model or "random, balanced thresholds", **describe_model(model)},
             "inputs": source.describe()}
    print(f"model: {json.dumps(about['model'])}")
    shown = {k: v for k, v in about["inputs"].items() if k != "slices"}
    print(f"inputs: {json.dumps(shown)}" + (f"; slices {', '.join(source.names)}" if source.names else ""))
    with tempfile.TemporaryDirectory() as tmp:
        state, inputs = os.path.join(tmp, "model.pt"), os.path.join(tmp, "inputs.pt")
        save_state(model, state)
        source.save(inputs)
        eqs = [] if args.no_equality else [
            equality(model, args.eq_steps, args.eq_batch, args.seed + 7, dt, args.peers, source)
            for dt in (torch.float32, torch.float64)]
        if eqs:
            print("\n## Equality\n\n" + equality_report(eqs), flush=True)
        if args.no_timing:
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump({"args": vars(args), **about, "equality": eqs, "results": []}, fh, indent=1)
            return 0
        jobs = [("infer", "ours", c, args.infer_steps) for c in chunks]
        jobs += [("infer", p, None, args.infer_steps) for p in args.peers if "ckpt" not in p]
        jobs = [(*job, "default") for job in jobs]
        # the frugal allocator is process-wide: only in a worker process of its own (not with --quick)
        allocators = ["default"] if args.quick else ALLOCATORS[args.allocator]
        jobs += [("train", e, None, args.train_steps, a) for a in allocators for e in ["ours", *args.peers]]
        results = []
        for task, engine, chunk, steps, allocator in jobs:
            cfg = {"state": state, "inputs": inputs, "engine": engine, "task": task, "chunk": chunk,
                   "steps": steps, "batch": args.batch, "seed": args.seed + 11, "repeats": args.repeats,
                   "threads": args.threads, "allocator": allocator, "flush_denormal": args.flush_denormal}
            r = run_task(cfg) if args.quick else run_isolated(cfg)
            results.append(r)
            shown = r.get("error") or (f"best {r['best_s']:.2f} s, median {r['median_s']:.2f} s, "
                                       f"peak {r['peak_mb']:.0f} MB")
            print(f"{task:5s} {label(cfg):22s} chunk={chunk}: {shown}", flush=True)
    torch.set_flush_denormal(False)  # --quick ran the tasks in this process
    print(f"\n## Time and memory (batch {args.batch}, inference T = {args.infer_steps}, "
          f"training T = {args.train_steps}, {args.threads} threads"
          + (", denormals flushed in every engine" if args.flush_denormal else "") + ")\n")
    print(report(results, isolated=not args.quick))
    print("\n## Best configuration of each engine\n")
    print(best_configurations(results, isolated=not args.quick))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), **about, "chunks": chunks, "equality": eqs, "results": results},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
