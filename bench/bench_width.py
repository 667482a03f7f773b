"""What a wider spiking U-Net would cost the network-time target (issue 14: <= 0.5 s per whole-brain scan).

The low-latency default's cross-validated Dice is capped by its ReLU ANN, and a wider network is the lever left
on that cap (docs/models.md, "Where the clips start"). Its price is time, and that can be measured without
training anything: the engine's convolutions are dense, so the time of a forward pass does not depend on the
weights or on how many neurons fire. This benchmark times the default's engine path (direct input, T = 8, the
inference batch and chunking of ``hipposnn.inference``) on the input of one whole-brain scan (two ROIs of
``AUTO_ROI_SHAPE``, three-slice context) for the shipped network and for wider ones with random weights, best of
``--repeats``, alternating, ``--threads`` threads. The shipped model file itself is timed too, to tie the
random-weight row of its width to the real network. ``--profile FILE`` also writes where one pass of the shipped
network spends its time (``torch.profiler``'s table of operators by self CPU time, with the load).

    python bench/bench_width.py --json docs/results/bench_width.json
    python bench/bench_width.py --widths 16,32,64,128 --repeats 1 --profile docs/results/network_profile.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import Any, Dict, List, Sequence, Tuple

os.environ.setdefault("HIPPOSNN_NATIVE", "wait")  # the fused kernels, compiled before any timing

import numpy as np
import torch
from bench_segment import finish_report
from hipposnn.inference import SNN_BATCH_DIRECT, SNN_CHUNK
from hipposnn.metrics import ann_macs
from hipposnn.options import AUTO_ROI_SHAPE
from hipposnn.simulate import predict_slices
from hipposnn.unet import SpikingUNet, describe
from hipposnn.weights import chosen_model_path, load_model

WIDTHS: Tuple[Tuple[int, ...], ...] = ((16, 32, 64, 128), (20, 40, 80, 160), (24, 48, 96, 192), (32, 64, 128, 256))
TIMESTEPS = 8


def scan_input(spec: Any, rois: int = 2, seed: int = 0) -> np.ndarray:
    """Slices of ``rois`` whole-brain ROIs as the network receives them: [rois x width, C, H, W] in [0, 1]."""
    slices, height, width = AUTO_ROI_SHAPE
    rng = np.random.default_rng(seed)
    return rng.random((rois * slices, spec.in_channels, height, width), dtype=np.float32)


def widened(shipped: SpikingUNet, channels: Sequence[int]) -> SpikingUNet:
    """A network like ``shipped`` (input, neurons, thresholds of 1) with ``channels`` and random weights."""
    torch.manual_seed(0)
    return SpikingUNet(replace(shipped.spec, channels=tuple(channels)), output_scaling=shipped.output_scaling,
                       initial_membrane=shipped.initial_membrane, reset=shipped.reset,
                       input_encoding=shipped.input_encoding)


def time_network(network: SpikingUNet, images: np.ndarray) -> float:
    """Seconds of one whole-scan forward pass, with the inference path's batch and chunking."""
    t0 = time.perf_counter()
    predict_slices(network, images, timesteps=TIMESTEPS, coding="binary", seed=0, batch_size=SNN_BATCH_DIRECT,
                   chunk=SNN_CHUNK)
    return time.perf_counter() - t0


def macs_per_slice(spec: Any) -> float:
    """The ANN's multiply-accumulates per slice of the ROI grid (the energy unit scales with them)."""
    return sum(ann_macs(describe(spec), spec, *AUTO_ROI_SHAPE[1:]).values())


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--widths", nargs="+", default=[",".join(map(str, w)) for w in WIDTHS],
                        help="channel tuples to time, e.g. 16,32,64,128")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--profile", help="write the shipped network's operator profile (one pass) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shipped = load_model(chosen_model_path("snn", roi="auto"))
    if not isinstance(shipped, SpikingUNet) or shipped.input_encoding != "direct":
        print("the whole-brain default is not a direct-input SNN; this benchmark times that path", file=sys.stderr)
        return 1
    images = scan_input(shipped.spec)
    networks: Dict[str, SpikingUNet] = {"shipped": shipped}
    for text in args.widths:
        networks[text] = widened(shipped, [int(c) for c in text.split(",")])
    for network in networks.values():  # warm-up: kernels, allocator, weight caches
        time_network(network, images[:SNN_BATCH_DIRECT])
    report: Dict[str, Any] = {"threads": args.threads, "timesteps": TIMESTEPS, "slices": int(images.shape[0]),
                              "batch": SNN_BATCH_DIRECT, "chunk": SNN_CHUNK, "torch": torch.__version__,
                              "load_average_before": os.getloadavg(), "networks": {}}
    seconds: Dict[str, List[float]] = {name: [] for name in networks}
    for _ in range(args.repeats):
        for name, network in networks.items():
            seconds[name].append(time_network(network, images))
    base_macs = macs_per_slice(shipped.spec)
    base_time = min(seconds["shipped"])
    print(f"threads {args.threads}; one whole-brain scan ({images.shape[0]} slices), T = {TIMESTEPS}; best of "
          f"{args.repeats}")
    for name, network in networks.items():
        macs = macs_per_slice(network.spec)
        entry = {"channels": list(network.spec.channels), "seconds_best": min(seconds[name]),
                 "seconds": seconds[name], "macs_per_slice": macs, "macs_vs_shipped": macs / base_macs,
                 "time_vs_shipped": min(seconds[name]) / base_time,
                 "parameters": int(sum(p.numel() for p in network.parameters()))}
        report["networks"][name] = entry
        print(f"  {name:18s} channels {entry['channels']}: {entry['seconds_best']:.3f} s "
              f"({entry['time_vs_shipped']:.2f}x), MACs {entry['macs_vs_shipped']:.2f}x, "
              f"{entry['parameters'] / 1e6:.2f} M parameters")
    finish_report(report, args.json)
    if args.profile:
        command = " ".join(["python bench/bench_width.py", *(sys.argv[1:] if argv is None else argv)])
        write_profile(shipped, images, args.profile, args.threads, command)
    return 0


def write_profile(network: SpikingUNet, images: np.ndarray, path: str, threads: int, command: str) -> None:
    """``torch.profiler``'s operator table (by self CPU time) of one pass over ``images``, load and command on top."""
    from torch.profiler import ProfilerActivity, profile

    before = os.getloadavg()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_network(network, images)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    header = (f"# {command}\n# {stamp}, threads {threads}, {images.shape[0]} slices, T = {TIMESTEPS}, "
              f"load before {before[0]:.2f}, after {os.getloadavg()[0]:.2f}\n")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + table + "\n")


if __name__ == "__main__":
    sys.exit(main())
