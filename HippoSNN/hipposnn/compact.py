"""Convolutions over spike tensors that keep their saved input as ``int8``.

A generic autograd graph saves the float32 input of every convolution for the weight gradient. In a
spiking network that input is a spike map (0/1, or -1/0/1 at the encoder, or an average of 2x2
spikes after pooling): its values are small integers divided by a known factor, so one byte holds
it exactly. Saving that byte instead of four is the main memory lever of BPTT on a CPU; the float
copy is rebuilt in the backward pass, one layer at a time.

Average pooling and dropout are folded into the same function because PyTorch's own ``avg_pool2d``
and ``mul`` would each keep another float copy of the spikes alive for their backward pass.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


class _CompactConv(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: Tensor,
        weight: Tensor,
        quant: int,
        pool: bool,
        mask: Optional[Tensor],
        transposed: bool,
        padding: int,
        stride: int,
    ) -> Tensor:
        if pool:
            x = F.avg_pool2d(x, 2)
            quant *= 4
        if mask is not None:
            x = _apply_mask(x, mask)
        if transposed:
            out = F.conv_transpose2d(x, weight, stride=stride, padding=padding)
        else:
            out = F.conv2d(x, weight, stride=stride, padding=padding)
        ctx.save_for_backward((x * quant if quant != 1 else x).to(torch.int8), weight, mask)
        ctx.quant, ctx.pool, ctx.transposed, ctx.padding, ctx.stride = quant, pool, transposed, padding, stride
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        packed, weight, mask = ctx.saved_tensors
        x = packed.to(grad_out.dtype)
        if ctx.quant != 1:
            x.div_(ctx.quant)
        need_input = ctx.needs_input_grad[0]
        grad_in, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out,
            x,
            weight,
            None,
            [ctx.stride, ctx.stride],
            [ctx.padding, ctx.padding],
            [1, 1],
            ctx.transposed,
            [0, 0],
            1,
            [need_input, ctx.needs_input_grad[1], False],
        )
        if need_input:
            if mask is not None:
                grad_in = _apply_mask(grad_in, mask)
            if ctx.pool:
                grad_in = F.interpolate(grad_in, scale_factor=2.0, mode="nearest").mul_(0.25)
        return grad_in, grad_w, None, None, None, None, None, None


def _apply_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Multiply ``x`` ([T*B, C, H, W]) by a per-sample mask ([B, C, H, W]) shared by all timesteps."""
    batch = mask.shape[0]
    shaped = x.view(x.shape[0] // batch, batch, *x.shape[1:])
    return (shaped * mask.unsqueeze(0)).view(x.shape)


def compact_conv(
    x: Tensor,
    weight: Tensor,
    *,
    quant: int = 1,
    pool: bool = False,
    mask: Optional[Tensor] = None,
    transposed: bool = False,
    padding: int = 0,
    stride: int = 1,
) -> Tensor:
    """Convolve spikes ``x`` ([T*B, C, H, W]) with ``weight``, saving ``x`` as int8 for backward.

    ``quant`` is the integer that makes every value of ``x`` whole (1 for spikes). ``mask`` holds
    binary dropout masks, one per sample, reused at every timestep (the 1/(1-p) rescale belongs in
    ``weight``). Without autograd this is an ordinary (pooled, masked) convolution.
    """
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return plain_conv(x, weight, pool=pool, mask=mask, transposed=transposed, padding=padding, stride=stride)
    return _CompactConv.apply(x, weight, quant, pool, mask, transposed, padding, stride)


def plain_conv(
    x: Tensor,
    weight: Tensor,
    *,
    pool: bool = False,
    mask: Optional[Tensor] = None,
    transposed: bool = False,
    padding: int = 0,
    stride: int = 1,
) -> Tensor:
    """:func:`compact_conv` for any input (an analog one too): ordinary autograd, float input saved."""
    if pool:
        x = F.avg_pool2d(x, 2)
    if mask is not None:
        x = _apply_mask(x, mask)
    if transposed:
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding)
    return F.conv2d(x, weight, stride=stride, padding=padding)
