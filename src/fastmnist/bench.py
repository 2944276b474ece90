"""Benchmarks: recipes run interleaved (A B A B ...) in one warm process, and honest statistics of them."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fastmnist import __version__
from fastmnist.data import Mnist, write_text
from fastmnist.models import flops_per_image
from fastmnist.recipes import Recipe
from fastmnist.train import PreparedData, cpu_feature, sync, RunResult, effective_precision, prepare, preparation_key, train_run


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """What the figures were measured on: enough to tell whether two results are comparable."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": cpu_feature("avx512_bf16"),
        "amx": cpu_feature("amx_tile"),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "fastmnist_version": __version__,
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


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


class Preparer:
    """Prepares each data layout once per process; recipes that share one share the tensors."""

    def __init__(self, mnist: Mnist, device: torch.device):
        self.mnist, self.device, self.prepared = mnist, device, {}

    def __call__(self, recipe: Recipe) -> PreparedData:
        key = preparation_key(recipe)
        if key not in self.prepared:
            self.prepared[key] = prepare(self.mnist, recipe, self.device)
        return self.prepared[key]


def warm_up(recipe: Recipe, data: PreparedData) -> float:
    """An untimed short run: loads kernels, fills allocator caches, compiles. Returns its seconds."""
    start = time.perf_counter()
    train_run(recipe, data, seed=0, warmup=True)
    return time.perf_counter() - start


def summarize(runs: list[RunResult], recipe: Recipe) -> dict:
    acc = np.array([r.accuracy for r in runs])
    secs = np.array([r.seconds for r in runs])
    train_flops, infer_flops = flops_per_image(recipe.net)
    evaluations = np.mean([len(r.epoch_accuracies) for r in runs])
    flops = np.mean([r.images_seen for r in runs]) * train_flops + evaluations * 10000 * infer_flops
    return {
        "recipe": recipe.name,
        "runs": len(runs),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "accuracy_min": float(acc.min()),
        "share_at_least_99": float((acc >= 99.0).mean()),
        "diverged": int(sum(r.diverged for r in runs)),
        "seconds_mean": float(secs.mean()),
        "seconds_std": float(secs.std(ddof=1)) if len(secs) > 1 else 0.0,
        "seconds_median": float(np.median(secs)),
        "epochs_mean": float(np.mean([r.epochs for r in runs])),
        "tflop_per_run": float(flops / 1e12),
        "gflop_per_s": float(flops / 1e9 / np.median(secs)),
        "reaches_99": bool(acc.mean() >= 99.0),
    }


def paired_ratios(first: list[RunResult], other: list[RunResult]) -> float:
    """Median over seeds of other/first time: each pair ran back to back, so load changes cancel."""
    return float(statistics.median(b.seconds / a.seconds for a, b in zip(first, other)))


def benchmark(recipes: list[Recipe], runs: int, mnist: Mnist, device: torch.device,
              seeds: list[int] | None = None, progress: bool = True, on_run=None) -> dict:
    """Each recipe warmed up once, then seeds in order, recipes interleaved within each seed."""
    seeds = list(range(runs)) if seeds is None else seeds
    preparer = Preparer(mnist, device)
    warmups = {r.name: warm_up(r, preparer(r)) for r in recipes}
    results: dict[str, list[RunResult]] = {r.name: [] for r in recipes}
    bar = tqdm(total=len(seeds) * len(recipes), desc="bench", unit="run", disable=not progress, leave=False)
    for seed in seeds:
        for recipe in recipes:
            result = train_run(recipe, preparer(recipe), seed)
            results[recipe.name].append(result)
            bar.set_postfix_str(f"{recipe.name} seed {seed}: {result.accuracy:.2f}% {result.seconds:.2f}s")
            bar.update()
            if on_run:
                on_run(result)
    bar.close()
    summary = [summarize(results[r.name], r) for r in recipes]
    first = results[recipes[0].name]
    for row, recipe in zip(summary, recipes):
        row["median_time_ratio_vs_first"] = paired_ratios(first, results[recipe.name])
        row["precision"] = effective_precision(recipe, device)
    return {
        "kind": "bench",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(device), "matmul_gflops_fp32": matmul_gflops(device)},
        "timing": {
            "includes": "model creation, training, test evaluation (as each recipe says)",
            "excludes": "data loading/verification, preparation into tensors, one short warm-up run per recipe",
            "data_load_seconds": mnist.load_seconds,
            "prepare_seconds": {str(k): v.seconds for k, v in preparer.prepared.items()},
            "warmup_seconds": warmups,
        },
        "recipes": {r.name: recipe_record(r) for r in recipes},
        "summary": summary,
        "runs": [r.record() for name in results for r in results[name]],
    }


def recipe_record(recipe: Recipe) -> dict:
    record = asdict(recipe)
    record["changes"] = list(recipe.changes)
    return record


def format_table(report: dict) -> str:
    width = max(12, *(len(row["recipe"]) for row in report["summary"]))
    lines = [f"{'recipe':<{width}} {'runs':>4} {'accuracy %':>15} {'>=99%':>6} {'seconds':>15} {'median s':>9} "
             f"{'ratio':>6} {'TFLOP':>6} {'GFLOP/s':>8}"]
    for row in report["summary"]:
        lines.append(
            f"{row['recipe']:<{width}} {row['runs']:>4} {row['accuracy_mean']:>8.2f} +- {row['accuracy_std']:<4.2f} "
            f"{100 * row['share_at_least_99']:>5.0f}% {row['seconds_mean']:>7.2f} +- {row['seconds_std']:<5.2f} "
            f"{row['seconds_median']:>9.2f} {row['median_time_ratio_vs_first']:>6.2f} "
            f"{row['tflop_per_run']:>6.3f} {row['gflop_per_s']:>8.1f}")
    m = report["machine"]
    lines.append(f"machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch_version']}, "
                 f"{m['torch_threads']} threads, device {m['device']}, best fp32 matmul "
                 f"{m['matmul_gflops_fp32']:.0f} GFLOP/s")
    t = report["timing"]
    lines.append(f"timed: {t['includes']}; not timed: {t['excludes']} "
                 f"(load {t['data_load_seconds']:.2f}s, warm-up {sum(t['warmup_seconds'].values()):.2f}s)")
    lines.append("ratio: median over seeds of (recipe time / first recipe time), pairs run back to back")
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    write_text(Path(path), json.dumps(payload, indent=1, default=str))
