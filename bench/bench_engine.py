"""Benchmark hipposnn's spiking U-Net against the same network in SpikingJelly and snnTorch.

1. Equality: the same fixed input spikes [T, B, 1, 56, 48] through ours and every peer (float32 and
   float64), comparing output logits and the spikes of every layer; in float64 also the BPTT
   gradients of ours against SpikingJelly with our triangle surrogate and a detached reset.
2. Inference at T = 200, batch 24 (``torch.inference_mode``), ours swept over chunk sizes.
3. One BPTT training step (forward, BCE loss, backward) at T = 32, batch 24.

Each engine x task runs in a fresh subprocess: peak memory is the highest resident set size sampled
every millisecond during the first full call, minus the resident set size just before it. Time is the best and
median of ``--repeats`` runs after a warm-up.

    python bench/bench_engine.py            # full (about 10 minutes on 2 cores)
    python bench/bench_engine.py --quick    # tiny smoke run, in-process, no memory numbers
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HIPPOSNN_NATIVE", "wait")  # measure the fused kernels, compiled before timing

from hipposnn.conversion import balance_thresholds  # noqa: E402
from hipposnn.encoding import make_generator, poisson_spikes  # noqa: E402
from hipposnn.unet import SpikeStats, SpikingUNet, UNetSpec  # noqa: E402
from peers import PEERS, build_peer, reset_peer, stack_record, weight_scales  # noqa: E402

H, W = 56, 48


# -- model and inputs -------------------------------------------------------------------------------
def make_model(seed: int, n_images: int) -> SpikingUNet:
    torch.manual_seed(seed)
    model = SpikingUNet(UNetSpec(dropout=0.0))
    images = torch.rand(n_images, 1, H, W, generator=make_generator(seed + 1))
    balance_thresholds(model, images.numpy(), timesteps=32, scale=0.7, percentile=99.9, seed=seed)
    return model


def load_model(path: str) -> SpikingUNet:
    blob = torch.load(path, weights_only=False)
    model = SpikingUNet(UNetSpec.from_dict(blob["spec"]))
    model.load_state_dict(blob["state"])
    return model


def make_inputs(steps: int, batch: int, seed: int, dtype=torch.float32):
    gen = make_generator(seed)
    images = torch.rand(batch, 1, H, W, generator=gen)
    spikes = poisson_spikes(images, steps, gen).to(dtype)
    target = (torch.rand(batch, 1, H, W, generator=gen) > 0.5).to(dtype)
    return spikes, target


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


def run_task(cfg: dict) -> dict:
    """Time (and measure the memory of) one engine on one task; ``cfg`` is a plain dict."""
    torch.set_num_threads(cfg["threads"])
    model = load_model(cfg["state"])
    engine, task, steps, chunk = cfg["engine"], cfg["task"], cfg["steps"], cfg.get("chunk")
    spikes, target = make_inputs(steps, cfg["batch"], cfg["seed"])
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
                out = net(x) / x.shape[0]
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
        return {"engine": cfg["engine"], "task": cfg["task"], "chunk": cfg.get("chunk"), "error": proc.stderr[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- equality ---------------------------------------------------------------------------------------
def equality(model: SpikingUNet, steps: int, batch: int, seed: int, dtype, peers: List[str]) -> dict:
    """Same input spikes through ours and each peer; logits and per-layer spike agreement."""
    model = load_model_copy(model).to(dtype).eval()
    spikes, target = make_inputs(steps, batch, seed, dtype)
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
            logits = net(spikes, record=raw) / steps
        spk = stack_record(raw, multi_step=name.startswith("sj-m"))
        agree = {k: float((spk[k] == ours_spk[k]).float().mean()) for k in ours_spk}
        row = {
            "mean_rel_diff": float((logits - ours).abs().mean() / ours.abs().mean()),
            "max_abs_diff": float((logits - ours).abs().max()),
            "rel_diff": float((logits - ours).abs().max()) / scale,
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


def load_model_copy(model: SpikingUNet) -> SpikingUNet:
    copy = SpikingUNet(model.spec)
    copy.load_state_dict(model.state_dict())
    return copy


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
    out = net(spikes) / spikes.shape[0]
    F.binary_cross_entropy_with_logits(out, target).backward()
    scales = weight_scales(model)
    mine, theirs = [], []
    for key, mod in net.blocks.items():
        weight = next(p for n, p in mod.named_parameters() if n.endswith("weight"))
        theirs.append((weight.grad * scales[key]).flatten())
        mine.append(grads_ours[key].flatten())
    a, b = torch.cat(mine), torch.cat(theirs)
    return {"grad_rel_l2": float((a - b).norm() / a.norm()), "grad_cosine": float(F.cosine_similarity(a, b, 0))}


# -- report -----------------------------------------------------------------------------------------
def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def report(results: List[dict], isolated: bool) -> str:
    lines = ["| task | engine | chunk | best s | median s | peak MB | ours faster by | ours / peer memory |",
             "|---|---|---|---|---|---|---|---|"]
    targets = []
    for task in ("infer", "train"):
        rows = [r for r in results if r["task"] == task and "error" not in r]
        mine = [r for r in rows if r["engine"] == "ours"]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["best_s"])
        for r in rows:
            is_peer = r["engine"] != "ours"
            speed = best["best_s"] / r["best_s"] if r["engine"] == "ours" else r["best_s"] / best["best_s"]
            mem = best["peak_mb"] / r["peak_mb"] if is_peer and isolated and r["peak_mb"] > 0 else None
            mark = " (used)" if r is best else ""
            lines.append(
                f"| {task} | {r['engine']}{mark} | {r['chunk'] or '-'} | {r['best_s']:.2f} | {r['median_s']:.2f} | "
                f"{r['peak_mb']:.0f} | {fmt_ratio(speed if is_peer else None)} | {fmt_ratio(mem)} |"
            )
        peers = [r for r in rows if r["engine"] != "ours"]
        if peers:
            fastest = min(peers, key=lambda r: r["best_s"])
            speedup = fastest["best_s"] / best["best_s"]
            if task == "infer":
                targets.append(f"inference: {speedup:.2f}x faster than the fastest peer ({fastest['engine']}); "
                               f"target >= 1.5x: {'met' if speedup >= 1.5 else 'MISSED'}")
            else:
                targets.append(f"training time: ours {best['best_s']:.2f} s vs fastest peer {fastest['engine']} "
                               f"{fastest['best_s']:.2f} s: {'met' if speedup >= 1.0 else 'MISSED'}")
                if isolated:
                    for label, pool in (("any peer", peers), ("peers without memopt", [
                            r for r in peers if "ckpt" not in r["engine"]])):
                        low = min(pool, key=lambda r: r["peak_mb"])
                        ratio = best["peak_mb"] / low["peak_mb"]
                        targets.append(f"training memory vs lowest {label} ({low['engine']}): {ratio:.2f}x; "
                                       f"target <= 0.5x: {'met' if ratio <= 0.5 else 'MISSED'}")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['engine']} | {r['chunk'] or '-'} | error | | | | |")
    return "\n".join(lines + [""] + targets)


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
    ap.add_argument("--quick", action="store_true", help="tiny in-process smoke run (< 30 s, no memory numbers)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--infer-steps", type=int, default=200)
    ap.add_argument("--train-steps", type=int, default=32)
    ap.add_argument("--eq-steps", type=int, default=16)
    ap.add_argument("--eq-batch", type=int, default=4)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 25])
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
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
        args.batch, args.infer_steps, args.train_steps, args.eq_steps, args.eq_batch = 2, 10, 4, 4, 2
        args.chunks, args.repeats = [1, 5], 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    model = make_model(args.seed, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "model.pt")
        torch.save({"spec": model.spec.to_dict(), "state": model.state_dict()}, state)
        eqs = [] if args.no_equality else [
            equality(model, args.eq_steps, args.eq_batch, args.seed + 7, dt, args.peers)
            for dt in (torch.float32, torch.float64)]
        if eqs:
            print("\n## Equality\n\n" + equality_report(eqs), flush=True)
        if args.no_timing:
            return 0
        jobs = [("infer", "ours", c, args.infer_steps) for c in args.chunks]
        jobs += [("infer", p, None, args.infer_steps) for p in args.peers if "ckpt" not in p]
        jobs += [("train", e, None, args.train_steps) for e in ["ours", *args.peers]]
        results = []
        for task, engine, chunk, steps in jobs:
            cfg = {"state": state, "engine": engine, "task": task, "chunk": chunk, "steps": steps,
                   "batch": args.batch, "seed": args.seed + 11, "repeats": args.repeats, "threads": args.threads}
            r = run_task(cfg) if args.quick else run_isolated(cfg)
            results.append(r)
            shown = r.get("error") or (f"best {r['best_s']:.2f} s, median {r['median_s']:.2f} s, "
                                       f"peak {r['peak_mb']:.0f} MB")
            print(f"{task:5s} {engine:14s} chunk={chunk}: {shown}", flush=True)
    print(f"\n## Time and memory (batch {args.batch}, inference T = {args.infer_steps}, "
          f"training T = {args.train_steps}, {args.threads} threads)\n")
    print(report(results, isolated=not args.quick))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "equality": eqs, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
