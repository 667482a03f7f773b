"""One layer description, two executions: the bias-free ANN U-Net and its spiking twin.

:func:`describe` turns a :class:`UNetSpec` into an ordered list of :class:`LayerDef`. Both networks
own the same parameters (an ``nn.ModuleDict`` keyed by layer name), so an ANN state dict loads into
the SNN unchanged and conversion only adds thresholds.

Changes from the usual U-Net that make conversion work (method notes): average pooling, no bias, no
batch norm, dropout, ReLU, transposed-convolution upsampling, concatenation skips. The output layer
is a 1x1 convolution giving one logit per pixel.

Spiking execution. Every hidden layer is an IF neuron layer. Spikes leave a layer as 0/1; the layer
that reads them multiplies each input channel's weights by the threshold of the layer that emitted
that channel (``input_scale``). This is the connection-wise normalisation that U-Net concatenations
need: the two halves of a skip concatenation come from layers with different thresholds, and
scaling by the source threshold makes both carry "rate x threshold", the quantity the ANN's ReLU
activation approximates. The input image enters as Poisson spikes of unit size.

Time is folded into the batch: a layer processes all timesteps of a chunk in one convolution
([T*B, C, H, W]) before its neurons integrate them in order. Activations use the channels-last
memory layout, which oneDNN's CPU convolutions run markedly faster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .compact import compact_conv, plain_conv
from .encoding import INPUT_ENCODINGS, InputStream
from .neurons import DEFAULT_GAMMA, RESETS, if_forward, if_neuron
from .quant import MIN_CLIP, qcfs

INPUT = "input"


@dataclass(frozen=True)
class UNetSpec:
    """Architecture hyper-parameters; saved with every checkpoint."""

    in_channels: int = 1
    channels: Tuple[int, ...] = (16, 32, 64, 128)
    convs_per_level: int = 2
    kernel_size: int = 3
    dropout: float = 0.1
    #: 0: ReLU hidden activations (the paper's ANN); L > 0: quantised clip with L levels and a learned
    #: clip per layer (:mod:`hipposnn.quant`), for conversion at T = L without threshold balancing
    quant_levels: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        if not data["quant_levels"]:
            del data["quant_levels"]  # plain ANNs keep the file format older readers know
        return data

    @classmethod
    def from_dict(cls, data: dict) -> UNetSpec:
        data = dict(data)
        data["channels"] = tuple(data["channels"])
        return cls(**data)

    @property
    def context(self) -> int:
        """Neighbouring slices on each side fed as extra channels (``in_channels = 1 + 2 * context``)."""
        return (self.in_channels - 1) // 2

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (one halving per pooling)."""
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class LayerDef:
    """One weighted layer: what it reads, how, and what it computes."""

    name: str
    kind: str  # "conv" (3x3, padded), "up" (2x2 stride-2 transposed conv) or "out" (1x1, no neuron)
    in_channels: int
    out_channels: int
    inputs: Tuple[str, ...]  # earlier layer names (or INPUT), concatenated along channels
    pool: bool = False  # 2x2 average pooling of the input first
    dropout: bool = False  # dropout on the (pooled, concatenated) input

    @property
    def spiking(self) -> bool:
        return self.kind != "out"


def describe(spec: UNetSpec) -> List[LayerDef]:
    """The layer list shared by the ANN and the SNN."""
    layers: List[LayerDef] = []
    prev, prev_ch = INPUT, spec.in_channels
    skips: List[Tuple[str, int]] = []
    depth = len(spec.channels)
    for level, ch in enumerate(spec.channels):
        for i in range(spec.convs_per_level):
            name = f"enc{level}_{i}"
            layers.append(
                LayerDef(name, "conv", prev_ch, ch, (prev,), pool=(i == 0 and level > 0), dropout=prev != INPUT)
            )
            prev, prev_ch = name, ch
        if level < depth - 1:
            skips.append((prev, ch))
    for level in range(depth - 2, -1, -1):
        ch = spec.channels[level]
        up = f"up{level}"
        layers.append(LayerDef(up, "up", prev_ch, ch, (prev,)))
        skip_name, skip_ch = skips[level]
        inputs: Tuple[str, ...] = (up, skip_name)
        in_ch = ch + skip_ch
        for i in range(spec.convs_per_level):
            name = f"dec{level}_{i}"
            layers.append(LayerDef(name, "conv", in_ch, ch, inputs, dropout=True))
            inputs, in_ch = (name,), ch
        prev, prev_ch = inputs[0], ch
    layers.append(LayerDef("out", "out", prev_ch, 1, (prev,)))
    return layers


def _make_weight(layer: LayerDef, kernel: int) -> nn.Parameter:
    if layer.kind == "up":
        w = torch.empty(layer.in_channels, layer.out_channels, 2, 2)
        nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
        w.mul_((layer.out_channels / layer.in_channels) ** 0.5)  # fan_in of a transposed conv is in_ch*k*k/4
    else:
        k = 1 if layer.kind == "out" else kernel
        w = torch.empty(layer.out_channels, layer.in_channels, k, k)
        nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    return nn.Parameter(w)


class _UNetBase(nn.Module):
    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = describe(spec)
        self.weights = nn.ParameterDict({layer.name: _make_weight(layer, spec.kernel_size) for layer in self.layers})
        self._last_use = _last_uses(self.layers)

    def _padding(self, layer: LayerDef) -> int:
        return self.spec.kernel_size // 2 if layer.kind == "conv" else 0

    def _check_input(self, x: Tensor, channel_dim: int) -> None:
        m = self.spec.multiple
        if x.shape[channel_dim] != self.spec.in_channels:
            raise ValueError(f"expected {self.spec.in_channels} input channel(s), got {x.shape[channel_dim]}")
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"input height and width must be multiples of {m}, got {tuple(x.shape[-2:])}")


def _repeat_steps(x: Tensor, steps: int) -> Tensor:
    """``x`` [B, ...] repeated for ``steps`` timesteps as one channels-last [steps * B, ...] tensor (with gradient)."""
    out = torch.empty((steps * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    out.view(steps, *x.shape).copy_(x.unsqueeze(0).expand(steps, *x.shape))
    return out


def _last_uses(layers: Sequence[LayerDef]) -> Dict[str, int]:
    """Index of the last layer reading each output, so activations can be freed early."""
    last: Dict[str, int] = {}
    for idx, layer in enumerate(layers):
        for name in layer.inputs:
            last[name] = idx
    return last


class UNet(_UNetBase):
    """The ANN: ReLU U-Net returning one logit per pixel ([B, 1, H, W]).

    With ``spec.quant_levels = L > 0`` every hidden ReLU becomes the quantised clip activation of
    :mod:`hipposnn.quant`, with one learnable clip per layer in ``clips`` (saved in the model file).
    """

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__(spec)
        self.clips = nn.ParameterDict()
        if spec.quant_levels > 0:
            for layer in self.layers:
                if layer.spiking:
                    self.clips[layer.name] = nn.Parameter(torch.tensor(1.0))

    def clip_dict(self) -> Dict[str, float]:
        """The learned clip of every hidden layer (empty for a ReLU ANN)."""
        return {name: max(float(p.detach()), MIN_CLIP) for name, p in self.clips.items()}

    def set_clips(self, clips: Dict[str, float]) -> None:
        """Set the clips of the named hidden layers (names without a clip are ignored)."""
        with torch.no_grad():
            for name, value in clips.items():
                if name in self.clips:
                    if not value > 0:
                        raise ValueError(f"clip of {name} must be positive, got {value}")
                    self.clips[name].fill_(float(value))

    def forward(
        self, x: Tensor, activations: Optional[Dict[str, Tensor]] = None, quantise: bool = True
    ) -> Tensor:
        """Logits of ``x``; ``quantise=False`` runs a quantised ANN with plain ReLUs (clip calibration)."""
        self._check_input(x, 1)
        levels = self.spec.quant_levels if quantise else 0
        outs: Dict[str, Tensor] = {INPUT: x.contiguous(memory_format=torch.channels_last)}
        p = self.spec.dropout
        for idx, layer in enumerate(self.layers):
            h = torch.cat([outs[n] for n in layer.inputs], 1) if len(layer.inputs) > 1 else outs[layer.inputs[0]]
            if layer.pool:
                h = F.avg_pool2d(h, 2)
            if layer.dropout and p > 0:
                h = F.dropout(h, p, self.training)
            w = self.weights[layer.name]
            if layer.kind == "up":
                h = F.conv_transpose2d(h, w, stride=2)
            else:
                h = F.conv2d(h, w, padding=self._padding(layer))
            if layer.spiking:
                h = qcfs(h, self.clips[layer.name], levels) if levels > 0 else F.relu(h)
            if activations is not None:
                activations[layer.name] = h
            outs[layer.name] = h
            for name in layer.inputs:
                if self._last_use[name] == idx and name in outs:
                    del outs[name]
        return h


@dataclass
class SpikeStats:
    """Per-layer counters filled during a spiking forward pass (summed over time and batch)."""

    neurons: Dict[str, int] = field(default_factory=dict)  # neurons per sample
    spikes: Dict[str, float] = field(default_factory=dict)  # total output spikes
    synops: Dict[str, float] = field(default_factory=dict)  # synaptic operations (accumulates)
    macs: Dict[str, float] = field(default_factory=dict)  # multiply-accumulates (a direct input's first layer)
    samples: int = 0
    timesteps: int = 0

    def firing_rates(self) -> Dict[str, float]:
        """Spikes per neuron per timestep, per layer."""
        denom = max(self.samples * self.timesteps, 1)
        return {k: self.spikes[k] / (self.neurons[k] * denom) for k in self.spikes}

    def mean_firing_rate(self) -> float:
        total_neurons = sum(self.neurons.values())
        denom = max(self.samples * self.timesteps * total_neurons, 1)
        return sum(self.spikes.values()) / denom

    def synops_per_sample(self) -> Dict[str, float]:
        return {k: v / max(self.samples, 1) for k, v in self.synops.items()}

    def macs_per_sample(self) -> Dict[str, float]:
        return {k: v / max(self.samples, 1) for k, v in self.macs.items()}


class SpikingUNet(_UNetBase):
    """The spiking twin: IF layers with per-layer thresholds and a non-firing output layer.

    ``output_scaling`` decides how the output layer's accumulated membrane becomes a logit:
    ``"mean"`` divides by T (the logit estimates the ANN's logit whatever T is), ``"sum"`` keeps the
    raw accumulated potential (it grows with T, so the 0.5 probability threshold moves with T: one
    cause of the "output scaling issue" the source paper reports).

    ``input_encoding`` decides what the first layer sees: ``"poisson"`` (the paper's rate coding:
    binary or ternary input spikes, see :mod:`hipposnn.encoding`), ``"regular"`` (evenly spaced spikes at
    the same rate with a random phase per pixel: the same expected input without Poisson's sampling
    noise, :func:`~hipposnn.encoding.regular_spikes`) or ``"direct"`` (the normalised
    image itself as a constant input current at every step, as most low-latency conversion work
    does). Direct input removes the sampling noise of T Poisson draws, the largest part of the
    conversion loss at T = 8; the first layer then does multiply-accumulates on the image, once per
    slice since its current does not change (counted in :attr:`SpikeStats.macs`), and every later
    layer still receives spikes only. Measured (docs/models.md): closer to the ANN on the MSD crops; a
    converted net under-fires on whole-brain scans from other sites unless fine-tuned with distillation
    from its ANN, in binary coding. The shipped T = 32 SNNs take Poisson input; the ternary T = 8 SNN
    runs its Poisson-trained weights on regular input, which scored better on both the MSD crops and the
    whole-brain scans; the binary T = 8 SNN, the whole-brain default, takes direct input. The input is a
    run-time attribute, saved with the model, so the same weights can be run on any of the three.
    """

    def __init__(
        self,
        spec: UNetSpec,
        output_scaling: str = "mean",
        gamma: float = DEFAULT_GAMMA,
        initial_membrane: float = 0.0,
        reset: str = "subtract",
        input_encoding: str = "poisson",
    ) -> None:
        super().__init__(spec)
        if output_scaling not in ("mean", "sum"):
            raise ValueError("output_scaling must be 'mean' or 'sum'")
        if not 0.0 <= initial_membrane < 1.0:
            raise ValueError(f"initial_membrane must be in [0, 1), got {initial_membrane}")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {', '.join(RESETS)}, got {reset!r}")
        if input_encoding not in INPUT_ENCODINGS:
            raise ValueError(f"input_encoding must be one of {', '.join(INPUT_ENCODINGS)}, got {input_encoding!r}")
        self.output_scaling = output_scaling
        self.gamma = gamma
        #: membrane at t = 0 as a fraction of the layer's threshold (0.5: the "shift" of clip conversion)
        self.initial_membrane = float(initial_membrane)
        #: "subtract" (soft reset, the default) or "zero" (hard reset, what NIR-style formats express)
        self.reset = reset
        self.input_encoding = input_encoding
        hidden = [layer.name for layer in self.layers if layer.spiking]
        self.register_buffer("thresholds", torch.ones(len(hidden)))
        self._threshold_index = {name: i for i, name in enumerate(hidden)}
        # host-side copies: reading a GPU buffer element by element would synchronise every layer
        self._theta: Dict[str, float] = {name: 1.0 for name in hidden}
        self._scale_cache: Dict[tuple, Any] = {}

    # -- thresholds -------------------------------------------------------------------------
    def threshold(self, name: str) -> float:
        return self._theta[name]

    def set_threshold(self, name: str, value: float) -> None:
        if not value > 0:
            raise ValueError(f"threshold of {name} must be positive, got {value}")
        self.thresholds[self._threshold_index[name]] = float(value)
        self._theta[name] = float(value)
        self._scale_cache.clear()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        values = self.thresholds.detach().cpu().tolist()
        self._theta = {name: float(values[i]) for name, i in self._threshold_index.items()}
        self._scale_cache.clear()

    def threshold_dict(self) -> Dict[str, float]:
        return {name: self.threshold(name) for name in self._threshold_index}

    @classmethod
    def from_ann(cls, ann: UNet, **kwargs) -> SpikingUNet:
        snn = cls(ann.spec, **kwargs)
        snn.weights.load_state_dict(ann.weights.state_dict())
        return snn

    def to_ann(self) -> UNet:
        """The ANN with these weights; a quantised spec gets the thresholds as its clips."""
        ann = UNet(self.spec)
        ann.weights.load_state_dict(self.weights.state_dict())
        ann.set_clips(self.threshold_dict())
        return ann

    def _scaled_weight(self, layer: LayerDef, dropout_scale: float) -> Tensor:
        """Weights times the threshold of the layer that emitted each input channel."""
        w = self.weights[layer.name]
        # inference-mode tensors may not enter autograd later, so they are cached apart
        key = (layer.name, dropout_scale, f"{w.device}/{torch.is_inference_mode_enabled()}")
        scale = self._scale_cache.get(key)
        if scale is None:
            scales = []
            for name in layer.inputs:
                ch = self.spec.in_channels if name == INPUT else self._out_channels(name)
                value = 1.0 if name == INPUT else self.threshold(name)
                scales.append(torch.full((ch,), value * dropout_scale))
            scale = torch.cat(scales).to(w)
            self._scale_cache[key] = scale
        shape = (-1, 1, 1, 1) if layer.kind == "up" else (1, -1, 1, 1)
        if (torch.is_grad_enabled() and w.requires_grad) or w.is_inference():
            # training: the product is part of the graph; weights made in inference mode keep no version to
            # check a kept product against
            return (w * scale.view(shape)).contiguous(memory_format=torch.channels_last)
        # Inference runs one forward per timestep chunk (T of them at chunk 1) with the same weights, so the
        # product is kept while the weight tensor is the same object at the same version (an in-place update,
        # e.g. an optimiser step or load_state_dict, bumps the version); new thresholds clear the cache.
        weight_key = key + ("weight",)
        cached = self._scale_cache.get(weight_key)
        if cached is not None and cached[0] is w and cached[1] == w._version:
            return cached[2]
        scaled = (w * scale.view(shape)).contiguous(memory_format=torch.channels_last)
        self._scale_cache[weight_key] = (w, w._version, scaled)
        return scaled

    def _out_channels(self, name: str) -> int:
        return next(layer.out_channels for layer in self.layers if layer.name == name)

    # -- execution ----------------------------------------------------------------------------
    def encode(self, x: Tensor, timesteps: int, generator: torch.Generator, coding: str) -> Tensor:
        """The input ``[T, *x.shape]`` this network runs on for images ``x`` (see :attr:`input_encoding`)."""
        return self.input_stream(x, generator, coding)(timesteps)

    def input_stream(self, x: Tensor, generator: torch.Generator, coding: str) -> InputStream:
        """The same input drawn in chunks of timesteps (a long run split to bound memory)."""
        return InputStream(x, generator, coding, self.input_encoding)

    def forward(
        self,
        spikes: Tensor,
        *,
        stats: Optional[SpikeStats] = None,
        current_hook: Optional[Callable[[LayerDef, Tensor], None]] = None,
        record: Optional[Dict[str, Tensor]] = None,
        state: Optional[Dict[str, Tensor]] = None,
        rates: Optional[List[Tuple[Tensor, int]]] = None,
    ) -> Tensor:
        """Run input spikes ``[T, B, C, H, W]``; return the output layer's summed current [B, 1, H, W].

        Returns the *sum over these T steps* of the output current; :meth:`logits` applies the
        output scaling. ``state`` (a dict, filled and reused in place) carries membranes between
        calls, so long runs can be split into chunks of timesteps without changing the result; with
        direct input it also keeps the first layer's current, so it belongs to one run of one input.
        ``current_hook(layer, current)`` sees every layer's input current before its neurons fire
        (threshold balancing uses it and may set that layer's threshold). ``record`` receives each
        layer's spikes (teaching views). Gradients flow when autograd is on (BPTT, reset detached).
        ``rates`` (a list) receives ``(spike sum, neuron-steps)`` of every hidden layer, the sum with
        its gradient, for a firing-rate penalty in the loss.
        """
        self._check_input(spikes, 2)
        steps, batch = spikes.shape[0], spikes.shape[1]
        train_graph = torch.is_grad_enabled() and any(p.requires_grad for p in self.weights.values())
        p = self.spec.dropout if self.training else 0.0
        direct = self.input_encoding == "direct"
        # A direct input from :meth:`encode` is one image viewed T times (stride 0 over time): the current it
        # drives is computed once and repeated, instead of convolving the same image at every step.
        once = direct and steps > 1 and spikes.stride(0) == 0
        given = spikes[0] if once else spikes.flatten(0, 1)
        outs: Dict[str, Tensor] = {INPUT: given.contiguous(memory_format=torch.channels_last)}
        # spikes per position summed over channels, one map per output, shared by counters
        counts: Dict[str, Tensor] = {}
        if stats is not None and not direct:
            counts[INPUT] = outs[INPUT].detach().abs().sum(1, keepdim=True)
        for idx, layer in enumerate(self.layers):
            fed_once = once and layer.inputs == (INPUT,)
            parts = [_repeat_steps(outs[n], steps) if once and n == INPUT and not fed_once else outs[n]
                     for n in layer.inputs]
            h = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
            mask = None
            if layer.dropout and p > 0:
                hw = (h.shape[-2] // 2, h.shape[-1] // 2) if layer.pool else tuple(h.shape[-2:])
                mask = (torch.rand(batch, h.shape[1], *hw, device=h.device) >= p).to(h.dtype)
                mask = mask.contiguous(memory_format=torch.channels_last)
            weight = self._scaled_weight(layer, 1.0 / (1.0 - p) if mask is not None else 1.0)
            if stats is not None:
                # a later chunk of the same run (membranes carried in ``state``) has paid the direct input's MACs
                fresh = state is None or layer.name not in state
                self._count_ops(stats, layer, counts, batch, tuple(h.shape[-2:]), fresh)
            # A direct input is the same image at every step of a run, so its layer's current (one image's worth:
            # a single step, or the once-computed current) is kept in ``state`` beside the membranes and a run in
            # chunks of one step convolves the image once, not once per step (the same values: same input, same conv).
            keep = f"{layer.name}/direct current"
            reusable = (direct and layer.inputs == (INPUT,) and not train_graph and mask is None and state is not None
                        and (steps == 1 or fed_once))
            kept = state.get(keep) if reusable else None  # type: ignore[union-attr]
            if kept is not None and kept.shape[0] == batch:
                current = kept
            else:
                # an analog input is not a spike map: int8 would not hold it, so its layer convolves in float
                conv = plain_conv if direct and INPUT in layer.inputs else compact_conv
                current = conv(
                    h,
                    weight,
                    pool=layer.pool,
                    mask=mask,
                    transposed=layer.kind == "up",
                    padding=self._padding(layer),
                    stride=2 if layer.kind == "up" else 1,
                )
                if reusable:
                    state[keep] = current  # type: ignore[index]
            if fed_once:
                current = _repeat_steps(current, steps)
            if not layer.spiking:
                out = current.view(steps, batch, *current.shape[1:]).sum(0)
                break
            current = current.view(steps, batch, *current.shape[1:])
            if current_hook is not None:
                current_hook(layer, current)
            theta = self.threshold(layer.name)
            start = self.initial_membrane * theta
            if train_graph:
                s = if_neuron(current, theta, self.gamma, reset=self.reset, initial=start)
            else:
                membrane = state.get(layer.name) if state is not None else None
                s, membrane = if_forward(current, theta, membrane, reset=self.reset, initial=start)
                if state is not None:
                    state[layer.name] = membrane
            del current
            if stats is not None:
                counts[layer.name] = s.detach().flatten(0, 1).sum(1, keepdim=True)
                stats.neurons[layer.name] = int(s[0, 0].numel())
                stats.spikes[layer.name] = stats.spikes.get(layer.name, 0.0) + float(counts[layer.name].sum())
            if rates is not None:
                rates.append((s.sum(), s.numel()))
            if record is not None:
                record[layer.name] = s.detach()
            outs[layer.name] = s.flatten(0, 1)
            for name in layer.inputs:
                if self._last_use[name] == idx and name in outs:
                    del outs[name]
                    counts.pop(name, None)
        return out

    def _count_ops(
        self, stats: SpikeStats, layer: LayerDef, counts: Dict[str, Tensor], batch: int, size: Tuple[int, int],
        first: bool,
    ) -> None:
        """Synaptic operations of the layer's spiking inputs; a direct input's multiply-accumulates, once.

        The direct input is the same at every step, so its current is computed once per sample, in the
        ``first`` chunk of a run (``size``: the layer's input height and width).
        """
        if INPUT in layer.inputs and self.input_encoding == "direct":
            h, w = (size[0] // 2, size[1] // 2) if layer.pool else size
            k = self.spec.kernel_size
            if first:
                stats.macs[layer.name] = stats.macs.get(layer.name, 0.0) + float(
                    self.spec.in_channels * layer.out_channels * k * k * h * w * batch)
            spiking = [counts[n] for n in layer.inputs if n != INPUT]
            if spiking:
                self._count_synops(stats, layer, sum(spiking))
            return
        self._count_synops(stats, layer, sum(counts[n] for n in layer.inputs))

    def _count_synops(self, stats: SpikeStats, layer: LayerDef, count: Tensor) -> None:
        """Accumulates: each incoming spike (or |input spike|) times the synapses it drives.

        ``count`` holds the layer's incoming spikes per position, summed over channels.

        For a 3x3 convolution a spike reaches ``out_channels`` neurons at each output position
        within its kernel window (fewer at the border); average pooling is folded into the next
        layer's synapses, so an unpooled spike drives the same fan-out.
        """
        with torch.no_grad():
            if layer.kind == "up":
                fan = float(count.sum()) * 4
            elif layer.kind == "out":
                fan = float(count.sum())
            else:
                if layer.pool:
                    count = F.avg_pool2d(count, 2) * 4
                k = self.spec.kernel_size
                ones = torch.ones(1, 1, k, k, dtype=count.dtype, device=count.device)
                fan = float(F.conv2d(count, ones, padding=k // 2).sum())
            stats.synops[layer.name] = stats.synops.get(layer.name, 0.0) + fan * layer.out_channels

    def logits(self, summed_output: Tensor, timesteps: int) -> Tensor:
        """Turn the accumulated output potential into logits according to ``output_scaling``."""
        return summed_output / timesteps if self.output_scaling == "mean" else summed_output
