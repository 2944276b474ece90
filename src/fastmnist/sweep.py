"""`fastmnist sweep`: the seed's coordinate ascent, many seeds per point, persisted run by run in Optuna.

Every (point, seed) pair is a job; every job is one Optuna trial whose user attributes hold the point, the
seed and the result. Nothing lives only in memory, so Ctrl-C loses at most the run in flight and the same
command resumes. Several workers may share one study: a worker claims a job by creating a trial tagged with
it, then checks the store; of several trials for one job, only the lowest-numbered one runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from fastmnist.errors import FastMnistError
from fastmnist.recipes import NET_FIELDS, Recipe, derive, parse_param, split_assignment

ALIVE = (TrialState.RUNNING, TrialState.COMPLETE)
POLL_SECONDS = 2.0  # how often a worker with nothing to claim looks for others' results


@dataclass(frozen=True)
class SweepSpec:
    recipe: Recipe
    params: tuple[tuple[str, tuple], ...]  # (name, values) in the order they are optimised
    runs: int = 30
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


def apply_point(recipe: Recipe, point: dict) -> Recipe:
    label = ",".join(f"{k}={v}" for k, v in point.items())
    return derive(recipe, f"{recipe.name}[{label}]", f"{recipe.name} with {label}", **point)


def job_key(point: dict, seed: int) -> str:
    return json.dumps({"point": point, "seed": seed}, sort_keys=True)


def open_study(storage: str, name: str) -> optuna.Study:
    if storage.startswith("sqlite"):  # several processes on one file: wait for the lock, don't fail
        storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    except Exception as exc:  # bad URLs, missing drivers, unreachable servers: one line for the user
        raise FastMnistError(f"cannot open sweep storage {storage!r}: {type(exc).__name__}: {exc}") from None


class JobStore:
    """The study seen as jobs: which are done, which are claimed, and claiming one."""

    def __init__(self, study: optuna.Study, stale_after: float):
        self.study, self.stale_after = study, stale_after

    def trials(self) -> list:
        return self.study.get_trials(deepcopy=False, states=ALIVE)

    def fail_stale(self) -> None:
        """RUNNING trials older than `stale_after` belong to a worker that died (kill -9, power loss)."""
        now = datetime.now()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.datetime_start and (now - t.datetime_start).total_seconds() > self.stale_after:
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)

    def results(self, keys: set[str]) -> dict[str, dict]:
        return {t.user_attrs["job"]: t.user_attrs for t in self.trials()
                if t.state == TrialState.COMPLETE and t.user_attrs.get("job") in keys}

    def claim(self, key: str):
        """A trial that owns `key`, or None if another worker's trial has it."""
        trial = self.study.ask()
        trial.set_user_attr("job", key)
        owners = [t.number for t in self.trials() if t.user_attrs.get("job") == key]
        if min(owners) != trial.number:
            self.study.tell(trial, state=TrialState.PRUNED)  # a duplicate claim: the lower number runs it
            return None
        return trial


def run_jobs(store: JobStore, jobs: dict[str, tuple[dict, int]], run_job, on_result=None) -> dict[str, dict]:
    """Run (or wait for other workers to run) every job; returns each job's stored result."""
    keys = set(jobs)
    while True:
        store.fail_stale()
        done = store.results(keys)
        if len(done) == len(keys):
            return done
        taken = {t.user_attrs.get("job") for t in store.trials()}
        free = [k for k in jobs if k not in taken]
        if not free:
            time.sleep(POLL_SECONDS)  # the rest are in flight in other workers
            continue
        trial = store.claim(free[0])
        if trial is None:
            continue
        point, seed = jobs[free[0]]
        try:
            result = run_job(point, seed)
        except BaseException:
            store.study.tell(trial, state=TrialState.FAIL)  # Ctrl-C or a crash: this job will run again
            raise
        for name in ("accuracy", "seconds", "diverged", "epochs"):
            trial.set_user_attr(name, result[name])
        trial.set_user_attr("point", point)
        trial.set_user_attr("seed", seed)
        store.study.tell(trial, result["accuracy"])
        if on_result:
            on_result(point, seed, result)


def point_stats(results: list[dict]) -> dict:
    acc = np.array([r["accuracy"] for r in results])
    secs = np.array([r["seconds"] for r in results])
    std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    return {"runs": len(acc), "accuracy_mean": float(acc.mean()), "accuracy_std": std,
            "accuracy_se": std / np.sqrt(len(acc)), "share_at_least_99": float((acc >= 99.0).mean()),
            "seconds_mean": float(secs.mean()), "diverged": int(sum(r["diverged"] for r in results)),
            "accuracies": acc.tolist()}


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch's t-test p-value of a vs b; None when it is undefined (too few runs, no spread)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def choose(spec: SweepSpec, candidates: list[tuple[object, dict]]) -> object:
    """The value to keep: best mean accuracy, or the fastest reaching the target (best accuracy if none do)."""
    if spec.objective == "time":
        reaching = [(v, s) for v, s in candidates if s["accuracy_mean"] >= spec.target]
        if reaching:
            return min(reaching, key=lambda vs: vs[1]["seconds_mean"])[0]
    return max(candidates, key=lambda vs: vs[1]["accuracy_mean"])[0]


def coordinate_ascent(spec: SweepSpec, store: JobStore, run_job: Callable[[dict, int], dict],
                      on_result=None) -> dict:
    """For each parameter in turn try every value, keep the best, move on; repeat for `rounds` or until
    a whole round changes nothing. Returns the sweep's record (phases, best point)."""
    best = {name: getattr(spec.recipe.net if name in NET_FIELDS else spec.recipe, name)
            for name, _ in spec.params}
    phases = []
    for round_index in range(spec.rounds):
        changed = False
        for name, values in spec.params:
            tried = list(dict.fromkeys([best[name], *values]))
            points = {v: {**best, name: v} for v in tried}
            jobs = {job_key(p, s): (p, s) for p in points.values() for s in range(spec.runs)}
            done = run_jobs(store, jobs, run_job, on_result)
            stats = {v: point_stats([done[job_key(p, s)] for s in range(spec.runs)]) for v, p in points.items()}
            incumbent = best[name]
            for v, s in stats.items():
                s["value"] = v
                s["p_vs_incumbent"] = None if v == incumbent else welch_p(
                    s["accuracies"], stats[incumbent]["accuracies"])
            chosen = choose(spec, list(stats.items()))
            phases.append({"round": round_index + 1, "param": name, "incumbent": incumbent, "chosen": chosen,
                           "points": [stats[v] for v in tried]})
            if chosen != incumbent:
                best[name], changed = chosen, True
        if not changed:
            break
    return {"best": best, "phases": phases}


def real_job_runner(spec: SweepSpec, mnist, device):
    """Train the recipe at a point for a seed; preparation is shared across points of one layout."""
    from fastmnist.bench import Preparer, warm_up
    from fastmnist.train import train_run

    preparer, warmed = Preparer(mnist, device), set()

    def run(point: dict, seed: int) -> dict:
        recipe = apply_point(spec.recipe, point)
        data = preparer(recipe)
        if recipe.name not in warmed:
            warm_up(recipe, data)
            warmed.add(recipe.name)
        result = train_run(recipe, data, seed)
        return {"accuracy": result.accuracy, "seconds": result.seconds, "diverged": result.diverged,
                "epochs": result.epochs}
    return run


def sweep_table(record: dict) -> str:
    lines = [f"{'round':>5} {'param':<16} {'value':>10} {'runs':>4} {'accuracy %':>16} {'SE':>6} {'>=99%':>6} "
             f"{'seconds':>8} {'p vs kept':>9}"]
    for phase in record["phases"]:
        for s in phase["points"]:
            mark = " <- kept" if s["value"] == phase["chosen"] else ""
            p = "-" if s["p_vs_incumbent"] is None else f"{s['p_vs_incumbent']:.3f}"
            lines.append(f"{phase['round']:>5} {phase['param']:<16} {str(s['value']):>10} {s['runs']:>4} "
                         f"{s['accuracy_mean']:>8.3f} +- {s['accuracy_std']:.3f} {s['accuracy_se']:>6.3f} "
                         f"{100 * s['share_at_least_99']:>5.0f}% {s['seconds_mean']:>8.2f} {p:>9}{mark}")
    lines.append("best: " + ", ".join(f"{k}={v}" for k, v in record["best"].items()))
    lines.append("p vs kept: Welch's t-test of the point's accuracies against the value held when the "
                 "parameter's turn began")
    return "\n".join(lines)


def sweep_plots(record: dict, out_dir: Path) -> list[Path]:
    """One picture per parameter: mean accuracy vs value, error bars one standard error, 99% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastmnist.report import save_figure

    paths = []
    for name in dict.fromkeys(p["param"] for p in record["phases"]):
        fig, ax = plt.subplots(figsize=(6, 4))
        for phase in (p for p in record["phases"] if p["param"] == name):
            points = phase["points"]
            if all(isinstance(s["value"], (int, float)) for s in points):
                points = sorted(points, key=lambda s: s["value"])  # numbers read left to right
            ax.errorbar([str(s["value"]) for s in points], [s["accuracy_mean"] for s in points],
                        yerr=[s["accuracy_se"] for s in points], fmt="o-", capsize=4,
                        label=f"round {phase['round']} (kept {phase['chosen']})")
        ax.axhline(99.0, color="red", linestyle=":", label="99%")
        ax.set_xlabel(name)
        ax.set_ylabel("test accuracy % (mean +- SE)")
        ax.set_title(f"sweep: {name}")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"sweep-{name}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def default_study_name(spec: SweepSpec) -> str:
    params = ";".join(f"{n}={','.join(map(str, v))}" for n, v in spec.params)
    return f"{spec.recipe.name}|{params}|runs={spec.runs}"
