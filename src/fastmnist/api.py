"""fastmnist from Python: the harness (trainer, interleaved multi-seed bench, sweep) for your own recipes
and networks, in a notebook or a script. The CLI is a thin layer over the same functions.

    import fastmnist
    mine = fastmnist.derive(fastmnist.recipe("stage14"), "mine", "stage 14 at lr 0.03", lr=0.03)
    result = fastmnist.train(mine, seed=0)             # result.accuracy (%), result.seconds, result.model
    report = fastmnist.bench(["stage14", mine], runs=5)  # seeds 100-104, each its own weights and data order
    print(report.table())
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastmnist import commands
from fastmnist.data import Mnist, load_mnist
from fastmnist.device import pick_device
from fastmnist.output import write_json
from fastmnist.recipes import Recipe, derive, get_recipe
from fastmnist.seeds import CLAIM_FIRST_SEED, TUNING_FIRST_SEED, choose_seeds
from fastmnist.trainer import RunResult

__all__ = ["Recipe", "Report", "RunResult", "bench", "derive", "ladder", "load_mnist", "recipe", "sweep", "train"]


class Report(dict):
    """A results report, exactly the JSON the CLI writes, with a table and a writer."""

    def to_json(self) -> str:
        return json.dumps(self, indent=1, default=str)

    def table(self) -> str:
        from fastmnist.report import bench_table, sweep_table

        from fastmnist.report import ladder_markdown

        return {"bench": bench_table, "sweep": sweep_table, "ladder": ladder_markdown}[self["kind"]](self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, dict(self))


def recipe(name: str) -> Recipe:
    """A recipe by name: 'stage0' to the last stage (`fastmnist recipes`), 'fastest', 'NAME[key=value,...]'
    or 'FILE.py:NAME'."""
    return get_recipe(name)


def resolve(recipes) -> list[Recipe]:
    return [r if isinstance(r, Recipe) else get_recipe(r) for r in recipes]


def machine_and_data(device: str, data_dir, mnist: Mnist | None, offline: bool) -> tuple[torch.device, Mnist]:
    return pick_device(device), mnist if mnist is not None else load_mnist(data_dir, allow_download=not offline)


def train(recipe: Recipe | str, seed: int = 0, *, device: str = "auto", data_dir=None, mnist: Mnist | None = None,
          warmup: bool = True, offline: bool = False) -> RunResult:
    """Train once, warm (data prepared and one untimed warm-up run first), timed as the CLI times it.
    Returns `.accuracy` (%), `.seconds`, `.epochs`, `.diverged`, `.engine`, `.model` and the rest of the run."""
    [recipe] = resolve([recipe])
    torch_device, mnist = machine_and_data(device, data_dir, mnist, offline)
    return commands.train(recipe, seed, mnist, torch_device, warmup=warmup)[0]


def bench(recipes, runs: int = 10, *, first_seed: int | None = None, seeds=None, device: str = "auto",
          data_dir=None, mnist: Mnist | None = None, progress: bool = False, offline: bool = False,
          storage: str | None = None, study: str | None = None) -> Report:
    """`runs` seeds from `first_seed` (default: the claims range), or exactly `seeds` ('100-124' or a list),
    recipes interleaved within each seed; the report `fastmnist bench --out` writes. With `storage` (an
    Optuna storage URL) the seeds are shared with every worker on that store."""
    chosen = choose_seeds(runs, first_seed, seeds, CLAIM_FIRST_SEED)
    return Report(commands.bench(resolve(recipes), chosen, lambda: machine_and_data(device, data_dir, mnist, offline),
                                 storage=storage, study=study, progress=progress))


def sweep(recipe: Recipe | str, params: dict[str, list], runs: int = 30, *, first_seed: int | None = None,
          seeds=None, rounds: int = 1, objective: str = "accuracy", target: float = 99.0,
          storage: str | None = None, study: str | None = None, device: str = "auto", data_dir=None,
          mnist: Mnist | None = None, offline: bool = False) -> Report:
    """Coordinate ascent over `params` ({'lr': [0.01, 0.02], ...}), `runs` seeds a point from the tuning
    range (or `first_seed`, or exactly `seeds`), every run kept in an Optuna storage (in memory unless
    `storage` is a URL), as `fastmnist sweep` does."""
    [recipe] = resolve([recipe])
    chosen = choose_seeds(runs, first_seed, seeds, TUNING_FIRST_SEED)
    texts = [f"{name}={','.join(map(str, values))}" for name, values in params.items()]
    return Report(commands.sweep(recipe, texts, chosen, lambda: machine_and_data(device, data_dir, mnist, offline),
                                 rounds=rounds, objective=objective, target=target, storage=storage, study=study))


def ladder(stages: str = "all", runs: int = 5, out: str | Path = "ladder", *, first_seed: int | None = None,
           seeds=None, device: str = "auto", data_dir=None, mnist: Mnist | None = None,
           offline: bool = False) -> Report:
    """The ladder's stages ('0-8', '17-19,mine.py:r', 'all'), interleaved over `runs` seeds from the claims
    range (or `first_seed`, or exactly `seeds`), into OUT/ladder.json, ladder.md and ladder.png, as
    `fastmnist ladder` does; returns the ladder report."""
    from fastmnist.stages import parse_stages

    chosen = choose_seeds(runs, first_seed, seeds, CLAIM_FIRST_SEED)
    torch_device, mnist = machine_and_data(device, data_dir, mnist, offline)
    return Report(commands.ladder(parse_stages(stages), chosen, mnist, torch_device, out)[0])
