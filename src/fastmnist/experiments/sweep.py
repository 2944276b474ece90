"""`fastmnist sweep`: the original study's coordinate ascent, many seeds per point, persisted run by run.

Every (point, seed) pair is a job in the shared store (store.py): one Optuna trial whose user attributes
hold the point, the seed and the result. Nothing lives only in memory, so Ctrl-C loses at most the run in
flight and the same command resumes, and several workers on several machines can share one sweep.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastmnist.experiments.ledger import Ledger, definition, entry as ledger_entry
from fastmnist.experiments.seeds import TUNING_FIRST_SEED, describe_seeds
from fastmnist.experiments.stats import plus_minus, summarize, welch_p
from fastmnist.experiments.store import JobStore, job_key, open_store, run_jobs
from fastmnist.recipes.overrides import overridden, parse_fields
from fastmnist.recipes.recipe import NET_FIELDS, Recipe
from fastmnist.results.machine import load_average, machine_info
from fastmnist.results.output import check_folder, pyplot, save_figure, write_study
from fastmnist.results.records import envelope, with_load
from fastmnist.results.provenance import redact
from fastmnist.training.runner import Load, Runner


def sweep(recipe: Recipe, params: list[str], seeds: list[int], load: Load, rounds: int = 1,
          objective: str = "accuracy", target: float = 99.0, storage: str | None = None, study: str | None = None,
          stale_after: float = 60.0, on_resume=None, on_start=None, on_result=None, on_wait=None,
          out_dir: str | Path | None = None, show=None) -> tuple[dict, list[Path]]:
    """Coordinate ascent over `params` (['lr=0.01,0.02', ...]), every point run for each of `seeds` (the
    tuning range by default), every run kept in the store at `storage` (default: OUT/sweep.db with `out_dir`,
    else in memory). `on_resume(count)` is told how many runs the store held. With `out_dir`, OUT/sweep.json,
    sweep.md and a picture per parameter are written, after `show(table, record)`; returns the record and the
    files written. Every value is checked before the folder is made: a refused sweep leaves nothing behind."""
    start = load_average()
    dims = parse_fields(recipe, params, "--param", ranges=False)
    spec = SweepSpec(recipe, tuple((d.name, d.choices) for d in dims), tuple(seeds), rounds, objective, target)
    if out_dir is not None:
        out_dir = check_folder(out_dir, "--out")
        storage = storage or f"sqlite:///{out_dir / 'sweep.db'}"
    study = study or spec.default_study()
    store = open_store(storage, study, stale_after)  # a bad URL is one line before any data is loaded
    device, mnist = load()
    if on_resume:
        on_resume(store.finished_count())
    record = coordinate_ascent(spec, store, real_job_runner(spec, Runner(mnist, device)), on_start, on_result,
                               on_wait)
    ledger_entries = [ledger_entry(r, list(seeds), "tuning", "sweep", f"study {study!r}")
                      for r in swept_recipes(spec, record)]
    Ledger(storage).add(ledger_entries)
    record = with_load({**envelope("sweep", machine_info(device), [recipe]), **record, "objective": objective,
                        "target": target, "runs_per_point": len(seeds), "seeds": describe_seeds(list(seeds)),
                        "seed_use": "tuning", "seed_ledger": ledger_entries, "study": study,
                        "storage": redact(storage) if storage else "(in memory)"}, start)
    if out_dir is None:
        return record, []
    return record, write_study(out_dir, "sweep", record, sweep_table(record), show, sweep_plots(record, out_dir))


@dataclass(frozen=True)
class SweepSpec:
    recipe: Recipe
    params: tuple[tuple[str, tuple], ...]  # (name, values) in the order they are optimised
    seeds: tuple[int, ...] = tuple(range(TUNING_FIRST_SEED, TUNING_FIRST_SEED + 30))  # every point runs these
    rounds: int = 1
    objective: str = "accuracy"  # accuracy: best mean accuracy | time: fastest with mean accuracy >= target
    target: float = 99.0

    def default_study(self) -> str:
        """The recipe by name and definition (an edited recipe starts a new study, never reusing the old one's
        runs), the values and the seeds."""
        params = ";".join(f"{n}={','.join(map(str, v))}" for n, v in self.params)
        return f"{self.recipe.name}@{definition(self.recipe)}|{params}|seeds={describe_seeds(list(self.seeds))}"


def point_stats(results: list[dict], target: float) -> dict:
    row = summarize([r["accuracy"] for r in results], [r["seconds"] for r in results], target)
    row["diverged"] = int(sum(r["diverged"] for r in results))
    row["accuracies"] = [r["accuracy"] for r in results]
    return row


def choose(spec: SweepSpec, candidates: list[tuple[object, dict]]) -> object:
    """The value to keep: best mean accuracy, or the fastest reaching the target (best accuracy if none do)."""
    if spec.objective == "time":
        reaching = [(v, s) for v, s in candidates if s["accuracy_mean"] >= spec.target]
        if reaching:
            return min(reaching, key=lambda vs: vs[1]["seconds_mean"])[0]
    return max(candidates, key=lambda vs: vs[1]["accuracy_mean"])[0]


def coordinate_ascent(spec: SweepSpec, store: JobStore, run_job: Callable[[dict, int], dict],
                      on_start=None, on_result=None, on_wait=None) -> dict:
    """For each parameter in turn try every value, keep the best, move on; repeat for `rounds` or until
    a whole round changes nothing. Returns the sweep's record (phases, best point, runs reused)."""
    best = {name: getattr(spec.recipe.net if name in NET_FIELDS else spec.recipe, name)
            for name, _ in spec.params}
    phases, used, ran = [], set(), 0
    for round_index in range(spec.rounds):
        changed = False
        for name, values in spec.params:
            tried = list(dict.fromkeys([best[name], *values]))
            points = {v: {**best, name: v} for v in tried}
            jobs = {job_key(point=p, seed=s): (p, s) for p in points.values() for s in spec.seeds}
            done, ran_now = run_jobs(store, jobs, run_job, on_start, on_result, on_wait)
            ran += ran_now
            used |= set(jobs)
            stats = {v: point_stats([done[job_key(point=p, seed=s)] for s in spec.seeds], spec.target)
                     for v, p in points.items()}
            incumbent = best[name]
            for v, s in stats.items():
                s["value"], s["point"] = v, points[v]
                s["p_vs_incumbent"] = None if v == incumbent else welch_p(
                    s["accuracies"], stats[incumbent]["accuracies"])
            chosen = choose(spec, list(stats.items()))
            phases.append({"round": round_index + 1, "param": name, "incumbent": incumbent, "chosen": chosen,
                           "points": [stats[v] for v in tried]})
            if chosen != incumbent:
                best[name], changed = chosen, True
        if not changed:
            break
    return {"best": best, "phases": phases, "runs_total": len(used), "runs_run_here": ran,
            "runs_reused": len(used) - ran}


def real_job_runner(spec: SweepSpec, runner) -> Callable[[dict, int], dict]:
    """Train the recipe at a point for a seed through the run core (warm, data shared across points).
    The result, stored with the trial, names the recipe and the machine that ran it."""
    here = machine_info(runner.device)  # no peaks: a sweep compares points, not a run with the floor

    def run(point: dict, seed: int) -> dict:
        recipe = overridden(spec.recipe, point)
        result = runner.run(recipe, seed)
        return {"recipe": recipe.name, "accuracy": result.accuracy, "seconds": result.seconds,
                "diverged": result.diverged, "epochs": result.epochs, "precision": result.precision,
                "engine": result.engine, "machine": here}
    return run


def swept_recipes(spec: SweepSpec, record: dict) -> list[Recipe]:
    """Every point the sweep ran, as the recipe it was: what the seed ledger records as tuned on its seeds."""
    recipes = {}
    for phase in record["phases"]:
        for point in phase["points"]:
            recipe = overridden(spec.recipe, point["point"])
            recipes.setdefault(definition(recipe), recipe)
    return list(recipes.values())


def sweep_table(record: dict) -> str:
    target = record["target"]
    lines = [f"{'round':>5} {'param':<16} {'value':>10} {'runs':>4} {'accuracy %':>17} {'SE':>6} "
             f"{f'>={target:g}%':>6} {'seconds':>8} {'p vs kept':>9}"]
    for phase in record["phases"]:
        for s in phase["points"]:
            mark = " <- kept" if s["value"] == phase["chosen"] else ""
            p = "-" if s["p_vs_incumbent"] is None else f"{s['p_vs_incumbent']:.3f}"
            se = "n/a" if s["accuracy_se"] is None else f"{s['accuracy_se']:.3f}"
            lines.append(f"{phase['round']:>5} {phase['param']:<16} {str(s['value']):>10} {s['runs']:>4} "
                         f"{plus_minus(s['accuracy_mean'], s['accuracy_std'], 3):>17} {se:>6} "
                         f"{100 * s['share_reaching_target']:>5.0f}% {s['seconds_mean']:>8.2f} {p:>9}{mark}")
    lines.append("best: " + ", ".join(f"{k}={v}" for k, v in record["best"].items()))
    lines.append("p vs kept: Welch's t-test of the point's accuracies against the value held when the "
                 "parameter's turn began")
    return "\n".join(lines)


def sweep_plots(record: dict, out_dir: Path) -> list[tuple[Path, Callable[[Path], Path], str]]:
    """One picture per parameter (mean accuracy vs value, error bars one standard error, target line), as
    (path, writer, what) for `write_results`."""
    return [(Path(out_dir) / f"sweep-{name}.png", functools.partial(sweep_plot, record, name), f"the {name} picture")
            for name in dict.fromkeys(p["param"] for p in record["phases"])]


def sweep_plot(record: dict, name: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for phase in (p for p in record["phases"] if p["param"] == name):
        points = phase["points"]
        if all(isinstance(s["value"], (int, float)) for s in points):
            points = sorted(points, key=lambda s: s["value"])  # numbers read left to right
        ax.errorbar([str(s["value"]) for s in points], [s["accuracy_mean"] for s in points],
                    yerr=[s["accuracy_se"] or 0 for s in points], fmt="o-", capsize=4,
                    label=f"round {phase['round']} (kept {phase['chosen']})")
    ax.axhline(record["target"], color="red", linestyle=":", label=f"{record['target']:g}%")
    ax.set_xlabel(name)
    ax.set_ylabel("test accuracy % (mean +- SE)")
    ax.set_title(f"sweep: {name}")
    ax.legend()
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
