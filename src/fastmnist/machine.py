"""The machine a figure was measured on, the device runs use, and where a result came from.

The project's own machines differ from day to day (AVX2 only, AVX-512 with BF16, AMX), so every record
carries enough to tell whether two figures are comparable: CPU, the vector ISA PyTorch dispatched to,
bf16 support, threads, versions, and the code and command that produced it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastmnist import __version__
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
    """Ask PyTorch's own CPU probe (private API, so absent means unsupported)."""
    probe = getattr(torch.cpu, f"_is_{name}_supported", None)
    return bool(probe and probe())


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix maths runs in hardware (CUDA Ampere+, or a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_feature("avx512_bf16") or cpu_feature("amx_tile")


def vector_isa() -> str:
    """The kernels PyTorch dispatches to (its ATen capability), plus the bf16 units oneDNN can use."""
    isa = torch.backends.cpu.get_cpu_capability()
    extras = [name for name, feature in (("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile"))
              if cpu_feature(feature)]
    return "+".join([isa, *extras])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """What the figures were measured on: enough to tell whether two results are comparable."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "vector_isa": vector_isa(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": cpu_feature("avx512_bf16"),
        "amx": cpu_feature("amx_tile"),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe(info: dict) -> str:
    """One line: the processor that ran, its ISA and threads; enough to tell two machines apart."""
    where = info["gpu"] if info["device"] == "cuda" else info["cpu_model"]
    return f"{info['device']}: {where}, {info['vector_isa']}, {info['torch_threads']} threads"


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a large matmul here: the practical ceiling our training FLOPs are held to."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """The commit of the checkout fastmnist runs from, and whether its tree had changes; {} when installed
    from elsewhere (a wheel) or git is absent. Read once, when the process starts (see the end of this
    module): that is the code it runs, whatever happens to the tree later."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def provenance() -> dict:
    """Where a result came from: fastmnist's version, its commit, and the exact command line."""
    command = shlex.join(["fastmnist", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("fastmnist", "cli.py") \
        else shlex.join(sys.argv)
    return {"fastmnist_version": __version__, **git_state(), "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


git_state()
