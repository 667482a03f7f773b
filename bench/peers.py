"""The HippoSNN U-Net rebuilt in peer SNN libraries, from *our* weights and thresholds.

Every peer is the same network as :class:`hipposnn.unet.SpikingUNet`: the layers of
:func:`hipposnn.unet.describe`, each weight already multiplied by the threshold of the layer that
emitted its input channels (``SpikingUNet._scaled_weight``), and IF neurons (no leak) with the
layer's threshold and the model's dynamics. The output layer does not fire: every peer returns the
output current summed over the timesteps, [B, 1, H, W], like ``model(spikes)``.

The dynamics follow the model, because a comparison of different dynamics would say nothing about
the engines (the low-latency models converted from a quantised-clip ANN start half-charged):

* start potential ``model.initial_membrane x threshold`` at the start of every sequence;
* ``model.reset``: ``"subtract"`` (soft reset) or ``"zero"`` (hard reset), the reset detached in
  BPTT as ours is.

Peers:

* SpikingJelly (``spikingjelly.activation_based``): ``IFNode(v_threshold=v, v_reset=None)`` (soft) or
  ``v_reset=0.0`` (hard) with ``layer.Conv2d`` / ``layer.ConvTranspose2d`` / ``layer.AvgPool2d``, in
  step mode ``"s"`` (a Python loop over time around the whole network) or ``"m"`` (each layer sees the
  whole [T, B, ...] sequence), optionally wrapped block by block in ``memopt.checkpoint_module``
  (recomputation, optionally with the block's spike input bit-packed; not the first block's, whose
  input may be ternary). ``reset_net`` brings ``v`` back
  to 0 (``v_reset`` or 0 for the soft reset); :func:`reset_peer` then sets each node's ``v`` to its
  start potential (a float, which SpikingJelly expands to the input's shape on the first step, also
  inside ``memopt``'s recomputation, which reads the node's state when the block is called).
* snnTorch: ``Leaky(beta=1.0, threshold=v, reset_mechanism="subtract" or "zero")`` after
  ``nn.Conv2d``; the membrane is passed explicitly and starts at the start potential.
  ``Leaky`` applies the reset one step late (same forward dynamics up to float rounding, as
  (u - v) + I versus (u + I) - v; for the hard reset 0 * u + I versus I, exact), fires on ``u > v``
  instead of ``u >= v``, and detaches the reset, so only its forward pass is compared with ours.
  The start potential is below the threshold (``initial_membrane < 1``), so the late reset never
  fires on the start value.

Peer libraries are imported lazily so that this module loads without them.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from hipposnn.neurons import DEFAULT_GAMMA
from hipposnn.unet import INPUT, LayerDef, SpikingUNet
from torch import Tensor

BASE_PEERS = ("sj-s", "sj-m", "sj-m-ckpt", "sj-m-ckpt-bit", "snntorch")
#: Every peer also in channels-last layout ("-cl"): ``net.to(memory_format=torch.channels_last)``, the one
#: line a user of that framework would add; PyTorch's CPU convolution then runs (and emits) channels-last
#: whenever its weight is, as ours does. Benchmarks report each peer at its best layout.
LAYOUT_SUFFIX = "-cl"
PEERS = BASE_PEERS + tuple(name + LAYOUT_SUFFIX for name in BASE_PEERS)


#: Attribute set on every SpikingJelly node: its start potential, restored by :func:`reset_peer`.
START_ATTR = "hipposnn_start"


def start_potential(model: SpikingUNet, threshold: float) -> float:
    """The membrane at t = 0 of a layer with ``threshold``, computed exactly as ``SpikingUNet`` does."""
    return model.initial_membrane * threshold


def sj_reset_value(model: SpikingUNet) -> float | None:
    """SpikingJelly's ``v_reset`` for the model's reset: None (subtract the threshold) or 0.0 (hard)."""
    return None if model.reset == "subtract" else 0.0


def folded_layers(model: SpikingUNet) -> List[Tuple[LayerDef, Tensor, float | None]]:
    """(layer, folded weight, threshold or None for the output layer) in network order."""
    out = []
    with torch.no_grad():
        for layer in model.layers:
            w = model._scaled_weight(layer, 1.0).detach().contiguous().clone()
            out.append((layer, w, model.threshold(layer.name) if layer.spiking else None))
    return out


def weight_scales(model: SpikingUNet) -> Dict[str, Tensor]:
    """Per-element factor folded weight / raw weight (maps peer gradients onto our parameters)."""
    with torch.no_grad():
        return {layer.name: model._scaled_weight(layer, 1.0).contiguous() / model.weights[layer.name]
                for layer in model.layers}


class _Triangle(torch.autograd.Function):
    """Heaviside of x = u - v with our triangle surrogate gamma / v * max(0, 1 - |x / v|)."""

    @staticmethod
    def forward(ctx, x: Tensor, v: float, gamma: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.v, ctx.gamma = v, gamma
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        height = (1.0 - (x / ctx.v).abs()).clamp_(min=0.0)
        return grad * height * (ctx.gamma / ctx.v), None, None


class TriangleSurrogate(nn.Module):
    """SpikingJelly ``surrogate_function`` matching hipposnn's surrogate for a threshold ``v``."""

    def __init__(self, v: float, gamma: float = DEFAULT_GAMMA) -> None:
        super().__init__()
        self.v, self.gamma = float(v), float(gamma)

    def forward(self, x: Tensor) -> Tensor:
        return _Triangle.apply(x, self.v, self.gamma)


def _last_uses(layers: List[LayerDef]) -> Dict[str, int]:
    last: Dict[str, int] = {}
    for idx, layer in enumerate(layers):
        for name in layer.inputs:
            last[name] = idx
    return last


class _DagNet(nn.Module):
    """Runs ``blocks`` (one per layer: [pool] conv [neuron]) along the U-Net's layer graph."""

    def __init__(self, layers: List[LayerDef], blocks: Dict[str, nn.Module]) -> None:
        super().__init__()
        self.layers = layers
        self.blocks = nn.ModuleDict(blocks)
        self._last = _last_uses(layers)

    def _graph(self, x: Tensor, cat_dim: int, record: Dict[str, List[Tensor]] | None = None) -> Tensor:
        outs: Dict[str, Tensor] = {INPUT: x}
        h = x
        for idx, layer in enumerate(self.layers):
            parts = [outs[n] for n in layer.inputs]
            h = torch.cat(parts, cat_dim) if len(parts) > 1 else parts[0]
            h = self.blocks[layer.name](h)
            if record is not None and layer.spiking:
                record.setdefault(layer.name, []).append(h.detach().to(torch.bool))
            outs[layer.name] = h
            for name in layer.inputs:
                if self._last[name] == idx:
                    del outs[name]
        return h


class SJSingleStep(_DagNet):
    """SpikingJelly, step mode ``s``: the whole network once per timestep."""

    def forward(self, spikes: Tensor, record: Dict[str, List[Tensor]] | None = None) -> Tensor:
        total = None
        for t in range(spikes.shape[0]):
            out = self._graph(spikes[t], 1, record)
            total = out if total is None else total + out
        return total


class SJMultiStep(_DagNet):
    """SpikingJelly, step mode ``m``: every layer over the whole [T, B, ...] sequence."""

    def forward(self, spikes: Tensor, record: Dict[str, List[Tensor]] | None = None) -> Tensor:
        return self._graph(spikes, 2, record).sum(0)


def build_spikingjelly(model: SpikingUNet, step_mode: str = "s", checkpoint: bool = False,
                       compress: bool = False) -> nn.Module:
    """SpikingJelly twin of ``model``; ``checkpoint``/``compress`` use ``memopt`` (step mode ``m`` only).

    ``compress`` bit-packs the saved input of every checkpointed block except the one reading the
    network input: that may be ternary ({-1, 0, 1}), which ``BitSpikeCompressor`` (0/1 only) would
    corrupt, and it holds only the 1-3 input channels, a negligible part of what is saved.
    """
    from spikingjelly.activation_based import layer as sjl
    from spikingjelly.activation_based import neuron

    if checkpoint and step_mode != "m":
        raise ValueError("memopt checkpointing is used with step mode 'm'")
    blocks: Dict[str, nn.Module] = {}
    for layer, w, v in folded_layers(model):
        mods: List[nn.Module] = []
        if layer.pool:
            mods.append(sjl.AvgPool2d(2, step_mode=step_mode))
        if layer.kind == "up":
            conv = sjl.ConvTranspose2d(layer.in_channels, layer.out_channels, 2, stride=2, bias=False,
                                       step_mode=step_mode)
        else:
            k = w.shape[-1]
            conv = sjl.Conv2d(layer.in_channels, layer.out_channels, k, padding=k // 2, bias=False,
                              step_mode=step_mode)
        conv.to(w.dtype).weight.data.copy_(w)  # convert first: a float32 copy would round folded weights
        mods.append(conv)
        if v is not None:
            node = neuron.IFNode(v_threshold=v, v_reset=sj_reset_value(model),
                                 surrogate_function=TriangleSurrogate(v), detach_reset=True, step_mode=step_mode)
            # a plain attribute (not a SpikingJelly memory): reset_net leaves it alone
            setattr(node, START_ATTR, start_potential(model, v))
            mods.append(node)
        block: nn.Module = nn.Sequential(*mods)
        if checkpoint and v is not None:
            from spikingjelly.activation_based import memopt

            packed = compress and INPUT not in layer.inputs
            block = memopt.checkpoint_module(block, compressor=memopt.BitSpikeCompressor() if packed else None)
        blocks[layer.name] = block
    net = (SJMultiStep if step_mode == "m" else SJSingleStep)(model.layers, blocks)
    return net.to(next(model.parameters()).dtype)


def reset_spikingjelly(net: nn.Module) -> None:
    """``reset_net``, then every IF node's membrane to its start potential (0 unless the model says otherwise)."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    for mod in net.modules():
        start = getattr(mod, START_ATTR, None)
        if start:  # 0.0 is what reset_net already left (v_reset or 0 for the soft reset)
            mod.v = start


class SnnTorchNet(nn.Module):
    """snnTorch twin: ``nn.Conv2d`` + ``snn.Leaky(beta=1)`` with the model's reset and start potential, per step."""

    def __init__(self, model: SpikingUNet) -> None:
        super().__init__()
        import snntorch as snn

        self.layers = model.layers
        self._last = _last_uses(self.layers)
        self.convs = nn.ModuleDict()
        self.neurons = nn.ModuleDict()
        #: membrane of each hidden layer at t = 0 (``initial_membrane x threshold``)
        self.starts: Dict[str, float] = {}
        mechanism = "subtract" if model.reset == "subtract" else "zero"
        for layer, w, v in folded_layers(model):
            if layer.kind == "up":
                conv: nn.Module = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, 2, stride=2, bias=False)
            else:
                k = w.shape[-1]
                conv = nn.Conv2d(layer.in_channels, layer.out_channels, k, padding=k // 2, bias=False)
            conv.to(w.dtype).weight.data.copy_(w)
            self.convs[layer.name] = conv
            if v is not None:
                self.neurons[layer.name] = snn.Leaky(beta=1.0, threshold=v, reset_mechanism=mechanism)
                self.starts[layer.name] = start_potential(model, v)
        self.to(next(model.parameters()).dtype)

    def forward(self, spikes: Tensor, record: Dict[str, List[Tensor]] | None = None) -> Tensor:
        mems: Dict[str, Tensor] = {}
        total = None
        for t in range(spikes.shape[0]):
            outs: Dict[str, Tensor] = {INPUT: spikes[t]}
            h = spikes[t]
            for idx, layer in enumerate(self.layers):
                parts = [outs[n] for n in layer.inputs]
                h = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
                if layer.pool:
                    h = nn.functional.avg_pool2d(h, 2)
                h = self.convs[layer.name](h)
                if layer.spiking:
                    mem = mems.get(layer.name)
                    if mem is None:
                        mem = torch.full_like(h, self.starts[layer.name])
                    spk, mems[layer.name] = self.neurons[layer.name](h, mem)
                    h = spk if spk.dtype == h.dtype else spk.to(h.dtype)  # Leaky emits float32 spikes
                    if record is not None:
                        record.setdefault(layer.name, []).append(h.detach().to(torch.bool))
                outs[layer.name] = h
                for name in layer.inputs:
                    if self._last[name] == idx:
                        del outs[name]
            total = h if total is None else total + h
        return total


def build_peer(model: SpikingUNet, name: str) -> nn.Module:
    if name.endswith(LAYOUT_SUFFIX):
        return build_peer(model, name[: -len(LAYOUT_SUFFIX)]).to(memory_format=torch.channels_last)
    if name == "sj-s":
        return build_spikingjelly(model, "s")
    if name == "sj-m":
        return build_spikingjelly(model, "m")
    if name == "sj-m-ckpt":
        return build_spikingjelly(model, "m", checkpoint=True)
    if name == "sj-m-ckpt-bit":
        return build_spikingjelly(model, "m", checkpoint=True, compress=True)
    if name == "snntorch":
        return SnnTorchNet(model)
    raise ValueError(f"unknown peer {name!r}; choose from {PEERS}")


def reset_peer(net: nn.Module, name: str) -> None:
    """Membranes back to their start potentials before a new input sequence.

    snnTorch's state lives in ``forward`` (it starts every call at the start potential).
    """
    if name.startswith("sj"):
        reset_spikingjelly(net)


def stack_record(record: Dict[str, List[Tensor]], multi_step: bool) -> Dict[str, Tensor]:
    """Per-layer spikes [T, B, C, H, W] from what a peer appended while running."""
    return {k: (torch.cat(v, 0) if multi_step else torch.stack(v, 0)) for k, v in record.items()}
