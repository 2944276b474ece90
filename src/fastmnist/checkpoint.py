"""Trained weights on disk: safetensors (no pickle), with the architecture in the file's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fastmnist import __version__
from fastmnist.data import atomic_write
from fastmnist.errors import FastMnistError
from fastmnist.models import ConvNet, NetSpec


def save_model(path: str | Path, model: torch.nn.Module, info: dict) -> None:
    """Atomically write the weights; `info` (recipe, seed, accuracy, ...) goes into the metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "fastmnist", "fastmnist_version": __version__, "net": model.spec.to_json(),
                "info": json.dumps(info, default=str)}
    blob = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda f: f.write(blob))


def load_model(path: str | Path) -> tuple[ConvNet, dict]:
    """The model and its info; refuses files that are missing, truncated or of another architecture."""
    path = Path(path)
    if not path.is_file():
        raise FastMnistError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FastMnistError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from None
    if metadata.get("format") != "fastmnist" or "net" not in metadata:
        raise FastMnistError(f"{path}: not a fastmnist model (no architecture in its metadata)")
    try:
        spec = NetSpec.from_json(metadata["net"])
        model = ConvNet(spec)
        model.load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise FastMnistError(f"{path}: weights do not match the architecture in its metadata ({first})") from None
    model.eval()
    return model, json.loads(metadata.get("info", "{}"))
