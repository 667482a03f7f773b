"""Checkpoints and shipped models: atomic writes, safe loading, model cards and checksums.

A model file is a plain dict of tensors and JSON-like values so that it loads with
``torch.load(..., weights_only=True)``: opening a file never runs code from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from . import DEFAULT_CODING
from .encoding import CODINGS
from .errors import HippoSNNError
from .unet import SpikingUNet, UNet, UNetSpec

FORMAT = "hipposnn-model/1"
MODELS_DIR = Path(__file__).resolve().parent / "models"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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
    return payload


def save_model(model: Model, path: Union[str, Path], meta: Optional[Dict[str, Any]] = None) -> None:
    atomic_torch_save(model_payload(model, meta), Path(path))


def read_payload(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HippoSNNError(f"model file not found: {path}")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HippoSNNError(f"cannot load model file {path}: not a readable HippoSNN model ({reason[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HippoSNNError(f"{path} is not a HippoSNN model file")
    return payload


def model_from_payload(payload: Dict[str, Any], kind: Optional[str] = None) -> Model:
    """Build the ANN or SNN stored in ``payload``; ``kind='ann'`` from an SNN file gives its weights as ANN."""
    spec = UNetSpec.from_dict(payload["spec"])
    stored = payload["kind"]
    kind = kind or stored
    if kind == "snn":
        model: Model = SpikingUNet(spec, output_scaling=payload.get("output_scaling", "mean"))
        for name, value in (payload.get("thresholds") or {}).items():
            model.set_threshold(name, float(value))
        if stored != "snn":
            raise HippoSNNError("this file holds an ANN; convert it first (hipposnn convert)")
    else:
        model = UNet(spec)
    model.weights.load_state_dict(payload["weights"])
    return model


def load_model(path: Union[str, Path], kind: Optional[str] = None) -> Model:
    return model_from_payload(read_payload(path), kind)


def write_card(path: Union[str, Path], card: Dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(card, indent=2, sort_keys=True, default=str))


MODEL_KINDS = ("snn", "ann")


def shipped_name(kind: str, coding: str) -> str:
    return f"hipposnn_{kind}_{coding}.pt"


def default_model_path(kind: str = "snn", coding: Optional[str] = None) -> Path:
    """The shipped model of ``kind`` ('snn' or 'ann') for ``coding`` (default: :data:`DEFAULT_CODING`).

    Both codings are shipped for both kinds because a model only works with the input normalisation
    and spike coding it was trained with.
    """
    if kind not in MODEL_KINDS:
        raise HippoSNNError(f"unknown model {kind!r} (choose snn or ann)")
    coding = coding or DEFAULT_CODING
    if coding not in CODINGS:
        raise HippoSNNError(f"unknown spike coding {coding!r} (choose binary or ternary)")
    path = MODELS_DIR / shipped_name(kind, coding)
    if not path.is_file():
        raise HippoSNNError(f"the shipped {kind.upper()} model is missing ({path}); pass --checkpoint FILE")
    return path
