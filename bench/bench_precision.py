"""What bfloat16 convolutions would buy the default SNN on this CPU, and what they would change.

Every engine in ``bench_engine.py`` and every shipped result runs in float32. The spikes themselves are
exact in bfloat16 (0, +-1, and the quarters that 2x2 average pooling makes), but the weights and the
convolution's output are rounded to 8 significant bits, so a membrane near its threshold can fire one
step earlier or later: bfloat16 is not an exact path. On a CPU with AMX or AVX-512 BF16 units oneDNN runs
bfloat16 convolutions several times faster, which is why this is measured rather than assumed:

1. each convolution of the shipped default's network (real layer shapes, batch ``--batch`` of random
   spike maps at ``--rate``), float32 against bfloat16, channels-last, ``--threads`` threads;
2. whole-brain segmentation of the FreeSurfer cases with the default model, float32 against the same
   run with every spike-input convolution in bfloat16 (inputs and weights cast, the output cast back;
   the direct-input first layer stays float32): the network time (best of ``--repeats``, alternating) and
   the agreement of the label maps per side (Dice and volume); a third run rounds only the weights to
   bfloat16 and convolves in float32, to tell the weights' rounding from the output's.

    python bench/bench_precision.py --json docs/results/bench_precision.json

Not a product setting: nothing in hipposnn runs in bfloat16.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

os.environ.setdefault("HIPPOSNN_NATIVE", "wait")  # the fused kernels, compiled before any timing

import numpy as np
import torch
import torch.nn.functional as F
from bench_segment import ROOT, find_cases, finish_report  # the network-time benchmark's cases and report
from hipposnn import compact
from hipposnn.inference import LABELS, SegmentationSettings, segment_image
from hipposnn.io import load_image
from hipposnn.metrics import dice
from hipposnn.options import AUTO_ROI_SHAPE
from hipposnn.unet import INPUT, UNetSpec, describe
from hipposnn.weights import chosen_model_path, read_payload


def cpu_flags() -> List[str]:
    """The CPU's bfloat16-related feature flags (Linux), so a reader knows which units ran it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def layer_cases(spec: Any, height: int, width: int, batch: int, rate: float) -> List[Dict[str, Any]]:
    """One random spike input and weight per spike convolution of ``spec``'s network, at its real input size."""
    gen = torch.Generator().manual_seed(0)
    cases = []
    sizes = {INPUT: (height, width)}  # each layer's output size, walked as the network runs
    for layer in describe(spec):
        h, w = sizes[layer.inputs[0]]
        if layer.pool:
            h, w = h // 2, w // 2
        sizes[layer.name] = (2 * h, 2 * w) if layer.kind == "up" else (h, w)
        if layer.kind == "out" or layer.inputs == (INPUT,):
            continue  # the 1x1 output and the direct-input layer are not spike convolutions
        x = (torch.rand(batch, layer.in_channels, h, w, generator=gen) < rate).float()
        shape = (layer.in_channels, layer.out_channels, 2, 2) if layer.kind == "up" else (
            layer.out_channels, layer.in_channels, 3, 3)
        weight = torch.randn(*shape, generator=gen)
        cl = torch.channels_last
        cases.append({"name": layer.name, "up": layer.kind == "up", "x": x.contiguous(memory_format=cl),
                      "w": weight.contiguous(memory_format=cl)})
    return cases


def _conv(x: torch.Tensor, w: torch.Tensor, up: bool) -> torch.Tensor:
    return F.conv_transpose2d(x, w, stride=2) if up else F.conv2d(x, w, padding=1)


def time_layers(cases: List[Dict[str, Any]], dtype: torch.dtype, repeats: int) -> Dict[str, float]:
    """Best seconds per convolution of each layer in ``dtype`` (after three warm-up runs)."""
    out = {}
    with torch.inference_mode():
        for case in cases:
            x, w = case["x"].to(dtype), case["w"].to(dtype)
            for _ in range(3):
                _conv(x, w, case["up"])
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                _conv(x, w, case["up"])
                best = min(best, time.perf_counter() - t0)
            out[case["name"]] = best
    return out


@contextlib.contextmanager
def bf16_spike_convs(weights_only: bool = False) -> Iterator[None]:
    """Run every spike-input convolution of the SNN in bfloat16 (output back in float32) while active.

    ``weights_only``: round the weights to bfloat16 but convolve in float32, which separates what the
    weights' rounding changes from what the rounding of the convolution's output adds.
    """
    original = compact.plain_conv

    def bf16_conv(x: torch.Tensor, weight: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if weights_only:
            return original(x, weight.to(torch.bfloat16).float(), **kwargs)
        return original(x.to(torch.bfloat16), weight.to(torch.bfloat16), **kwargs).float()

    compact.plain_conv = bf16_conv  # compact_conv's no-gradient path, the spike layers' only one in inference
    try:
        yield
    finally:
        compact.plain_conv = original


#: The runs compared: float32 (the product), bfloat16 spike convolutions, and bfloat16-rounded weights alone.
PRECISIONS = {
    "float32": contextlib.nullcontext,
    "bfloat16": bf16_spike_convs,
    "bfloat16_weights": lambda: bf16_spike_convs(weights_only=True),  # rounded weights, float32 arithmetic
}
#: Label maps compared (reference, other): all that bfloat16 changes, the weights' rounding alone, and the rest (the
#: rounding of the convolution's output, the spikes being exact) on the same rounded weights.
COMPARISONS = (("float32", "bfloat16"), ("float32", "bfloat16_weights"), ("bfloat16_weights", "bfloat16"))


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wholebrain"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="slices per convolution (the default SNN's batch)")
    parser.add_argument("--rate", type=float, default=0.15, help="spike probability of the random layer inputs")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = find_cases(Path(args.data))
    if not cases:
        return 1
    report: Dict[str, Any] = {"threads": args.threads, "torch": torch.__version__, "cpu_bf16_flags": cpu_flags(),
                              "load_average_before": os.getloadavg()}
    spec = read_payload(chosen_model_path("snn"), verify=False)["spec"]
    layers = layer_cases(UNetSpec.from_dict(spec), *AUTO_ROI_SHAPE[1:], args.batch, args.rate)
    per_layer = {str(dtype).split(".")[1]: time_layers(layers, dtype, 20) for dtype in (torch.float32, torch.bfloat16)}
    total = {k: sum(v.values()) for k, v in per_layer.items()}
    report["convolutions"] = {"batch": args.batch, "rate": args.rate, "seconds_per_layer": per_layer,
                              "seconds_all_layers": total}
    print(f"threads {args.threads}; bf16 flags: {' '.join(report['cpu_bf16_flags']) or 'none'}")
    print(f"spike convolutions, all layers once (batch {args.batch}): float32 {total['float32'] * 1e3:.1f} ms, "
          f"bfloat16 {total['bfloat16'] * 1e3:.1f} ms ({total['float32'] / total['bfloat16']:.2f}x)")

    settings = SegmentationSettings(threads=args.threads, model="snn")
    segment_image(load_image(next(iter(cases.values()))), settings)  # warm-up: model, template, caches
    report["cases"] = {}
    for name, path in cases.items():
        image = load_image(path)
        times: Dict[str, List[float]] = {precision: [] for precision in PRECISIONS}
        labels: Dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for precision in PRECISIONS:
                with PRECISIONS[precision]():
                    result = segment_image(image, settings)
                times[precision].append(result.timings["inference"])
                labels[precision] = result.labels
        agreement = {f"{ref} vs {other}": {side: {"dice": dice(labels[ref] == value, labels[other] == value),
                                                 "voxels": [int((labels[ref] == value).sum()),
                                                            int((labels[other] == value).sum())]}
                                           for side, value in LABELS.items()}
                     for ref, other in COMPARISONS}
        report["cases"][name] = {"network_seconds_best": {k: min(v) for k, v in times.items()},
                                 "network_seconds": times, "agreement": agreement}
        print(f"  {name}: network best " + ", ".join(f"{k} {min(v):.3f} s" for k, v in times.items()))
        for pair, sides in agreement.items():
            cells = [f"{side} Dice {a['dice']:.4f} ({a['voxels'][0]} -> {a['voxels'][1]} voxels)"
                     for side, a in sides.items()]
            print(f"    {pair}: " + ", ".join(cells))
    finish_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
