"""Each command once: train, bench, sweep and ladder as functions that both the CLI and the Python API
call, so every record has one author. They take resolved inputs (recipes, the data, the device) and return
what the command reports; the CLI parses arguments and prints, the API resolves names and wraps reports.
A storage URL enters a record only with its password hidden; data is loaded (`load()`) only once a store
has opened and runs will happen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.machine import load_average, load_span, machine_info
from fastmnist.provenance import redact
from fastmnist.recipes import Recipe
from fastmnist.records import envelope
from fastmnist.runner import Runner
from fastmnist.seeds import describe_seeds, seed_use
from fastmnist.trainer import RunResult

Load = Callable[[], tuple[torch.device, Mnist]]  # threads, device and data, called only when runs will happen


def train(recipe: Recipe, seed: int, mnist: Mnist, device: torch.device, warmup: bool = True,
          on_epoch=None) -> tuple[RunResult, dict]:
    """One warm run, and its record: the run, what was excluded from its clock, the machine, provenance."""
    start = load_average()
    runner = Runner(mnist, device, warmup=warmup, on_epoch=on_epoch)
    result = runner.run(recipe, seed)
    record = {**envelope("train", machine_info(device), [recipe]), **result.record(), "device": device.type,
              "excluded_seconds": runner.excluded_seconds(recipe)}
    return result, with_load(record, start)


def with_load(record: dict, start: list[float] | None) -> dict:
    """The record with the machine's load average when the command started and now: a busy machine
    explains slow figures."""
    return {**record, "load_average": load_span(start)}


def bench(recipes: list[Recipe], seeds: list[int], load: Load, storage: str | None = None, study: str | None = None,
          stale_after: float = 60.0, report_only: bool = False, progress: bool = False, on_run=None,
          on_start=None, on_wait=None) -> dict:
    """The seeds (seeds.choose_seeds) with the recipes interleaved: in this process, or shared by every worker on
    `storage` (then `report_only` summarises what the store holds, running nothing: no data loaded)."""
    from fastmnist.benchmark import bench_study_name, benchmark, shared_benchmark

    if report_only and not storage:
        raise FastMnistError("--report reads a shared bench: give its --storage URL (and --study if named)")
    start = load_average()
    if not storage:
        device, mnist = load()
        return with_load(benchmark(recipes, seeds, mnist, device, progress, on_run), start)
    from fastmnist.store import open_store

    study = study or bench_study_name(recipes)
    store = open_store(storage, study, stale_after)  # a bad URL is one line before any data is loaded
    runner = None
    if not report_only:
        device, mnist = load()
        runner = Runner(mnist, device)
    report = shared_benchmark(recipes, seeds, store, runner, on_start, on_wait=on_wait)
    return with_load({**report, "study": study, "storage": redact(storage)}, start)


def sweep(recipe: Recipe, params: list[str], seeds: list[int], load: Load, rounds: int = 1,
          objective: str = "accuracy", target: float = 99.0, storage: str | None = None, study: str | None = None,
          stale_after: float = 60.0, on_resume=None, on_start=None, on_result=None, on_wait=None) -> dict:
    """Coordinate ascent over `params` (['lr=0.01,0.02', ...]), every point run for each of `seeds` (the
    tuning range by default), every run kept in the store at `storage` (in memory when None).
    `on_resume(count)` is told how many runs the store held."""
    from fastmnist.search import SweepSpec, coordinate_ascent, default_study_name, parse_params, real_job_runner
    from fastmnist.store import open_store

    start = load_average()
    spec = SweepSpec(recipe, parse_params(recipe, params), tuple(seeds), rounds, objective, target)
    study = study or default_study_name(spec)
    store = open_store(storage, study, stale_after)  # a bad URL is one line before any data is loaded
    device, mnist = load()
    if on_resume:
        on_resume(store.finished_count())
    record = coordinate_ascent(spec, store, real_job_runner(spec, Runner(mnist, device)), on_start, on_result,
                               on_wait)
    return with_load({**envelope("sweep", machine_info(device), [recipe]), **record, "objective": objective,
                      "target": target, "runs_per_point": len(seeds), "seeds": describe_seeds(list(seeds)),
                      "seed_use": seed_use(list(seeds)), "study": study,
                      "storage": redact(storage) if storage else "(in memory)"}, start)


def ladder(stages: list[Recipe], seeds: list[int], mnist: Mnist, device: torch.device, out_dir: str | Path,
           progress: bool = False, on_epoch=None, show=None) -> tuple[dict, list[Path]]:
    """Each stage's runs into OUT/ladder.json (kept after every stage), then OUT/ladder.md and .png;
    `show(table)` is given the table before those are written, so a full disk cannot take it away."""
    from fastmnist.report import ladder_markdown, write_ladder_report
    from fastmnist.stages import run_ladder

    out_dir = Path(out_dir)
    report = run_ladder(stages, seeds, mnist, device, out_dir, progress, on_epoch)
    if show:
        show(ladder_markdown(report))
    return report, [out_dir / "ladder.json", *write_ladder_report(report, out_dir)]
