"""bench/bench_precision.py: its bfloat16 run changes only the spike convolutions, and only while active.

The bench compares the product (float32) with bfloat16 spike convolutions on whole-brain scans; these tests pin
what that comparison measures: the layer cases are the network's own spike convolutions at their real sizes, the
bfloat16 context changes a spiking forward pass and leaves nothing behind, and the weights-only variant rounds
the weights without touching the input.
"""

from __future__ import annotations

import torch
from hipposnn import compact
from hipposnn.unet import SpikingUNet, UNetSpec, describe

from .helpers import load_tool

SMALL = UNetSpec(in_channels=3, channels=(4, 8), dropout=0.0)


def test_layer_cases_are_every_spike_convolution_at_its_size():
    bp = load_tool("bench_precision", "bench")
    spec = UNetSpec(in_channels=3)
    cases = bp.layer_cases(spec, 56, 48, batch=2, rate=0.2)
    spiking = [layer for layer in describe(spec) if layer.kind != "out" and layer.inputs != ("input",)]
    assert [c["name"] for c in cases] == [layer.name for layer in spiking]
    for case, layer in zip(cases, spiking):
        assert case["x"].shape[1] == layer.in_channels
        assert set(case["x"].unique().tolist()) <= {0.0, 1.0}
        out = bp._conv(case["x"], case["w"], case["up"])
        assert out.shape[1] == layer.out_channels
    sizes = {c["name"]: tuple(c["x"].shape[-2:]) for c in cases}
    assert sizes["enc1_0"] == (28, 24) and sizes["up0"] == (28, 24) and sizes["dec0_0"] == (56, 48)
    times = bp.time_layers(cases[:2], torch.float32, repeats=1)
    assert set(times) == {cases[0]["name"], cases[1]["name"]} and all(t > 0 for t in times.values())


def test_bf16_context_changes_the_spiking_pass_and_restores_float32():
    bp = load_tool("bench_precision", "bench")
    torch.manual_seed(0)
    net = SpikingUNet(SMALL, input_encoding="direct").eval()
    x = torch.rand(1, 2, 3, 16, 16).expand(4, 2, 3, 16, 16) * 3
    original = compact.plain_conv
    with torch.no_grad():
        before = net(x)
        with bp.bf16_spike_convs():
            assert compact.plain_conv is not original
            rounded = net(x)
        with bp.bf16_spike_convs(weights_only=True):
            weights_only = net(x)
        after = net(x)
    assert compact.plain_conv is original
    assert torch.equal(before, after)
    assert not torch.equal(before, rounded) and not torch.equal(before, weights_only)
    assert rounded.dtype == torch.float32


def test_weights_only_rounding_keeps_the_input_exact():
    bp = load_tool("bench_precision", "bench")
    x = torch.tensor([[[[0.1234567]]]])
    w = torch.tensor([[[[1.0]]]])
    with bp.bf16_spike_convs(weights_only=True):
        assert compact.plain_conv(x, w).item() == x.item()  # a weight of 1 is exact: the input is untouched
    with bp.bf16_spike_convs():
        assert compact.plain_conv(x, w).item() != x.item()  # the full run rounds the input as well
