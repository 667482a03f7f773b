"""hipposnn.options: each user-option rule in one place, shared by the CLI, the API and the Slicer module."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hipposnn.errors import HippoSNNError
from hipposnn.options import AUTO_ROI_SHAPE, THRESHOLD_RANGE, resolve_device, validate_threshold


def test_threshold_rule_is_strictly_inside_0_1_everywhere():
    from hipposnn.inference import SegmentationSettings

    for bad in (0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), "x", None):
        with pytest.raises(HippoSNNError):
            validate_threshold(bad)
        if not isinstance(bad, str) and bad is not None:
            with pytest.raises(HippoSNNError):
                SegmentationSettings(threshold=bad).validate()
    assert validate_threshold("0.5") == 0.5
    low, high = THRESHOLD_RANGE
    assert validate_threshold(low) == low and validate_threshold(high) == high  # the UI's closed range is valid


def test_device_rule_cuda_missing_is_an_error_not_a_fallback():
    assert resolve_device("auto", lambda: False) == "cpu"
    assert resolve_device(None, lambda: True) == "cuda"
    assert resolve_device("cpu", lambda: True) == "cpu"
    assert resolve_device("cuda:1", lambda: True) == "cuda:1"
    for wanted in ("cuda", "cuda:0"):
        with pytest.raises(HippoSNNError, match="CUDA was requested"):
            resolve_device(wanted, lambda: False)
    with pytest.raises(HippoSNNError, match="Unknown device"):
        resolve_device("tpu", lambda: True)


def test_inference_uses_the_options_rules():
    from hipposnn import inference

    assert inference.AUTO_ROI_SHAPE is AUTO_ROI_SHAPE
    if not __import__("torch").cuda.is_available():
        with pytest.raises(HippoSNNError, match="CUDA was requested"):
            inference.resolve_device("cuda")


def test_options_imports_neither_torch_nor_numpy():
    code = "import sys; import hipposnn.options; print(sorted({'torch', 'numpy', 'nibabel'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_command_line_threshold_uses_the_same_rule():
    import argparse

    from hipposnn.argtypes import probability

    assert probability("0.3") == 0.3
    for bad in ("0", "1", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="threshold"):
            probability(bad)


def test_model_names_resolve_to_shipped_files_with_their_own_timesteps():
    from hipposnn.options import (
        DEFAULT_SNN,
        MODEL_CHOICES,
        MODEL_TIMESTEPS,
        WHOLE_BRAIN_SNN,
        model_kind,
        resolve_choice,
    )
    from hipposnn.weights import default_model_path, read_payload

    # "snn" is the T = 32 SNN on crops and where no scan is segmented, the T = 8 SNN on whole brains
    assert resolve_choice("snn") == resolve_choice("snn", "crop") == DEFAULT_SNN == "snn-t32"
    assert resolve_choice("snn", "auto") == resolve_choice("snn", (10.0, -20.0, -15.0)) == WHOLE_BRAIN_SNN == "snn-t8"
    assert resolve_choice("snn-t32", "auto") == "snn-t32" and resolve_choice("ann", "auto") == "ann"
    assert [model_kind(c) for c in MODEL_CHOICES] == ["snn", "snn", "snn", "ann"]
    assert default_model_path("snn") == default_model_path(DEFAULT_SNN)
    assert default_model_path("snn", "binary", roi="auto") == default_model_path(WHOLE_BRAIN_SNN, "binary")
    for name, steps in MODEL_TIMESTEPS.items():
        for coding in ("binary", "ternary"):  # every SNN is shipped in both codings
            meta = read_payload(default_model_path(name, coding), verify=False)["meta"]
            assert int(meta["timesteps"]) == steps, name  # the UI's table says what the file says
            assert meta["coding"] == coding
    with pytest.raises(HippoSNNError, match="unknown model 'snn-t4'"):
        resolve_choice("snn-t4")


def test_default_coding_is_binary_for_the_snns_on_whole_brains_only():
    """The shipped default per kind of input (docs/segmentation.md): the site-robust binary SNNs on
    whole-brain scans ("snn" = the T = 8 one there), ternary on crops; the ANN keeps DEFAULT_CODING."""
    from hipposnn import DEFAULT_CODING
    from hipposnn.options import default_coding, interface_coding

    assert default_coding("snn") == default_coding("snn-t32", (10.0, -20.0, -15.0)) == "binary"
    assert default_coding("snn", "crop") == default_coding("snn-t32", "crop") == DEFAULT_CODING == "ternary"
    assert default_coding("snn-t8") == "binary" and default_coding("snn-t8", "crop") == "ternary"
    assert default_coding("ann") == default_coding("ann", "crop") == "ternary"
    from hipposnn.weights import chosen_model_path

    assert chosen_model_path("snn", coding="ternary").name == "hipposnn_snn_t8_ternary.pt"  # the user's choice wins
    assert chosen_model_path("snn").name == "hipposnn_snn_t8_binary.pt"  # the file a whole-brain run reads
    assert chosen_model_path("snn", roi="crop").name == "hipposnn_snn_ternary.pt"
    assert chosen_model_path("snn-t32").name == "hipposnn_snn_binary.pt"
    assert chosen_model_path("snn-t8", roi="crop").name == "hipposnn_snn_t8_ternary.pt"
    assert chosen_model_path("snn", checkpoint="~/my.pt", coding="binary").name == "my.pt"
    assert interface_coding("auto") is None and interface_coding("auto", concrete=True) == DEFAULT_CODING
    assert interface_coding("binary", concrete=True) == "binary"
    with pytest.raises(HippoSNNError, match="unknown coding"):
        interface_coding("quaternary")


def test_ternary_snn_on_a_whole_brain_scan_comes_with_a_notice():
    """A shipped ternary SNN asked for on a whole-brain scan runs, with a warning that says the binary default is
    ahead there; crops, the ANN, the binary SNNs and a user's own file get none."""
    from hipposnn.options import coding_notice

    for choice in ("snn", "snn-t8", "snn-t32"):
        for roi in ("auto", (10.0, -20.0, -15.0)):
            assert "binary" in coding_notice(choice, "ternary", roi)
        assert coding_notice(choice, "ternary", "crop") is None
        assert coding_notice(choice, "binary", "auto") is None
        assert coding_notice(choice, "ternary", "auto", custom=True) is None
    assert coding_notice("ann", "ternary", "auto") is None
    assert coding_notice("snn", None, "auto") is None
