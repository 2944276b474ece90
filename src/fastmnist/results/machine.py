"""The machine a figure was measured on.

The project's own machines differ from day to day (AVX2 only, AVX-512 with BF16, AMX), so every record
carries enough to tell whether two figures are comparable: CPU, the vector ISA PyTorch dispatched to,
bf16 support, threads, versions, the GPU where one ran, and the best matmul rates in each precision.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fastmnist.training.device import cpu_feature, native_bf16, sync


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


def machine_info(device: torch.device, peaks: bool = False) -> dict:
    """What the figures were measured on: enough to tell whether two results are comparable. With `peaks`,
    also the best matmul rate here in fp32 and, where the hardware multiplies it natively, in bf16: the
    floors a run's FLOPs are held to, each in the precision it ran."""
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
    if peaks:
        info["matmul_gflops_fp32"] = matmul_gflops(device, torch.float32)
        if native_bf16(device):
            info["matmul_gflops_bf16"] = matmul_gflops(device, torch.bfloat16)
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): recorded at the start and end of
    every timed command, since two processes on 2 cores make every figure ~40x slower."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_span(start: list[float] | None) -> dict:
    """The load average when a command (or a ladder's stage) started and now, as every record keeps it."""
    return {"start": start, "end": load_average()}


class BusyMachineWarning(UserWarning):
    """The machine was already loaded beyond its cores when runs started: the figures will be slow."""


def busy() -> str | None:
    """A one-line warning when the machine is already loaded beyond its cores, else None."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is None or load[0] <= cores:
        return None
    return (f"this machine is busy (load {load[0]:.1f} on {cores} cores): timings will be slow and noisy; "
            f"workers sharing a machine should split its cores (--threads 1 each on 2 cores)")


def describe(info: dict) -> str:
    """One line: the processor that ran, its ISA and threads; enough to tell two machines apart."""
    where = info["gpu"] if info["device"] == "cuda" else info["cpu_model"]
    return f"{info['device']}: {where}, {info['vector_isa']}, {info['torch_threads']} threads"


def peak_gflops(machine: dict, precision: str) -> float | None:
    """The machine's best matmul rate in `precision` (fp32 or bf16), when it was measured."""
    return machine.get(f"matmul_gflops_{precision}")


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of a large matmul in `dtype` here: the practical ceiling a run's FLOPs are held to.
    Measured once per process for each device, precision and thread count. On a CPU 1024-square matrices,
    best of 10, give the rate 2048-square ones do (within 3%, fp32 and bf16, 1 and 2 threads, AMD EPYC Zen 4)
    in a quarter of the time (0.1-0.3 s), which every bench, sweep and ladder worker pays at its start."""
    size = 1024 if device.type == "cpu" else 2048
    return measured_gflops(device.type, device.index, dtype, torch.get_num_threads(), size)


@functools.lru_cache(maxsize=None)
def measured_gflops(kind: str, index: int | None, dtype: torch.dtype, threads: int, size: int,
                    repeats: int = 10) -> float:
    device = torch.device(kind, index) if index is not None else torch.device(kind)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9
