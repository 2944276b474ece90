"""fastmnist from Python: the harness (trainer, interleaved multi-seed bench, sweep) for your own recipes
and networks, in a notebook or a script. Each function checks its arguments as the CLI does, then calls the
same command function the CLI calls (each in the file named after its command).

    import fastmnist
    mine = fastmnist.derive(fastmnist.recipe("stage14"), "mine", "stage 14 at lr 0.03", lr=0.03)
    result = fastmnist.train(mine, seed=0)             # result.accuracy (%), result.seconds, result.model
    report = fastmnist.bench(["stage14", mine], runs=5)  # seeds 100-104, each its own weights and data order
    print(report.table())
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastmnist.data import Mnist, load_mnist
from fastmnist.experiments import bench as bench_command
from fastmnist.experiments import ladder as ladder_command
from fastmnist.experiments import sweep as sweep_command
from fastmnist.results.output import write_json
from fastmnist.recipes.overrides import get_recipe
from fastmnist.recipes.recipe import Recipe, check_recipe, derive
from fastmnist.errors import FastMnistError
from fastmnist.experiments.seeds import CLAIM_FIRST_SEED, MAX_SEED, TUNING_FIRST_SEED, checked_int, choose_seeds
from fastmnist.training import train as train_command
from fastmnist.training.nets import NetSpec
from fastmnist.training.runner import setup
from fastmnist.training.trainer import RunResult

__all__ = ["FastMnistError", "NetSpec", "Recipe", "Report", "RunResult", "bench", "derive", "ladder", "load_mnist", "recipe",
           "sweep", "train"]


class Report(dict):
    """A results report, exactly the JSON the CLI writes, with a table and a writer."""

    def to_json(self) -> str:
        return json.dumps(self, indent=1, default=str)

    def table(self) -> str:
        from fastmnist.experiments.sweep import sweep_table
        from fastmnist.results.report import bench_table

        from fastmnist.experiments.ladder import ladder_markdown

        return {"bench": bench_table, "sweep": sweep_table, "ladder": ladder_markdown}[self["kind"]](self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, dict(self))


def recipe(name: str) -> Recipe:
    """A recipe by name: 'stage0' to the last stage (`fastmnist recipes`), 'fastest', 'NAME[key=value,...]'
    or 'FILE.py:NAME'."""
    return get_recipe(name)


def resolve(recipes) -> list[Recipe]:
    """Recipes by name or as given; one name or one Recipe alone is one recipe."""
    if isinstance(recipes, (str, Recipe)):
        recipes = [recipes]
    if not isinstance(recipes, (list, tuple)) or not recipes:
        raise FastMnistError(f"recipes={recipes!r}: expected a recipe, a name, or a list of them")
    for r in recipes:
        if not isinstance(r, (str, Recipe)):
            raise FastMnistError(f"{r!r}: not a recipe (a name such as 'stage14', or a fastmnist Recipe)")
    return [check_recipe(r if isinstance(r, Recipe) else get_recipe(r)) for r in recipes]


def loader(device: str, threads: int | None, data_dir, mnist: Mnist | None, offline: bool):
    """What loads the device and data when runs will happen (runner.setup), `threads` checked now."""
    if threads is not None:
        checked_int("threads", threads, 1, os.cpu_count() or 1)
    return lambda: setup(device, threads, data_dir, offline, mnist)


def train(recipe: Recipe | str, seed: int = 0, *, device: str = "auto", threads: int | None = None, data_dir=None,
          mnist: Mnist | None = None, warmup: bool = True, offline: bool = False) -> RunResult:
    """Train once, warm (data prepared and one untimed warm-up run first), timed as the CLI times it.
    Returns `.accuracy` (%), `.seconds`, `.epochs`, `.diverged`, `.engine`, `.model` and the rest of the run."""
    [recipe] = resolve([recipe])
    checked_int("seed", seed, 0, MAX_SEED)
    return train_command.train(recipe, seed, loader(device, threads, data_dir, mnist, offline), warmup=warmup)[0]


def bench(recipes, runs: int = 10, *, first_seed: int | None = None, seeds=None, device: str = "auto",
          threads: int | None = None, data_dir=None, mnist: Mnist | None = None, progress: bool = False, offline: bool = False,
          storage: str | None = None, study: str | None = None) -> Report:
    """`runs` seeds from `first_seed` (default: the claims range), or exactly `seeds` ('100-124' or a list),
    recipes interleaved within each seed; the report `fastmnist bench --out` writes. With `storage` (an
    Optuna storage URL) the seeds are shared with every worker on that store."""
    names = [r for r in ([recipes] if isinstance(recipes, str) else recipes) if isinstance(r, str)]
    recipes = resolve(recipes)
    chosen = choose_seeds(runs, first_seed, seeds, CLAIM_FIRST_SEED)
    return Report(bench_command.bench(recipes, chosen, loader(device, threads, data_dir, mnist, offline),
                                 storage=storage, study=study, progress=progress,
                                 asked_as=names if len(names) == len(recipes) else None))


def sweep(recipe: Recipe | str, params: dict[str, list], runs: int = 30, *, first_seed: int | None = None,
          seeds=None, rounds: int = 1, objective: str = "accuracy", target: float = 99.0,
          storage: str | None = None, study: str | None = None, out: str | Path | None = None,
          device: str = "auto", threads: int | None = None, data_dir=None, mnist: Mnist | None = None,
          offline: bool = False) -> Report:
    """Coordinate ascent over `params` ({'lr': [0.01, 0.02], ...}), `runs` seeds a point from the tuning
    range (or `first_seed`, or exactly `seeds`), every run kept in an Optuna storage (in memory unless
    `storage` is a URL), as `fastmnist sweep` does; with `out`, its files are written there as the CLI's."""
    [recipe] = resolve([recipe])
    chosen = choose_seeds(runs, first_seed, seeds, TUNING_FIRST_SEED)
    texts = [f"{name}={','.join(map(str, values))}" for name, values in params.items()]
    return Report(sweep_command.sweep(recipe, texts, chosen, loader(device, threads, data_dir, mnist, offline),
                                 rounds=rounds, objective=objective, target=target, storage=storage, study=study,
                                 out_dir=out)[0])


def ladder(stages: str = "all", runs: int = 5, out: str | Path = "ladder", *, first_seed: int | None = None,
           seeds=None, device: str = "auto", threads: int | None = None, data_dir=None, mnist: Mnist | None = None,
           offline: bool = False) -> Report:
    """The ladder's stages ('0-8', '17-19,mine.py:r', 'all'), interleaved over `runs` seeds from the claims
    range (or `first_seed`, or exactly `seeds`), into OUT/ladder.json, ladder.md and ladder.png, as
    `fastmnist ladder` does; returns the ladder report."""
    from fastmnist.experiments.ladder import parse_stages

    chosen = choose_seeds(runs, first_seed, seeds, CLAIM_FIRST_SEED)
    return Report(ladder_command.ladder(resolve(parse_stages(stages)), chosen, loader(device, threads, data_dir, mnist, offline),
                                  out)[0])
