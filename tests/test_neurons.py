"""IF dynamics, surrogate gradient and the compact BPTT against hand computations and plain autograd."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hipposnn.compact import compact_conv
from hipposnn.neurons import if_forward, if_neuron, surrogate_gradient

from .helpers import reference_if


def test_if_hand_computed_sequence():
    # threshold 1.0, constant input 0.4: u = .4 .8 1.2->.2 .6 1.0->0 .4 .8 1.2->.2
    current = torch.full((8, 1), 0.4)
    spikes, membrane = if_forward(current.clone(), 1.0)
    assert spikes.squeeze(1).tolist() == [0, 0, 1, 0, 1, 0, 0, 1]
    assert membrane.item() == pytest.approx(0.2, abs=1e-6)


def test_if_soft_reset_keeps_excess_and_no_leak():
    # a big input spikes once per step while the excess lasts; negative input is integrated, never leaks
    current = torch.tensor([[2.5], [0.0], [0.0], [-0.7], [0.6]])
    spikes, membrane = if_forward(current, 1.0)
    assert spikes.squeeze(1).tolist() == [1, 1, 0, 0, 0]
    assert membrane.item() == pytest.approx(0.5 - 0.7 + 0.6, abs=1e-6)


def test_if_chunks_equal_one_run():
    torch.manual_seed(0)
    current = torch.rand(20, 3, 4) * 0.8
    whole, _ = if_forward(current.clone(), 0.9)
    mem = None
    parts = []
    for chunk in current.split(7):
        s, mem = if_forward(chunk.clone(), 0.9, mem)
        parts.append(s)
    assert torch.equal(torch.cat(parts), whole)


def test_if_rate_approximates_relu_of_mean_input():
    current = torch.tensor([0.0, 0.13, 0.5, 0.87, -0.3]).repeat(2000, 1)
    spikes, _ = if_forward(current, 1.0)
    rates = spikes.mean(0)
    assert torch.allclose(rates, torch.tensor([0.0, 0.13, 0.5, 0.87, 0.0]), atol=1e-3)


def test_surrogate_values():
    v = 2.0
    u = torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    expected = 0.3 / v * torch.tensor([0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    assert torch.allclose(surrogate_gradient(u, v), expected)


def _reference_if(current: torch.Tensor, v: float, gamma: float = 0.3) -> torch.Tensor:
    """Plain-autograd IF with the same surrogate and a detached reset (the definition we implement)."""
    return reference_if(current, v, gamma=gamma)


def test_bptt_gradient_matches_reference_within_quantisation():
    torch.manual_seed(1)
    current = (torch.rand(12, 5, 7) * 1.5).requires_grad_(True)
    weights = torch.randn(12, 5, 7)
    ours = if_neuron(current, 1.3)
    (ours * weights).sum().backward()
    g_ours = current.grad.clone()
    current.grad = None
    ref = _reference_if(current, 1.3)
    (ref * weights).sum().backward()
    assert torch.equal(ours, ref)
    # the membrane is stored with 8 bits over [0, 2v]: error <= gamma/v * (1/127.5) per step, summed over T
    bound = 0.3 / 1.3 / 127.5 * 12 * weights.abs().max()
    assert (g_ours - current.grad).abs().max() <= bound
    assert torch.corrcoef(torch.stack([g_ours.flatten(), current.grad.flatten()]))[0, 1] > 0.999


@pytest.mark.parametrize("pool,transposed,masked", [(False, False, False), (True, False, False),
                                                     (False, True, False), (True, False, True)])
def test_compact_conv_gradients_equal_autograd(pool, transposed, masked):
    torch.manual_seed(2)
    t, b, c = 3, 2, 4
    x = (torch.rand(t * b, c, 8, 6) < 0.3).float().requires_grad_(True)
    w_shape = (c, 5, 2, 2) if transposed else (5, c, 3, 3)
    w = torch.randn(w_shape, requires_grad=True)
    hw = (4, 3) if pool else (8, 6)
    mask = (torch.rand(b, c, *hw) > 0.2).float() if masked else None
    kwargs = dict(pool=pool, mask=mask, transposed=transposed, padding=0 if transposed else 1,
                  stride=2 if transposed else 1)
    y = compact_conv(x, w, **kwargs)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)

    h = F.avg_pool2d(x, 2) if pool else x
    if mask is not None:
        h = (h.view(t, b, *h.shape[1:]) * mask).view(h.shape)
    y_ref = F.conv_transpose2d(h, w, stride=2) if transposed else F.conv2d(h, w, padding=1)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), g)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(gx, gx_ref, atol=1e-4)
    assert torch.allclose(gw, gw_ref, atol=1e-4)


def test_compact_conv_saves_int8():
    x = (torch.rand(4, 3, 8, 8) < 0.5).float().requires_grad_(True)
    w = torch.randn(2, 3, 3, 3, requires_grad=True)
    y = compact_conv(x, w, padding=1)
    saved = [t for t in y.grad_fn.saved_tensors if t is not None and t.shape == x.shape]
    assert saved and saved[0].dtype == torch.int8


def test_fused_kernels_match_pytorch_path(monkeypatch):
    """The optional C++ kernels and the pure-PyTorch loops give the same spikes and gradients."""
    from hipposnn import native

    if native.kernels() is None:
        pytest.skip("fused kernels unavailable here (no compiler or HIPPOSNN_NATIVE=0)")
    torch.manual_seed(4)
    cur = (torch.rand(9, 6, 3, 8, 8) * 1.2).contiguous()
    cur = cur.view(54, 3, 8, 8).contiguous(memory_format=torch.channels_last).view(9, 6, 3, 8, 8)
    g = torch.randn_like(cur)
    results = []
    for enabled in (True, False):
        fused = (lambda *t: native.kernels() is not None) if enabled else (lambda *t: False)
        monkeypatch.setattr(native, "usable", fused)
        s_inf, mem = if_forward(cur.clone(), 0.7)
        x = cur.clone().requires_grad_(True)
        s = if_neuron(x, 0.7)
        (s * g).sum().backward()
        results.append((s_inf, mem, s.detach(), x.grad))
    (a_inf, a_mem, a_s, a_g), (b_inf, b_mem, b_s, b_g) = results
    assert torch.equal(a_inf, b_inf) and torch.equal(a_s, b_s)
    assert torch.allclose(a_mem, b_mem, atol=1e-6)
    # one 8-bit code step of difference at most (float rounding of u * 127.5 / v)
    assert torch.allclose(a_g, b_g, atol=0.3 / 0.7 / 127.5 * 9 * g.abs().max() + 1e-6)


def test_first_run_does_not_wait_for_the_kernel_compile(monkeypatch, tmp_path, caplog):
    """Issue 12 item 4: the first spiking run compiled the C++ kernels for 1-2 min with no message.

    Now it starts the compile in a background process, says so in one line and runs on the PyTorch
    path; a later process loads the compiled module; a failed compile is not retried on every run.
    """
    import logging

    from hipposnn import native

    started = []
    monkeypatch.setenv("HIPPOSNN_NATIVE", "1")
    monkeypatch.setenv("HIPPOSNN_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "start_background_build", lambda folder: started.append(folder) or True)
    monkeypatch.setattr(native, "_load", lambda folder: pytest.fail("must not compile in the foreground"))

    def fresh_process():
        monkeypatch.setattr(native, "_tried", False)
        monkeypatch.setattr(native, "_module", None)

    fresh_process()
    with caplog.at_level(logging.INFO, logger="hipposnn.native"):
        assert native.kernels() is None and native.kernels() is None  # decided once per process
    assert started == [native.build_dir()] and str(tmp_path) in str(started[0])
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 1 and "compiling the fused C++ spiking kernels in the background" in messages[0]
    assert "\n" not in messages[0]
    # the inference path runs meanwhile (the PyTorch loops)
    spikes, _ = if_forward(torch.rand(4, 3, 5) * 2, 0.7)
    assert spikes.shape == (4, 3, 5)
    # a later process finds the compiled module and loads it without compiling
    folder = native.build_dir()
    folder.mkdir(parents=True)
    (folder / native.READY).write_text("ok")
    sentinel = object()
    monkeypatch.setattr(native, "_load", lambda f: sentinel)
    fresh_process()
    assert native.kernels() is sentinel and len(started) == 1
    # a compile that failed (no compiler) is remembered: PyTorch path, no new background compile
    (folder / native.READY).unlink()
    (folder / native.FAILED).write_text("no compiler")
    fresh_process()
    assert native.kernels() is None and len(started) == 1
    # a background compile that died (killed, out of memory) counts as failed: no new compile each run
    (folder / native.FAILED).unlink()
    (folder / native.BUILDING).write_text("999999999")
    fresh_process()
    assert native.kernels() is None and len(started) == 1 and (folder / native.FAILED).is_file()
    # HIPPOSNN_NATIVE=wait compiles in the foreground, past the stale torch lock of the killed compile
    (folder / "lock").write_text("")

    def load_without_stale_lock(f):
        assert not (f / "lock").exists(), "torch would wait forever for a killed compile's lock"
        return sentinel

    monkeypatch.setattr(native, "_load", load_without_stale_lock)
    monkeypatch.setenv("HIPPOSNN_NATIVE", "wait")
    fresh_process()
    assert native.kernels() is sentinel and (folder / native.READY).is_file()
    assert not (folder / native.FAILED).exists() and not (folder / native.BUILDING).exists()
    # HIPPOSNN_NATIVE=0 never uses them
    (folder / native.READY).write_text("ok")
    monkeypatch.setenv("HIPPOSNN_NATIVE", "0")
    fresh_process()
    assert native.kernels() is None


def test_compiled_kernels_load_without_cpp_extension(monkeypatch, tmp_path):
    """A folder marked ready is imported directly (no ninja check through cpp_extension.load on
    every run); a file there that does not load falls back to cpp_extension.load."""
    import shutil

    from hipposnn import native

    if native.kernels() is None:
        pytest.skip("the fused kernels are not compiled on this machine")
    built = Path(native.kernels().__file__)
    monkeypatch.setenv("HIPPOSNN_NATIVE", "1")
    monkeypatch.setenv("HIPPOSNN_CACHE", str(tmp_path))
    folder = native.build_dir()
    folder.mkdir(parents=True)
    (folder / native.READY).write_text("ok")

    def fresh_process():
        monkeypatch.setattr(native, "_tried", False)
        monkeypatch.setattr(native, "_module", None)

    (folder / built.name).write_bytes(b"not a shared object")
    sentinel = object()
    monkeypatch.setattr(native, "_load", lambda f: sentinel)
    fresh_process()
    assert native.kernels() is sentinel
    (folder / built.name).unlink()
    shutil.copyfile(built, folder / built.name)
    monkeypatch.setattr(native, "_load", lambda f: pytest.fail("a ready folder must not go through cpp_extension"))
    fresh_process()
    module = native.kernels()
    assert module is not sentinel and hasattr(module, "if_forward")
