"""The device runs use: which one, its clock, its threads, and whether it multiplies bf16 natively."""

from __future__ import annotations

import contextlib

import torch

from fastmnist.errors import FastMnistError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FastMnistError("--device cuda asked for, but PyTorch sees no CUDA device (try --device cpu)")
    if name not in ("cpu", "cuda"):
        raise FastMnistError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading means what it says."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def cpu_threads(count: int):
    """PyTorch's intra-op CPU threads set to `count` inside the block (0: left as they are), restored after."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count:
            torch.set_num_threads(before)


def cpu_feature(name: str) -> bool:
    """Ask PyTorch's own CPU probe. The one private call into torch.cpu (it has no public feature query);
    tested with torch 2.13 and 2.14, the range pyproject.toml admits; absent means unsupported."""
    probe = getattr(torch.cpu, f"_is_{name}_supported", None)
    return bool(probe and probe())


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix maths runs in hardware (CUDA Ampere+, or a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_feature("avx512_bf16") or cpu_feature("amx_tile")
