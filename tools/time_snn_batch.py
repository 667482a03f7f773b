"""Network time of the whole-brain default SNN on one scan's ROI slices at several batch sizes (chunk 1).

Why: a direct-input SNN draws no input spikes, so its batch size cannot change its result and may be set
for speed alone (``hipposnn.inference.SNN_BATCH_DIRECT``). Segments the scan once as ``hipposnn segment``
does, keeps the slices the network sees, then times :func:`predict_slices` at each batch size, alternating
the sizes, and checks that every batch size gives the same probabilities.

    python tools/time_snn_batch.py --image ../shared/data/wholebrain/bert/norm.mgz \
        --out docs/results/snn_batch_direct.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HippoSNN"))
sys.path.insert(0, str(ROOT / "tools"))

import hipposnn.inference as inference  # noqa: E402
from hipposnn.io import load_image  # noqa: E402
from hipposnn.simulate import predict_slices  # noqa: E402
from network_slices import network_slices  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, model, steps = network_slices(load_image(args.image), inference.SegmentationSettings(threads=args.threads))
    lines = [f"image {args.image}; model {model.path.name} (input {model.network.input_encoding}), T = {steps}, "
             f"{len(x)} slices, chunk 1, {args.threads} threads; load average before {os.getloadavg()}"]
    times, reference = {b: [] for b in args.batches}, None
    for _ in range(args.repeats):
        for batch in args.batches:
            t0 = time.perf_counter()
            probs = predict_slices(model.network, x, timesteps=steps, batch_size=batch, chunk=1)
            times[batch].append(time.perf_counter() - t0)
            reference = probs if reference is None else reference
            if not np.array_equal(probs, reference):
                lines.append(f"batch {batch}: probabilities differ by {np.abs(probs - reference).max():.3g}")
    for batch, ts in times.items():
        lines.append(f"batch {batch}: seconds sorted {[round(t, 3) for t in sorted(ts)]}")
    lines.append(f"load average after {os.getloadavg()}")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
