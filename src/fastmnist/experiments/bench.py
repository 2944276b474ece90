"""`fastmnist bench`: recipes run for a range of seeds (the claims range by default, seeds.py), interleaved
within each seed, in this process or shared by workers on a store (each seed's recipes always on one
machine, so a paired ratio never spans two). In this process an interrupted bench keeps its finished seeds
in its --out file (marked partial), and the same command continues it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.experiments.ledger import Ledger, definition, entry as ledger_entry
from fastmnist.experiments.seeds import describe_seeds
from fastmnist.experiments.store import job_key, open_store, run_jobs, this_worker
from fastmnist.recipes.recipe import Recipe
from fastmnist.results.machine import describe, load_average, machine_info
from fastmnist.results.output import check_writable, read_json_if_any, write_json, write_or_fallback
from fastmnist.results.provenance import redact
from fastmnist.results.records import bench_report, with_load
from fastmnist.training.runner import Load, Runner
from fastmnist.training.trainer import RunResult


def bench(recipes: list[Recipe], seeds: list[int], load: Load, storage: str | None = None, study: str | None = None,
          stale_after: float = 60.0, report_only: bool = False, progress: bool = False, on_run=None,
          on_start=None, on_wait=None, asked_as: list[str] | None = None, out: str | Path | None = None,
          on_plan=None, on_resume=None, show=None) -> dict:
    """The seeds (seeds.choose_seeds) with the recipes interleaved: in this process, or shared by every worker on
    `storage` (then `report_only` summarises what the store holds, running nothing: no data loaded). In this
    process, with `out`, the report so far is kept there after every seed (marked partial), and a partial
    file of the same recipes is continued: `on_resume(count)` hears how many seeds it held. `on_plan(seconds)`
    hears the expected duration once the first seed has run. The report goes to `show(report)`, then to `out`."""
    if report_only and not storage:
        raise FastMnistError("--report reads a shared bench: give its --storage URL (and --study if named)")
    if out:
        check_writable(out, "--out")
    start = load_average()
    asked = {r.name: name for r, name in zip(recipes, asked_as or []) if r.name != name and ".py:" not in name}
    ledger = Ledger(storage)  # a bad URL is one line before any data is loaded
    uses = {r.name: ledger.seed_use(r, seeds) for r in recipes}
    if storage:
        study = study or bench_study_name(recipes)
        store = open_store(storage, study, stale_after)
        runner = None
        if not report_only:
            device, mnist = load()
            runner = Runner(mnist, device)
        report = {**shared_benchmark(recipes, seeds, store, runner, on_start, on_wait=on_wait, uses=uses),
                  "study": study, "storage": redact(storage)}
        where = f"study {study!r}"
    else:
        resumed = resumable_runs(read_json_if_any(out), recipes, seeds) if out else {}
        if on_resume and resumed:
            on_resume(len(resumed))
        device, mnist = load()
        keep = (lambda partial: write_json(out, {**partial, "partial": True, "asked_as": asked})) if out else None
        report = benchmark(recipes, seeds, mnist, device, progress, on_run, uses, resumed, keep, on_plan)
        where = ""
    if not report_only:
        ledger.add([ledger_entry(r, seeds, uses[r.name][0], "bench", where) for r in recipes])
    report = with_load({**report, "asked_as": asked}, start)
    if show:
        show(report)
    if out:
        write_or_fallback(out, lambda path: write_json(path, report), "the bench report")
    return report


def distinct(recipes: list[Recipe]) -> list[Recipe]:
    """Runs are kept by recipe name, so a bench's recipes must have different names."""
    names = [r.name for r in recipes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FastMnistError(f"recipe {twice[0]} is named twice; to compare a recipe with itself, give one "
                             f"copy a harmless override, e.g. {twice[0]}[target=99.0]")
    return recipes


def benchmark(recipes: list[Recipe], seeds: list[int], mnist: Mnist, device: torch.device, progress: bool = True,
              on_run=None, uses: dict | None = None, resumed: dict | None = None, on_seed=None,
              on_plan=None) -> dict:
    """The seeds in turn, recipes interleaved within each seed, in this process. `uses`: each recipe's seed
    use from the seed ledger; `resumed`: {seed: {recipe name: RunResult}} kept from an interrupted bench, not
    run again; `on_seed(report)` sees the report so far after every seed (to keep it), `on_plan(seconds)` the
    expected duration once the first seed has run."""
    distinct(recipes)
    runner = Runner(mnist, device)
    machine = machine_info(device, peaks=True)
    for recipe in recipes:
        runner.warm(recipe)
    resumed = resumed or {}
    results: dict[str, list] = {r.name: [] for r in recipes}

    def report() -> dict:
        return bench_report(recipes, results, machine, {
            "data_load_seconds": mnist.load_seconds,
            "prepare_seconds": {r.name: runner.data(r).seconds for r in recipes},
            "warmup_seconds": {r.name: runner.warm(r) for r in recipes},
            "capture_seconds": {r.name: runner.captures[r.name] for r in recipes}}, uses=uses)

    to_run = [s for s in seeds if s not in resumed]
    bar = tqdm(total=len(to_run) * len(recipes), desc="runs", unit="run", disable=not (progress and sys.stderr.isatty()), leave=False)
    started = time.perf_counter()
    for seed in seeds:
        if seed in resumed:
            for recipe in recipes:
                results[recipe.name].append(resumed[seed][recipe.name])
            continue
        ran = runner.run_interleaved(recipes, [seed], on_run=lambda result: (bar.update(), on_run and on_run(result)))
        for name, runs in ran.items():
            results[name] += runs
        if on_seed:
            on_seed(report())
        if on_plan and seed == to_run[0]:
            on_plan((time.perf_counter() - started) * len(to_run))
    bar.close()
    return report()


def resumable_runs(stored: dict, recipes: list[Recipe], seeds: list[int]) -> dict:
    """From a partial bench file (`stored`), the runs of the seeds asked for whose every recipe ran with the
    same definition: {seed: {recipe name: RunResult}}; nothing when the file is another bench."""
    if not (isinstance(stored, dict) and stored.get("kind") == "bench" and stored.get("partial")):
        return {}
    if stored.get("definitions") != {r.name: definition(r) for r in recipes}:
        return {}
    by_seed: dict[int, dict] = {}
    for run in stored.get("runs", []):
        by_seed.setdefault(run["seed"], {})[run["recipe"]] = RunResult(**run)
    names = {r.name for r in recipes}
    return {seed: runs for seed, runs in by_seed.items() if seed in set(seeds) and set(runs) == names}


def bench_study_name(recipes: list[Recipe]) -> str:
    return "bench|" + "|".join(r.name for r in recipes)


def seed_job(recipes: list[Recipe], seed: int) -> str:
    """A shared bench's job: one seed of these exact definitions (an edited recipe is a new job, never a
    stored run of the old one)."""
    return job_key(seed=seed, definitions=[definition(r) for r in recipes])


def shared_benchmark(recipes: list[Recipe], seeds: list[int], store, runner: Runner | None, on_start=None,
                     on_result=None, on_wait=None, uses: dict | None = None) -> dict:
    """The seeds shared by every worker on the store: each claims a seed and runs every recipe for it,
    interleaved on its own machine. With no runner, nothing runs: the report is made from what the store
    holds of these seeds. Either way the report holds exactly the seeds asked for."""
    distinct(recipes)
    if runner is not None:
        here = machine_info(runner.device, peaks=True)  # measured where the runs are, once per worker

        def run_seed(point: dict, seed: int) -> dict:
            results = runner.run_interleaved(recipes, [seed])
            return {"accuracy": results[recipes[0].name][0].accuracy, "recipes": [r.name for r in recipes],
                    "runs": [results[r.name][0].record() for r in recipes], "machine": here,
                    "worker": this_worker(),
                    "excluded_seconds": {r.name: runner.excluded_seconds(r) for r in recipes}}
        _, ran = run_jobs(store, {seed_job(recipes, seed): ({}, seed) for seed in seeds}, run_seed, on_start,
                          on_result, on_wait)
        return {**stored_bench_report(recipes, store, seeds, uses), "seeds_total": len(seeds), "seeds_run_here": ran}
    return stored_bench_report(recipes, store, seeds, uses)


def stored_bench_report(recipes: list[Recipe], store, seeds: list[int], uses: dict | None = None) -> dict:
    """The asked seeds' finished runs of these definitions, whichever worker ran them, as one bench report
    (other seeds and other definitions in the study are neither shown nor counted); the machine is the one
    that ran the seeds (the first of them when several did, all of them under `machines`)."""
    wanted = {seed_job(recipes, seed) for seed in seeds}
    trials = sorted((t for t in store.finished() if "runs" in t.user_attrs and t.user_attrs.get("job") in wanted),
                    key=lambda t: t.user_attrs["seed"])
    if not trials:
        raise FastMnistError(f"the study {store.study.study_name!r} holds no finished runs of these recipes "
                             f"for seeds {describe_seeds(seeds)} yet")
    results = {r.name: [] for r in recipes}
    machines: dict[str, dict] = {}
    for trial in trials:
        by_name = {run["recipe"]: run for run in trial.user_attrs["runs"]}
        for recipe in recipes:
            if recipe.name not in by_name:
                raise FastMnistError(f"the study {store.study.study_name!r} holds no runs of {recipe.name}; "
                                     f"it has {', '.join(by_name)}")
            results[recipe.name].append(RunResult(**by_name[recipe.name]))
        machine = trial.user_attrs["machine"]
        entry = machines.setdefault(describe(machine) + f" on {machine.get('hostname', '?')}",
                                    {"machine": machine, "seeds": [], "workers": {}})
        entry["seeds"].append(trial.user_attrs["seed"])
        worker = trial.user_attrs.get("worker", "?")
        entry["workers"][worker] = entry["workers"].get(worker, 0) + 1
    listed = list(machines.values())
    report = bench_report(recipes, results, listed[0]["machine"], {"excluded_seconds_by_seed": {
        t.user_attrs["seed"]: t.user_attrs["excluded_seconds"] for t in trials}}, listed, uses)
    missing = sorted(set(seeds) - {t.user_attrs["seed"] for t in trials})
    if missing:
        report["notes"] = [f"{len(missing)} of the {len(seeds)} seeds asked for are not finished in the store yet: "
                           f"{describe_seeds(missing)}"]
    return report
