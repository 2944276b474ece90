"""Trained weights on disk: safetensors (no pickle), with the architecture in the file's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fastmnist.version import __version__
from fastmnist.errors import FastMnistError
from fastmnist.training.nets import NetSpec, build_net, check_net
from fastmnist.results.output import write_bytes
from fastmnist.recipes.userfile import load_object, reference_of


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding NaN or inf: such a model predicts nonsense with confidence NaN."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_model(path: str | Path, model: torch.nn.Module, info: dict, net: NetSpec | None = None) -> None:
    """Atomically write the weights; the network (our spec, or the import path of a user's factory) and
    `info` (recipe, seed, accuracy, ...) go into the metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    bad = non_finite(tensors)
    if bad:
        raise FastMnistError(f"not saving {path}: the weights hold NaN/inf ({', '.join(bad)}); the run diverged")
    net = net if net is not None else model.spec
    described = {"net": net.to_json()} if isinstance(net, NetSpec) else {"factory": reference_of(net)}
    metadata = {"format": "fastmnist", "fastmnist_version": __version__, **described,
                "info": json.dumps(info, default=str)}
    write_bytes(path, save(tensors, metadata=metadata))


def shape_mismatches(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    lines = [f"{k} is {tuple(tensors[k].shape)}, expected {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tensors[k].shape != v.shape]
    lines += [f"{k} missing" for k in expected if k not in tensors]
    lines += [f"{k} unexpected" for k in tensors if k not in expected]
    return lines


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The model and its info; refuses files that are missing, truncated, of another architecture, or
    whose weights are not finite."""
    path = Path(path)
    if not path.is_file():
        raise FastMnistError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FastMnistError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from None
    if metadata.get("format") != "fastmnist" or not ({"net", "factory"} & set(metadata)):
        raise FastMnistError(f"{path}: not a fastmnist model (no architecture in its metadata)")
    try:
        net = NetSpec.from_json(metadata["net"]) if "net" in metadata else None
        info = json.loads(metadata.get("info", "{}"))
        if not isinstance(info, dict):
            raise ValueError("info is not a JSON object")
    except (TypeError, ValueError) as exc:
        raise FastMnistError(f"{path}: metadata is not valid fastmnist JSON ({exc})") from None
    if net is None:
        try:
            net = load_object(metadata["factory"])
        except FastMnistError as exc:
            raise FastMnistError(f"{path}: its network factory cannot be loaded: {exc}") from None
        check_net(net)
    model = build_net(net)
    mismatches = shape_mismatches(model, tensors)
    if mismatches and "factory" in metadata and "net" not in metadata:
        where = metadata["factory"].rpartition(":")[0]
        raise FastMnistError(f"{path}: its network file {where} no longer builds the network these weights were "
                             f"saved from (edited since?): {'; '.join(mismatches[:3])}")
    if mismatches:
        raise FastMnistError(f"{path}: weights do not match the architecture in its metadata: "
                             f"{'; '.join(mismatches[:3])}")
    bad = non_finite(tensors)
    if bad:
        raise FastMnistError(f"{path}: the weights hold NaN/inf ({', '.join(bad)}); retrain the model")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, info
