"""fastmnist from Python: the harness (trainer, interleaved multi-seed bench, sweep) for your own recipes
and networks, in a notebook or a script. The CLI is a thin layer over the same functions.

    import fastmnist
    mine = fastmnist.derive(fastmnist.recipe("stage14"), "mine", "stage 14 at lr 0.03", lr=0.03)
    result = fastmnist.train(mine, seed=0)             # result.accuracy (%), result.seconds, result.model
    report = fastmnist.bench(["stage14", mine], runs=5)
    print(report.table())
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastmnist.data import Mnist, load_mnist
from fastmnist.machine import pick_device
from fastmnist.output import write_json
from fastmnist.recipes import Recipe, derive, get_recipe
from fastmnist.trainer import RunResult

__all__ = ["Recipe", "Report", "RunResult", "bench", "derive", "load_mnist", "recipe", "sweep", "train"]


class Report(dict):
    """A results report, exactly the JSON the CLI writes, with a table and a writer."""

    def to_json(self) -> str:
        return json.dumps(self, indent=1, default=str)

    def table(self) -> str:
        from fastmnist.report import bench_table, sweep_table

        return bench_table(self) if self["kind"] == "bench" else sweep_table(self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, dict(self))


def recipe(name: str) -> Recipe:
    """A recipe by name: 'stage0'...'stage14', 'fastest', 'NAME[key=value,...]' or 'FILE.py:NAME'."""
    return get_recipe(name)


def resolve(recipes) -> list[Recipe]:
    return [r if isinstance(r, Recipe) else get_recipe(r) for r in recipes]


def machine_and_data(device: str, data_dir, mnist: Mnist | None, offline: bool) -> tuple[torch.device, Mnist]:
    return pick_device(device), mnist if mnist is not None else load_mnist(data_dir, allow_download=not offline)


def train(recipe: Recipe | str, seed: int = 0, *, device: str = "auto", data_dir=None, mnist: Mnist | None = None,
          warmup: bool = True, offline: bool = False) -> RunResult:
    """Train once, warm (data prepared and one untimed warm-up run first), timed as the CLI times it.
    Returns `.accuracy` (%), `.seconds`, `.epochs`, `.diverged`, `.model` and the rest of the run."""
    from fastmnist.runner import Runner

    [recipe] = resolve([recipe])
    torch_device, mnist = machine_and_data(device, data_dir, mnist, offline)
    return Runner(mnist, torch_device, warmup=warmup).run(recipe, seed)


def bench(recipes, runs: int, *, device: str = "auto", data_dir=None, mnist: Mnist | None = None,
          progress: bool = False, offline: bool = False) -> Report:
    """Seeds 0..runs-1, recipes interleaved within each seed; the report `fastmnist bench --out` writes."""
    from fastmnist.runner import benchmark

    torch_device, mnist = machine_and_data(device, data_dir, mnist, offline)
    return Report(benchmark(resolve(recipes), runs, mnist, torch_device, progress=progress))


def sweep(recipe: Recipe | str, params: dict[str, list], runs: int, *, rounds: int = 1,
          objective: str = "accuracy", target: float = 99.0, storage: str | None = None,
          study: str | None = None, device: str = "auto", data_dir=None, mnist: Mnist | None = None,
          offline: bool = False) -> Report:
    """Coordinate ascent over `params` ({'lr': [0.01, 0.02], ...}), `runs` seeds a point, every run kept
    in an Optuna storage (in memory unless `storage` is a URL), as `fastmnist sweep` does."""
    from fastmnist.runner import Runner, envelope
    from fastmnist.store import open_store
    from fastmnist.search import SweepSpec, coordinate_ascent, default_study_name, parse_params, real_job_runner

    [recipe] = resolve([recipe])
    texts = [f"{name}={','.join(map(str, values))}" for name, values in params.items()]
    spec = SweepSpec(recipe, parse_params(recipe, texts), runs, rounds, objective, target)
    torch_device, mnist = machine_and_data(device, data_dir, mnist, offline)
    study_name = study or default_study_name(spec)
    store = open_store(storage, study_name)
    record = coordinate_ascent(spec, store, real_job_runner(spec, Runner(mnist, torch_device)))
    return Report({**envelope("sweep", torch_device, [recipe], peak=False), **record, "objective": objective,
                   "target": target, "runs_per_point": runs, "study": study_name, "storage": storage})
