"""Concatenation buffers against ``torch.cat``: the whole-brain default's network pass both ways, alternating.

Why in one process, alternating: on this 2-core machine the same network pass moves by 5-10 % from one run to the
next (docs/segmentation.md, "Timing"), more than the difference measured here, so two separate benchmark runs
cannot tell the two paths apart. Here the shipped default runs one whole-brain scan's input (two ROIs, the
inference path's batch and chunking, as ``bench/bench_width.py``) with its skip and up layers writing their spikes
into the concatenation buffers (``SpikingUNet._slots``, the product's path) and with the buffers switched off
(``torch.cat``), in alternating order, and the probabilities are checked to be identical.

    python bench/bench_concat.py --repeats 12 --json docs/results/bench_concat.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

os.environ.setdefault("HIPPOSNN_NATIVE", "wait")  # the fused kernels, compiled before any timing

import numpy as np
import torch
from bench_segment import finish_report
from bench_width import TIMESTEPS, scan_input
from hipposnn.inference import SNN_BATCH_DIRECT, SNN_CHUNK
from hipposnn.simulate import predict_slices
from hipposnn.unet import SpikingUNet
from hipposnn.weights import chosen_model_path, load_model


def run(network: SpikingUNet, images: np.ndarray, buffers: Dict[str, Any]) -> tuple:
    """Seconds and probabilities of one pass, with ``buffers`` as the network's concatenation plan."""
    network._slots = buffers
    t0 = time.perf_counter()
    probs = predict_slices(network, images, timesteps=TIMESTEPS, coding="binary", seed=0,
                           batch_size=SNN_BATCH_DIRECT, chunk=SNN_CHUNK)
    return time.perf_counter() - t0, probs


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    network = load_model(chosen_model_path("snn", roi="auto"))
    if not isinstance(network, SpikingUNet):
        print("the whole-brain default is not an SNN; nothing to compare", file=sys.stderr)
        return 1
    images = scan_input(network.spec)
    plans = {"buffers": dict(network._slots), "torch.cat": {}}
    answers = {name: run(network, images, plan)[1] for name, plan in plans.items()}  # warm-up and equality
    if not np.array_equal(answers["buffers"], answers["torch.cat"]):
        print("the two paths disagree", file=sys.stderr)
        return 1
    report: Dict[str, Any] = {"threads": args.threads, "timesteps": TIMESTEPS, "slices": int(images.shape[0]),
                              "batch": SNN_BATCH_DIRECT, "chunk": SNN_CHUNK, "identical": True,
                              "load_average_before": os.getloadavg(), "seconds": {name: [] for name in plans}}
    for i in range(args.repeats):
        for name in (list(plans) if i % 2 == 0 else list(plans)[::-1]):
            report["seconds"][name].append(run(network, images, plans[name])[0])
    network._slots = plans["buffers"]
    for name, seconds in report["seconds"].items():
        report[f"{name}_median"] = float(np.median(seconds))
        report[f"{name}_best"] = float(min(seconds))
        print(f"  {name:10s} median {report[f'{name}_median']:.3f} s, best {report[f'{name}_best']:.3f} s "
              f"({args.repeats} alternating repeats, {args.threads} threads)")
    finish_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
