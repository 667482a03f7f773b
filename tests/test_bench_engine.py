"""bench/bench_engine.py and bench/peers.py: the peers run our dynamics, the bench feeds real slices.

A speed comparison is only meaningful when every engine computes the same network: these tests pin
that the peers reproduce a start potential (``initial_membrane``) and both resets spike for spike,
that the worker processes rebuild the model with its dynamics and exact thresholds, and that
``--model``/``--data`` give real input spikes. Small networks and few timesteps: seconds each.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from hipposnn.unet import SpikingUNet, UNetSpec

BENCH = Path(__file__).resolve().parents[1] / "bench"
SHIPPED = Path(__file__).resolve().parents[1] / "HippoSNN" / "hipposnn" / "models" / "hipposnn_snn_ternary.pt"
SMALL = UNetSpec(in_channels=3, channels=(4, 8), dropout=0.0)


@pytest.fixture(scope="module")
def be():
    """bench_engine as a module (it puts bench/ on sys.path itself, for ``peers``)."""
    if "bench_engine" in sys.modules:
        return sys.modules["bench_engine"]
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH / "bench_engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engine"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def available_peers(*names: str) -> list:
    """The peers among ``names`` whose library is installed (they are bench-only, not dependencies)."""
    found = []
    for name in names:
        module = "snntorch" if name.startswith("snntorch") else "spikingjelly"
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return found


def test_state_file_keeps_dynamics_and_exact_thresholds(be, tmp_path):
    """The workers rebuild the model from this file: thresholds (the clips of a clip-converted model)
    as exact floats, the start potential, the reset and the output scaling must all survive."""
    model = SpikingUNet(UNetSpec(in_channels=3, channels=(4, 8), dropout=0.0, quant_levels=8),
                        initial_membrane=0.5, reset="zero", output_scaling="sum", gamma=0.4)
    for i, name in enumerate(model.threshold_dict()):
        model.set_threshold(name, 0.1 + 1.0 / 3.0 * (i + 1))  # not representable in float32
    path = str(tmp_path / "state.pt")
    be.save_state(model, path)
    back = be.load_state(path)
    assert back.threshold_dict() == model.threshold_dict()
    assert (back.initial_membrane, back.reset, back.output_scaling, back.gamma) == (0.5, "zero", "sum", 0.4)
    assert back.spec == model.spec
    for name, w in model.weights.items():
        assert torch.equal(back.weights[name], w)


def test_default_chunks_reach_T(be):
    assert be.default_chunks(8) == [1, 2, 4, 8]
    assert be.default_chunks(32) == [1, 2, 4, 8, 16, 25, 32]
    assert be.default_chunks(200) == [1, 2, 4, 8, 16, 25, 200]
    assert be.default_chunks(1) == [1]


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_peers_match_ours_with_start_potential(be, reset):
    """initial_membrane 0.5 (clip conversion's shift): identical float64 spikes in every peer, and
    SpikingJelly's BPTT gradients equal to ours (the soft reset's up to our 8-bit surrogate code)."""
    peers = available_peers("sj-s", "sj-m", "sj-m-ckpt-bit", "snntorch")
    if not peers:
        pytest.skip("neither spikingjelly nor snntorch is installed (bench-only peers)")
    model = be.make_model(1, 4, spec=SMALL, initial_membrane=0.5, reset=reset)
    source = be.InputSource(channels=3, coding="ternary")  # signed input spikes, as the shipped models see
    eq = be.equality(model, 6, 2, 5, torch.float64, peers, source)
    assert eq["firing_rate"] > 0.01
    for name, row in eq["peers"].items():
        assert row["identical_spikes"], (name, row)
        assert row["rel_diff"] < 1e-12, (name, row)
        if name.startswith("sj"):
            assert row["grad_cosine"] > 0.999 and row["grad_rel_l2"] < (2e-2 if reset == "subtract" else 1e-9), row
    # not vacuous: the start potential changes what the network computes
    spikes, _ = source.make(6, 2, 5, torch.float64)
    with torch.inference_mode():
        shifted = be.load_model_copy(model).to(torch.float64)(spikes)
        plain = be.load_model_copy(model).to(torch.float64)
        plain.initial_membrane = 0.0
        assert not torch.equal(shifted, plain(spikes))


@pytest.mark.shared
def test_shipped_model_on_real_slices(be, shared_data, tmp_path):
    """--model (shipped ternary SNN) with --data: real slices coded for the model, their labels as target."""
    msd = shared_data / "msd_hippocampus"
    if not msd.is_dir():
        pytest.skip(f"MSD hippocampus data not found at {msd}")
    model, coding = be.load_bench_model(str(SHIPPED))
    assert coding == "ternary" and model.spec.context == 1 and model.spec.dropout == 0.0
    assert (model.initial_membrane, model.reset) == (0.0, "subtract")
    source = be.real_slices(str(msd), 4, 0, coding, model.spec.context)
    assert source.images.shape == (4, 3, 56, 48) and len(source.names) == 4
    assert source.describe()["slices"] == be.real_slices(str(msd), 4, 0, coding, 1).names  # seeded
    spikes, target = source.make(3, 4, 11)
    assert spikes.shape == (3, 4, 3, 56, 48)
    assert set(torch.unique(spikes).tolist()) == {-1.0, 0.0, 1.0}
    assert target.shape == (4, 1, 56, 48) and set(torch.unique(target).tolist()) == {0.0, 1.0}
    assert bool((target.flatten(1).amax(1) > 0).all())  # slices with hippocampus come first

    peers = available_peers("sj-m")
    out = tmp_path / "eq.json"
    argv = ["--quick", "--model", str(SHIPPED), "--data", str(msd), "--eq-steps", "8", "--eq-batch", "1", "--no-timing",
            "--json", str(out)] + (["--peers", *peers] if peers else ["--no-equality"])
    assert be.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["inputs"]["kind"] == "real" and record["inputs"]["coding"] == "ternary"
    assert record["model"]["in_channels"] == 3
    for eq in record["equality"]:
        if eq["dtype"] == "float64":
            assert all(row["identical_spikes"] for row in eq["peers"].values())


def test_training_report_compares_each_allocator_and_each_peers_lowest_memory(be):
    """Every engine runs training under both allocators: ours is compared with the fastest peer run and
    with the lowest-memory configuration of that peer (and of any peer), under each of its allocators."""
    def run(engine, allocator, seconds, mb):
        return {"engine": engine, "task": "train", "chunk": None, "allocator": allocator, "best_s": seconds,
                "median_s": seconds, "peak_mb": mb}

    results = [run("ours", "default", 0.55, 790), run("ours", "frugal", 0.70, 330),
               run("sj-s-cl", "default", 0.86, 1184), run("sj-s-cl", "frugal", 1.40, 860),
               run("snntorch", "default", 1.18, 893)]
    text = be.report(results, isolated=True)
    assert "training, ours +frugal: 0.70 s vs the fastest peer sj-s-cl 0.86 s (1.23x): met" in text
    assert "memory 330 MB vs the fastest peer's lowest-memory configuration (sj-s-cl +frugal, 860 MB): 0.38x" in text
    assert "training, ours: 0.55 s" in text and "memory 790 MB vs the lowest of any peer (sj-s-cl +frugal" in text
    # like with like in the per-run table: a peer under the frugal allocator against ours under it
    assert "| train | sj-s-cl +frugal | - | 1.40 | 1.40 | 860 | 2.00x | 0.38x |" in text
    best = be.best_configurations(results, isolated=True)
    assert "| train | sj-s | fastest | channels-last, default allocator | 0.86 | 1184 | 1.56x | 0.67x |" in best
    assert "| train | sj-s | lowest memory | channels-last, frugal allocator | 1.40 | 860 | 2.00x | 0.38x |" in best


def test_a_direct_input_model_gets_its_image_in_every_engine(be, tmp_path):
    """A direct-input model (the whole-brain default) is benchmarked on its own input: the image at every
    step, the same tensor for ours and the peers, which then agree spike for spike."""
    torch.manual_seed(3)
    model = be.make_model(1, 4, spec=SMALL, initial_membrane=0.5)
    model.input_encoding = "direct"
    source = be.InputSource(channels=3, coding="binary", encoding="direct")
    drive, _ = source.make(5, 2, 7, torch.float64)
    assert drive.shape == (5, 2, 3, 56, 48) and drive.is_contiguous()  # every engine convolves every step
    assert all(torch.equal(drive[t], drive[0]) for t in range(5))
    assert len(torch.unique(drive)) > 3  # the image itself, not spikes
    path = str(tmp_path / "inputs.pt")
    source.save(path)
    assert be.InputSource.load(path).encoding == "direct"  # the workers get the same input
    assert be.InputSource(channels=3).make(5, 2, 7)[0].unique().tolist() == [0.0, 1.0]  # the default: spikes
    peers = available_peers("sj-s", "snntorch")
    if not peers:
        pytest.skip("neither spikingjelly nor snntorch is installed (bench-only peers)")
    eq = be.equality(model, 5, 2, 7, torch.float64, peers, source)
    assert eq["firing_rate"] > 0.01
    assert all(row["identical_spikes"] and row["rel_diff"] < 1e-12 for row in eq["peers"].values()), eq["peers"]
