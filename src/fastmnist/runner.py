"""The run core: every command that trains (train, bench, ladder, sweep) runs recipes through here.

It prepares each data layout once, warms each recipe up once (untimed), runs recipes for seeds
interleaved A B A B ..., and records each run with what was excluded from its clock. A report made
from runs carries its provenance (version, commit, command line), the machine and every recipe in full,
so it reproduces itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.machine import machine_info, matmul_gflops, provenance
from fastmnist.models import NetSpec, check_net, flops_per_image
from fastmnist.recipes import Recipe
from fastmnist.stats import paired_ratio, summarize
from fastmnist.engine import effective_precision, make_engine
from fastmnist.layout import PreparedData, prepare, preparation_key
from fastmnist.trainer import RunResult, train_run

TIMED = "model creation, training, test evaluation (as each recipe says)"
NOT_TIMED = ("data loading/verification, preparation into tensors, one short warm-up run per recipe (and, for "
             "engine=graph on CUDA, the capture of an epoch)")


class Runner:
    """Runs recipes warm: data prepared once per layout, one untimed warm-up per recipe."""

    def __init__(self, mnist: Mnist, device: torch.device, warmup: bool = True, on_epoch=None):
        self.mnist, self.device, self.warmup, self.on_epoch = mnist, device, warmup, on_epoch
        self.prepared: dict[tuple, PreparedData] = {}
        self.engines: dict[str, object] = {}
        self.captures: dict[str, float] = {}
        self.warmups: dict[str, float] = {}

    def data(self, recipe: Recipe) -> PreparedData:
        key = preparation_key(recipe)
        if key not in self.prepared:
            self.prepared[key] = prepare(self.mnist, recipe, self.device)
        return self.prepared[key]

    def engine(self, recipe: Recipe):
        """The recipe's engine, made and prepared (a CUDA graph captured) once, untimed."""
        if recipe.name not in self.engines:
            check_net(recipe.net)
            engine = make_engine(recipe, self.data(recipe))
            self.captures[recipe.name] = engine.prepare()
            self.engines[recipe.name] = engine
        return self.engines[recipe.name]

    def warm(self, recipe: Recipe) -> float:
        """A short untimed run (loads kernels, fills allocator caches, compiles), once per recipe."""
        if recipe.name not in self.warmups:
            engine = self.engine(recipe)
            start = time.perf_counter()
            if self.warmup:
                train_run(recipe, self.data(recipe), seed=0, warmup=True, engine=engine)
            self.warmups[recipe.name] = time.perf_counter() - start if self.warmup else 0.0
        return self.warmups[recipe.name]

    def run(self, recipe: Recipe, seed: int) -> RunResult:
        self.warm(recipe)
        return train_run(recipe, self.data(recipe), seed, on_epoch=self.on_epoch, engine=self.engine(recipe))

    def run_interleaved(self, recipes: list[Recipe], seeds, progress: bool = False,
                        on_run=None) -> dict[str, list[RunResult]]:
        """Every recipe warmed first, then for each seed every recipe in turn, so each seed's runs sit
        side by side in time and a paired ratio sees the same machine load."""
        for recipe in recipes:
            self.warm(recipe)
        seeds = list(seeds)
        results: dict[str, list[RunResult]] = {r.name: [] for r in recipes}
        bar = tqdm(total=len(seeds) * len(recipes), desc="runs", unit="run", disable=not progress, leave=False)
        for seed in seeds:
            for recipe in recipes:
                bar.set_description(f"{recipe.name} seed {seed}")
                result = self.run(recipe, seed)
                results[recipe.name].append(result)
                bar.set_postfix_str(f"{result.accuracy:.2f}% {result.seconds:.2f}s")
                bar.update()
                if on_run:
                    on_run(result)
        bar.close()
        return results

    def excluded_seconds(self, recipe: Recipe) -> dict:
        return {"data_load": self.mnist.load_seconds, "prepare": self.data(recipe).seconds,
                "warmup": self.warm(recipe), "capture": self.captures[recipe.name]}


def run_flops(recipe: Recipe, run: RunResult) -> float:
    """Training FLOPs for the images seen plus a test pass per evaluation."""
    train, infer = flops_per_image(recipe.net)
    return run.images_seen * train + len(run.epoch_accuracies) * run.test_images * infer


def summary_row(recipe: Recipe, runs: list[RunResult], device: torch.device) -> dict:
    """The statistics of one recipe's runs, its work in FLOPs and the rate achieved."""
    row = {"recipe": recipe.name,
           **summarize([r.accuracy for r in runs], [r.seconds for r in runs], recipe.target)}
    flops = float(np.mean([run_flops(recipe, r) for r in runs]))
    row.update({
        "diverged": int(sum(r.diverged for r in runs)),
        "epochs_mean": float(np.mean([r.epochs for r in runs])),
        "tflop_per_run": float(flops / 1e12),
        "gflop_per_s": float(flops / 1e9 / row["seconds_median"]),
        "precision": effective_precision(recipe, device),
    })
    return row


def recipe_record(recipe: Recipe) -> dict:
    """The recipe in full, as JSON: a user's network is recorded by its factory's import path."""
    from fastmnist.userfile import reference_of

    record = asdict(recipe)  # a factory is copied as itself, then replaced by where it comes from
    if not isinstance(recipe.net, NetSpec):
        record["net"] = {"factory": reference_of(recipe.net)}
    record["changes"] = list(recipe.changes)
    return record


def envelope(kind: str, device: torch.device, recipes: list[Recipe], peak: bool = True) -> dict:
    """The head of every results file: what it is, where it came from, the machine and the recipes."""
    machine = machine_info(device)
    if peak:
        machine["matmul_gflops_fp32"] = matmul_gflops(device)
    return {"kind": kind, "provenance": provenance(), "machine": machine,
            "recipes": {r.name: recipe_record(r) for r in recipes}}


def bench_report(recipes: list[Recipe], results: dict[str, list[RunResult]], device: torch.device,
                 timing: dict, machines: list[dict] | None = None) -> dict:
    """The bench report from runs grouped by recipe, each list in the same seed order, so that the i-th
    runs of two recipes are a pair measured back to back on one machine."""
    summary = [summary_row(r, results[r.name], device) for r in recipes]
    reference = [r.seconds for r in results[recipes[0].name]]
    for row, recipe in zip(summary, recipes):
        row["median_time_ratio_vs_first"] = paired_ratio(reference, [r.seconds for r in results[recipe.name]])
    report = {**envelope("bench", device, recipes), "timing": {"includes": TIMED, "excludes": NOT_TIMED, **timing},
              "summary": summary, "runs": [r.record() for recipe in recipes for r in results[recipe.name]]}
    if machines is not None:
        report["machines"] = machines
    return report


def distinct(recipes: list[Recipe]) -> list[Recipe]:
    """Runs are kept by recipe name, so a bench's recipes must have different names."""
    names = [r.name for r in recipes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FastMnistError(f"recipe {twice[0]} is named twice; to compare a recipe with itself, give one "
                             f"copy a harmless override, e.g. {twice[0]}[target=99.0]")
    return recipes


def benchmark(recipes: list[Recipe], runs: int, mnist: Mnist, device: torch.device, progress: bool = True,
              on_run=None) -> dict:
    """Seeds 0..runs-1, recipes interleaved within each seed; the report `fastmnist bench` writes."""
    distinct(recipes)
    runner = Runner(mnist, device)
    results = runner.run_interleaved(recipes, range(runs), progress, on_run)
    return bench_report(recipes, results, device, {
        "data_load_seconds": mnist.load_seconds,
        "prepare_seconds": {r.name: runner.data(r).seconds for r in recipes},
        "warmup_seconds": {r.name: runner.warm(r) for r in recipes},
        "capture_seconds": {r.name: runner.captures[r.name] for r in recipes}})


def bench_study_name(recipes: list[Recipe]) -> str:
    return "bench|" + "|".join(r.name for r in recipes)


def shared_benchmark(recipes: list[Recipe], runs: int, store, runner: Runner | None, device: torch.device,
                     on_start=None, on_result=None, on_wait=None) -> dict:
    """Seeds 0..runs-1 shared by every worker on the store: each claims a seed and runs every recipe
    for it, interleaved on its own machine, so a paired ratio never spans two machines. With no runner,
    nothing runs: the report is made from what the store holds."""
    from fastmnist.store import run_jobs

    distinct(recipes)
    if runner is not None:
        here = machine_info(device)

        def run_seed(point: dict, seed: int) -> dict:
            results = runner.run_interleaved(recipes, [seed])
            return {"accuracy": results[recipes[0].name][0].accuracy, "recipes": [r.name for r in recipes],
                    "runs": [results[r.name][0].record() for r in recipes], "machine": here,
                    "worker": f"{here['hostname']}:{os.getpid()}",
                    "excluded_seconds": {r.name: runner.excluded_seconds(r) for r in recipes}}
        run_jobs(store, {bench_job_key(seed): ({}, seed) for seed in range(runs)}, run_seed, on_start,
                 on_result, on_wait)
    return stored_bench_report(recipes, store, device)


def bench_job_key(seed: int) -> str:
    return f'{{"seed": {seed}}}'


def stored_bench_report(recipes: list[Recipe], store, device: torch.device) -> dict:
    """Every finished seed in the store, whichever worker ran it, as one bench report."""
    from fastmnist.machine import describe

    trials = sorted((t for t in store.finished() if "runs" in t.user_attrs), key=lambda t: t.user_attrs["seed"])
    if not trials:
        raise FastMnistError(f"the study {store.study.study_name!r} holds no finished runs yet")
    results = {r.name: [] for r in recipes}
    machines: dict[str, dict] = {}
    for trial in trials:
        by_name = {run["recipe"]: run for run in trial.user_attrs["runs"]}
        for recipe in recipes:
            results[recipe.name].append(RunResult(**by_name[recipe.name]))
        machine = trial.user_attrs["machine"]
        entry = machines.setdefault(describe(machine) + f" on {machine.get('hostname', '?')}",
                                    {"machine": machine, "seeds": [], "workers": {}})
        entry["seeds"].append(trial.user_attrs["seed"])
        worker = trial.user_attrs.get("worker", "?")
        entry["workers"][worker] = entry["workers"].get(worker, 0) + 1
    return bench_report(recipes, results, device, {"excluded_seconds_by_seed": {
        t.user_attrs["seed"]: t.user_attrs["excluded_seconds"] for t in trials}}, list(machines.values()))
