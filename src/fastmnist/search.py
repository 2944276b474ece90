"""`fastmnist sweep`: the original study's coordinate ascent, many seeds per point, persisted run by run.

Every (point, seed) pair is a job in the shared store (store.py): one Optuna trial whose user attributes
hold the point, the seed and the result. Nothing lives only in memory, so Ctrl-C loses at most the run in
flight and the same command resumes, and several workers on several machines can share one sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fastmnist.errors import FastMnistError
from fastmnist.ledger import definition
from fastmnist.recipes import NET_FIELDS, Recipe, overridden, parse_param, split_assignment
from fastmnist.stats import summarize, welch_p
from fastmnist.seeds import TUNING_FIRST_SEED, describe_seeds
from fastmnist.store import JobStore, job_key, run_jobs


@dataclass(frozen=True)
class SweepSpec:
    recipe: Recipe
    params: tuple[tuple[str, tuple], ...]  # (name, values) in the order they are optimised
    seeds: tuple[int, ...] = tuple(range(TUNING_FIRST_SEED, TUNING_FIRST_SEED + 30))  # every point runs these
    rounds: int = 1
    objective: str = "accuracy"  # accuracy: best mean accuracy | time: fastest with mean accuracy >= target
    target: float = 99.0


def parse_params(recipe: Recipe, texts: list[str]) -> tuple[tuple[str, tuple], ...]:
    """['lr=0.005,0.01', ...] -> (('lr', (0.005, 0.01)), ...), every value checked before anything runs."""
    if not texts:
        raise FastMnistError("give at least one --param NAME=V1,V2,...")
    params = []
    for text in texts:
        name, values = split_assignment(text)
        parsed = tuple(dict.fromkeys(parse_param(recipe, name, v) for v in values.split(",") if v.strip()))
        if not parsed:
            raise FastMnistError(f"--param {text!r}: no values")
        if name in dict(params):
            raise FastMnistError(f"--param {name} given twice")
        params.append((name, parsed))
    return tuple(params)


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
    from fastmnist.machine import machine_info

    here = machine_info(runner.device)  # no peaks: a sweep compares points, not a run with the floor

    def run(point: dict, seed: int) -> dict:
        recipe = overridden(spec.recipe, point)
        result = runner.run(recipe, seed)
        return {"recipe": recipe.name, "accuracy": result.accuracy, "seconds": result.seconds,
                "diverged": result.diverged, "epochs": result.epochs, "precision": result.precision,
                "engine": result.engine, "machine": here}
    return run


def default_study_name(spec: SweepSpec) -> str:
    """The recipe by name and definition (an edited recipe starts a new study, never reusing the old one's
    runs), the values and the seeds."""
    params = ";".join(f"{n}={','.join(map(str, v))}" for n, v in spec.params)
    return f"{spec.recipe.name}@{definition(spec.recipe)}|{params}|seeds={describe_seeds(list(spec.seeds))}"


def swept_recipes(spec: SweepSpec, record: dict) -> list[Recipe]:
    """Every point the sweep ran, as the recipe it was: what the seed ledger records as tuned on its seeds."""
    recipes = {}
    for phase in record["phases"]:
        for point in phase["points"]:
            recipe = overridden(spec.recipe, point["point"])
            recipes.setdefault(definition(recipe), recipe)
    return list(recipes.values())
