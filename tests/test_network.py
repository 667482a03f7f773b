"""Encoder statistics, the ANN/SNN twin, conversion convergence, spike counters, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hipposnn.conversion import balance_thresholds, convert
from hipposnn.encoding import InputStream, make_generator, poisson_spikes, regular_spikes
from hipposnn.metrics import ann_macs
from hipposnn.simulate import predict_slices, snn_logits
from hipposnn.unet import SpikeStats, SpikingUNet, UNet, UNetSpec, describe

SMALL = UNetSpec(channels=(4, 8), dropout=0.0)


def test_poisson_binary_mean_and_determinism():
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    s = poisson_spikes(x, 20000, make_generator(3))
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), x, atol=0.01)
    assert torch.equal(s, poisson_spikes(x, 20000, make_generator(3)))
    assert not torch.equal(s, poisson_spikes(x, 20000, make_generator(4)))


def test_poisson_ternary_sign_and_mean():
    x = torch.tensor([-0.8, -0.2, 0.0, 0.3, 1.0])
    s = poisson_spikes(x, 20000, make_generator(0), "ternary")
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.all(s[:, :2] <= 0) and torch.all(s[:, 3:] >= 0) and torch.all(s[:, 2] == 0)
    assert torch.allclose(s.mean(0), x, atol=0.01)


def test_poisson_chunks_equal_one_draw():
    x = torch.rand(2, 1, 8, 8)
    gen = make_generator(5)
    parts = [poisson_spikes(x, n, gen) for n in (3, 4, 5)]
    assert torch.equal(torch.cat(parts), poisson_spikes(x, 12, make_generator(5)))


def test_regular_spikes_count_within_one_of_the_rate_at_every_step_and_are_unbiased():
    x = torch.tensor([-0.8, -0.2, 0.0, 0.3, 0.37, 1.0]).repeat(5000, 1)
    s = InputStream(x, make_generator(0), "ternary", "regular")(8)
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.all(s[..., :2] <= 0) and torch.all(s[..., 3:] >= 0) and torch.all(s[..., 2] == 0)
    counts = s.cumsum(0)  # after t = 1..8 steps
    t = torch.arange(1, 9, dtype=x.dtype).view(-1, 1, 1)
    assert torch.all((counts - t * x).abs() < 1.0)  # never a whole spike off, where Poisson draws scatter
    assert torch.allclose(counts[-1].mean(0) / 8, x[0], atol=0.01)  # random phases: unbiased
    poisson = poisson_spikes(x, 8, make_generator(0), "ternary")
    assert float(s.sum(0).var(0).max()) < 0.3 < float(poisson.sum(0).var(0).max())


def test_input_streams_in_chunks_equal_one_draw_and_depend_on_the_seed_only():
    x = torch.rand(2, 1, 8, 8)
    for encoding in ("poisson", "regular", "direct"):
        stream = InputStream(x, make_generator(5), "binary", encoding)
        whole = InputStream(x, make_generator(5), "binary", encoding)(12)
        assert torch.equal(torch.cat([stream(n) for n in (3, 4, 5)]), whole), encoding
    other = InputStream(x, make_generator(6), "binary", "regular")(12)
    assert not torch.equal(other, InputStream(x, make_generator(5), "binary", "regular")(12))
    with pytest.raises(ValueError, match="phase shape"):
        regular_spikes(x, torch.rand(3), 4)
    with pytest.raises(ValueError, match="input_encoding"):
        InputStream(x, make_generator(0), "binary", "analog")


def test_binary_coding_rejects_signed_input():
    with pytest.raises(ValueError):
        poisson_spikes(torch.tensor([-0.5]), 2, make_generator(0), "binary")


def test_layer_description_shared_by_ann_and_snn():
    spec = UNetSpec()
    layers = describe(spec)
    names = [layer.name for layer in layers]
    assert names[0] == "enc0_0" and names[-1] == "out"
    assert sum(layer.kind == "up" for layer in layers) == 3
    concat = [layer for layer in layers if len(layer.inputs) == 2]
    assert [layer.inputs for layer in concat] == [("up2", "enc2_1"), ("up1", "enc1_1"), ("up0", "enc0_1")]
    ann = UNet(spec)
    snn = SpikingUNet.from_ann(ann)
    assert set(ann.state_dict()) <= set(snn.state_dict())
    assert all(torch.equal(ann.weights[k], snn.weights[k]) for k in ann.weights)
    assert not any("bias" in k for k in ann.state_dict())
    assert len(snn.threshold_dict()) == len(layers) - 1
    assert ann(torch.rand(2, 1, 56, 48)).shape == (2, 1, 56, 48)


def test_unet_rejects_bad_input_size():
    with pytest.raises(ValueError):
        UNet(UNetSpec())(torch.rand(1, 1, 50, 48))


def _trained_like_ann(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(SMALL).eval()


def test_conversion_converges_to_ann_as_t_grows():
    ann = _trained_like_ann()
    x = torch.rand(6, 1, 16, 16)
    with torch.no_grad():
        target = ann(x)
    snn = convert(ann, x.numpy(), timesteps=200, scale=1.0, percentile=99.9)
    errors = []
    for t in (8, 64, 512):
        with torch.no_grad():
            out = snn_logits(snn, x, t, make_generator(1))
        errors.append(float((out - target).abs().mean() / target.abs().mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.15


def test_balancing_sets_max_current_times_scale():
    ann = _trained_like_ann(1)
    x = torch.rand(4, 1, 16, 16)
    seen = {}
    snn = SpikingUNet.from_ann(ann)
    thresholds = balance_thresholds(snn, x.numpy(), timesteps=10, scale=0.5,
                                    log=lambda name, raw, theta: seen.setdefault(name, (raw, theta)))
    assert set(seen) == set(thresholds)
    for name, (raw, theta) in seen.items():
        assert theta == pytest.approx(raw * 0.5, rel=1e-6)
        assert thresholds[name] == pytest.approx(theta, rel=1e-6)


def test_percentile_balancing_gives_lower_thresholds():
    ann = _trained_like_ann(2)
    x = torch.rand(4, 1, 16, 16).numpy()
    t_max = balance_thresholds(SpikingUNet.from_ann(ann), x, timesteps=20, scale=1.0)
    t_pct = balance_thresholds(SpikingUNet.from_ann(ann), x, timesteps=20, scale=1.0, percentile=99.0)
    assert all(t_pct[k] <= t_max[k] + 1e-6 for k in t_max)
    assert sum(t_pct.values()) < sum(t_max.values())


def test_output_scaling_sum_grows_with_t_mean_does_not():
    ann = _trained_like_ann(3)
    x = torch.rand(2, 1, 16, 16)
    mean_snn = convert(ann, x.numpy(), timesteps=50, scale=0.5)
    sum_snn = SpikingUNet.from_ann(ann, output_scaling="sum")
    for name, value in mean_snn.threshold_dict().items():
        sum_snn.set_threshold(name, value)
    with torch.no_grad():
        m50 = snn_logits(mean_snn, x, 50, make_generator(0)).abs().mean()
        m200 = snn_logits(mean_snn, x, 200, make_generator(0)).abs().mean()
        s50 = snn_logits(sum_snn, x, 50, make_generator(0)).abs().mean()
        s200 = snn_logits(sum_snn, x, 200, make_generator(0)).abs().mean()
    assert float(s200 / s50) == pytest.approx(4.0, rel=0.25)
    assert float(m200 / m50) == pytest.approx(1.0, rel=0.25)


def test_spike_counters():
    ann = _trained_like_ann(4)
    x = torch.rand(3, 1, 16, 16)
    snn = convert(ann, x.numpy(), timesteps=30)
    stats = SpikeStats()
    record = {}
    spikes = poisson_spikes(x, 30, make_generator(0))
    with torch.no_grad():
        snn(spikes, stats=stats, record=record)
    stats.samples, stats.timesteps = 3, 30
    rates = stats.firing_rates()
    for name, s in record.items():
        assert rates[name] == pytest.approx(float(s.mean()), rel=1e-5)
    # the first layer's synaptic operations: every input spike reaches out_channels x (3x3 window) neurons
    ones = torch.ones(1, 1, 3, 3)
    fan = torch.nn.functional.conv2d(spikes.flatten(0, 1), ones, padding=1).sum()
    assert stats.synops["enc0_0"] == pytest.approx(float(fan) * 4, rel=1e-6)
    macs = ann_macs(snn.layers, snn.spec, 16, 16)
    assert macs["enc0_0"] == 1 * 4 * 9 * 16 * 16
    assert macs["enc1_0"] == 4 * 8 * 9 * 8 * 8


def test_predict_slices_deterministic_and_chunk_invariant():
    ann = _trained_like_ann(5)
    x = np.random.default_rng(0).random((5, 1, 16, 16), dtype=np.float32)
    snn = convert(ann, x, timesteps=20)
    a = predict_slices(snn, x, timesteps=17, seed=9, batch_size=5, chunk=4)
    b = predict_slices(snn, x, timesteps=17, seed=9, batch_size=5, chunk=17)
    c = predict_slices(snn, x, timesteps=17, seed=10, batch_size=5, chunk=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (5, 1, 16, 16) and 0 <= a.min() and a.max() <= 1


def test_inference_mode_then_training_on_same_model():
    snn = SpikingUNet(SMALL)
    x = poisson_spikes(torch.rand(2, 1, 16, 16), 3, make_generator(0))
    with torch.inference_mode():
        snn(x)
    snn.train()
    snn.logits(snn(x), 3).sum().backward()  # cached weight scales from inference mode must not leak
    assert all(p.grad is not None for p in snn.weights.values())


def test_scaled_weights_kept_between_steps_and_renewed_when_weights_or_thresholds_change():
    """Inference keeps each layer's threshold-scaled weights across the T forwards of a run; an in-place
    weight update (an optimiser step, load_state_dict), new weights or new thresholds must be seen."""
    torch.manual_seed(0)
    snn = SpikingUNet(SMALL).eval()
    x = poisson_spikes(torch.rand(2, 1, 16, 16), 4, make_generator(0))

    def fresh(model: SpikingUNet) -> torch.Tensor:  # a new model with the same state: nothing cached
        twin = SpikingUNet(SMALL).eval()
        twin.load_state_dict(model.state_dict())
        with torch.no_grad():
            return twin(x)

    with torch.no_grad():
        first, again = snn(x), snn(x)
    assert torch.equal(first, again) and torch.equal(first, fresh(snn))
    name = next(iter(snn.weights))
    with torch.no_grad():
        snn.weights[name].mul_(3.0)  # in place, as an optimiser step
        changed = snn(x)
    assert not torch.equal(changed, first) and torch.equal(changed, fresh(snn))
    state = {k: v.clone() for k, v in snn.state_dict().items()}
    state[f"weights.{name}"] = state[f"weights.{name}"] * -1.0
    snn.load_state_dict(state)
    with torch.no_grad():
        loaded = snn(x)
    assert torch.equal(loaded, fresh(snn)) and not torch.equal(loaded, changed)
    snn.set_threshold(snn.layers[0].name, 0.25)
    with torch.no_grad():
        lowered = snn(x)
    assert torch.equal(lowered, fresh(snn)) and not torch.equal(lowered, loaded)
    with torch.inference_mode():  # weights made in inference mode have no version counter: nothing is kept
        made_here = SpikingUNet(SMALL).eval()
        made_here.load_state_dict(snn.state_dict())
        assert torch.equal(made_here(x), lowered) and torch.equal(made_here(x), lowered)
