"""Checkpoints and shipped models: atomic writes, safe loading, model cards and checksums.

A model file is a plain dict of tensors and JSON-like values so that it loads with
``torch.load(..., weights_only=True)``: opening a file never runs code from it.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from . import DEFAULT_CODING
from .atomicio import atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported for training, data, recipe
from .encoding import CODINGS
from .errors import HippoSNNError
from .options import DEFAULT_SNN, MODEL_CHOICES, default_coding, model_kind, resolve_choice  # noqa: F401
from .unet import SpikingUNet, UNet, UNetSpec

FORMAT = "hipposnn-model/1"
MODELS_DIR = Path(__file__).resolve().parent / "models"


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


Model = Union[UNet, SpikingUNet]


def model_payload(model: Model, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The dict stored in a model file: weights, architecture and (SNN) thresholds."""
    payload: Dict[str, Any] = {
        "format": FORMAT,
        "kind": "snn" if isinstance(model, SpikingUNet) else "ann",
        "spec": model.spec.to_dict(),
        "weights": {k: v.detach().cpu().clone() for k, v in model.weights.items()},
        "meta": meta or {},
    }
    if isinstance(model, SpikingUNet):
        payload["thresholds"] = model.threshold_dict()
        payload["output_scaling"] = model.output_scaling
        payload["initial_membrane"] = model.initial_membrane
        payload["reset"] = model.reset
        payload["input_encoding"] = model.input_encoding
    elif model.spec.quant_levels > 0:
        payload["clips"] = model.clip_dict()
    return payload


def save_model(model: Model, path: Union[str, Path], meta: Optional[Dict[str, Any]] = None) -> None:
    atomic_torch_save(model_payload(model, meta), Path(path))


def card_path(path: Union[str, Path]) -> Path:
    """The model card (JSON) that describes the model file ``path``: same name, ``.json``."""
    return Path(path).with_suffix(".json")


def is_shipped(path: Union[str, Path]) -> bool:
    """Whether ``path`` is one of the model files shipped in :data:`MODELS_DIR`."""
    return Path(path).resolve().parent == MODELS_DIR.resolve()


def _check_shipped(path: Path, data: bytes) -> None:
    """A shipped model must have the SHA-256 its card records: a damaged or altered file is refused."""
    card = card_path(path)
    try:
        expected = json.loads(card.read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError):
        expected = None
    if not expected:
        raise HippoSNNError(f"the card of the shipped model {path.name} ({card.name}) is missing or has no "
                            "sha256: reinstall hipposnn")
    if hashlib.sha256(data).hexdigest() != expected:
        raise HippoSNNError(f"the shipped model {path.name} does not match the SHA-256 in its card "
                            "(damaged or modified file): reinstall hipposnn")


def read_payload(path: Union[str, Path], verify: bool = True) -> Dict[str, Any]:
    """Read a model file safely (``weights_only``); a shipped model is checked against its card first.

    ``verify=False`` skips that check (only for the tool that writes new shipped models and their cards).
    """
    path = Path(path)
    if not path.is_file():
        raise HippoSNNError(f"model file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HippoSNNError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if verify and is_shipped(path):
        _check_shipped(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HippoSNNError(f"cannot load model file {path}: not a readable HippoSNN model ({reason[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HippoSNNError(f"{path} is not a HippoSNN model file")
    return payload


def _mismatch(exc: BaseException) -> str:
    """One line out of a ``load_state_dict`` / spec error (they list every key on its own line)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        text = f"missing entry {text}"
    return text[:200] + ("..." if len(text) > 200 else "")


def model_from_payload(payload: Dict[str, Any], kind: Optional[str] = None, source: str = "") -> Model:
    """Build the ANN or SNN stored in ``payload``; ``kind='ann'`` from an SNN file gives its weights as ANN.

    A payload whose architecture (spec), weights and thresholds do not fit together is a user error
    (:class:`HippoSNNError`, one line), not a traceback.
    """
    where = f"model file {source}" if source else "model file"
    stored = payload.get("kind")
    if stored not in MODEL_KINDS:
        raise HippoSNNError(f"{where} holds an unknown model kind {stored!r}")
    kind = kind or stored
    if kind == "snn" and stored != "snn":
        raise HippoSNNError("this file holds an ANN; convert it first (hipposnn convert)")
    try:
        spec = UNetSpec.from_dict(payload["spec"])
        if kind == "snn":
            model: Model = SpikingUNet(
                spec, output_scaling=payload.get("output_scaling", "mean"),
                initial_membrane=float(payload.get("initial_membrane", 0.0)), reset=payload.get("reset", "subtract"),
                input_encoding=payload.get("input_encoding", "poisson"),
            )
            for name, value in (payload.get("thresholds") or {}).items():
                model.set_threshold(name, float(value))
        else:
            model = UNet(spec)
            if spec.quant_levels > 0:
                # an SNN file read as ANN: its thresholds are the clips (hipposnn.quant)
                clips = payload["clips"] if stored == "ann" else payload["thresholds"]
                if set(clips) != set(model.clips):
                    raise ValueError(f"clips for {sorted(clips)}, expected {sorted(model.clips)}")
                model.set_clips({name: float(value) for name, value in clips.items()})
        model.weights.load_state_dict(payload["weights"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise HippoSNNError(f"{where} is inconsistent: its weights do not match its architecture "
                            f"({_mismatch(exc)})") from None
    return model


def load_model(path: Union[str, Path], kind: Optional[str] = None) -> Model:
    return model_from_payload(read_payload(path), kind, source=str(path))


def write_card(path: Union[str, Path], card: Dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(card, indent=2, sort_keys=True, default=str))


MODEL_KINDS = ("snn", "ann")
_FILE_STEMS = {"snn-t32": "hipposnn_snn", "snn-t8": "hipposnn_snn_t8", "ann": "hipposnn_ann"}


def shipped_name(kind: str, coding: str) -> str:
    """File name of the shipped model ``kind`` (a :data:`MODEL_CHOICES` name) for ``coding``."""
    return f"{_FILE_STEMS[resolve_choice(kind)]}_{coding}.pt"


def default_model_path(kind: str = "snn", coding: Optional[str] = None, roi: object = None) -> Path:
    """The shipped model ``kind`` (one of :data:`MODEL_CHOICES`) for ``coding`` (default: :data:`DEFAULT_CODING`).

    Every model is shipped in both codings because a model only works with the input normalisation and
    spike coding it was trained with. ``roi`` says which SNN "snn" stands for (:func:`resolve_choice`:
    the T = 8 SNN on whole-brain scans, the T = 32 SNN on crops and where no scan is segmented).
    """
    variant = resolve_choice(kind, roi)
    coding = coding or DEFAULT_CODING
    if coding not in CODINGS:
        raise HippoSNNError(f"unknown spike coding {coding!r} (choose binary or ternary)")
    path = MODELS_DIR / shipped_name(variant, coding)
    if not path.is_file():
        raise HippoSNNError(f"the shipped {variant.upper()} model is missing ({path}); pass --checkpoint FILE")
    return path


def chosen_model_path(kind: str = "snn", checkpoint: Optional[str] = None, coding: Optional[str] = None,
                      roi: object = "auto") -> Path:
    """The file a segmentation run with these settings reads: ``checkpoint``, else the shipped model of
    the user's coding, else of :func:`hipposnn.options.default_coding` for this input."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    return default_model_path(kind, coding or default_coding(kind, roi), roi)
