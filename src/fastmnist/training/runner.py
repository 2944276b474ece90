"""The run core: every command that trains (train, bench, ladder, sweep) runs recipes through here.

It prepares each data layout once, builds each recipe's engine once (model and step; a CUDA graph is
captured then), warms each recipe up once (untimed), runs recipes for seeds interleaved A B A B ..., each
run writing its seed's data order before its clock, and says what was excluded from the clock.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Callable

import torch
from tqdm import tqdm

from fastmnist.data import Mnist, load_mnist
from fastmnist.training.device import pick_device
from fastmnist.training.engines import Engine, make_engine
from fastmnist.training.layout import PreparedData, prepare, preparation_key
from fastmnist.results.machine import BusyMachineWarning, busy
from fastmnist.training.nets import check_net
from fastmnist.recipes.recipe import Recipe, check_recipe
from fastmnist.training.trainer import RunResult, train_run


Load = Callable[[], tuple[torch.device, Mnist]]  # threads, device and data, called only when runs will happen


class Runner:
    """Runs recipes warm: data prepared once per layout, one engine and one untimed warm-up per recipe."""

    def __init__(self, mnist: Mnist, device: torch.device, warmup: bool = True, on_epoch=None):
        self.mnist, self.device, self.warmup, self.on_epoch = mnist, device, warmup, on_epoch
        self.prepared: dict[tuple, PreparedData] = {}
        self.engines: dict[str, Engine] = {}
        self.captures: dict[str, float] = {}
        self.warmups: dict[str, float] = {}

    def data(self, recipe: Recipe) -> PreparedData:
        key = preparation_key(recipe, self.device)
        if key not in self.prepared:
            self.prepared[key] = prepare(self.mnist, recipe, self.device)
        return self.prepared[key]

    def engine(self, recipe: Recipe) -> Engine:
        """The recipe's engine, made and built (a CUDA graph captured) once, untimed."""
        if recipe.name not in self.engines:
            check_net(recipe.net)
            engine = make_engine(recipe, self.data(recipe))
            self.captures[recipe.name] = engine.build()
            self.engines[recipe.name] = engine
        return self.engines[recipe.name]

    def warm(self, recipe: Recipe) -> float:
        """A short untimed run (loads kernels, fills allocator caches, compiles), once per recipe."""
        if recipe.name not in self.warmups:
            engine = self.engine(recipe)
            if not self.warmups and (why := busy()):  # the inputs are checked and runs are about to start
                warnings.warn(why, BusyMachineWarning, stacklevel=2)
            start = time.perf_counter()
            if self.warmup:
                train_run(engine, seed=0, warmup=True)
            self.warmups[recipe.name] = time.perf_counter() - start if self.warmup else 0.0
        return self.warmups[recipe.name]

    def run(self, recipe: Recipe, seed: int) -> RunResult:
        self.warm(recipe)
        return train_run(self.engine(recipe), seed, on_epoch=self.on_epoch)

    def run_interleaved(self, recipes: list[Recipe], seeds, progress: bool = False,
                        on_run=None) -> dict[str, list[RunResult]]:
        """Every recipe checked, then warmed, then for each seed every recipe in turn, so each seed's runs sit
        side by side in time and a paired ratio sees the same machine load."""
        for recipe in recipes:  # all of them before the first warm-up (and its busy-machine warning)
            check_recipe(recipe)
        for recipe in recipes:
            self.warm(recipe)
        seeds = list(seeds)
        results: dict[str, list[RunResult]] = {r.name: [] for r in recipes}
        bar = tqdm(total=len(seeds) * len(recipes), desc="runs", unit="run", disable=not (progress and sys.stderr.isatty()), leave=False)
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

    def forget(self, recipe: Recipe) -> None:
        """Drop a recipe's engine (its model and step): a search builds one per trial, and would otherwise
        keep them all (4 GB after 300 trials)."""
        for table in (self.engines, self.captures, self.warmups):
            table.pop(recipe.name, None)

    def excluded_seconds(self, recipe: Recipe) -> dict:
        return {"data_load": self.mnist.load_seconds, "prepare": self.data(recipe).seconds,
                "warmup": self.warm(recipe), "capture": self.captures[recipe.name]}


def setup(device: str = "auto", threads: int | None = None, data_dir=None, offline: bool = False,
          mnist: Mnist | None = None) -> tuple[torch.device, Mnist]:
    """Threads, device and data, all before any clock starts (`mnist`: already loaded, used as it is)."""
    if threads:
        torch.set_num_threads(threads)
    return pick_device(device), mnist if mnist is not None else load_mnist(data_dir, allow_download=not offline)
