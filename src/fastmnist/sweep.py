"""`fastmnist sweep`: the original study's coordinate ascent, many seeds per point, persisted run by run.

Every (point, seed) pair is a job; every job is one Optuna trial whose user attributes hold the point, the
seed and the result. Nothing lives only in memory, so Ctrl-C loses at most the run in flight and the same
command resumes. Several workers may share one study: a worker claims a job by creating a trial tagged with
it, then checks the store; of several trials for one job, only the lowest-numbered one runs. A worker
records a heartbeat while it runs a job, so the job of a worker that died is failed and rerun by another
once its heartbeat is older than the grace period (`--stale-after`).
"""

from __future__ import annotations

import json
import random
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from fastmnist.errors import FastMnistError
from fastmnist.recipes import NET_FIELDS, Recipe, derive, parse_param, split_assignment
from fastmnist.stats import summarize, welch_p

ALIVE = (TrialState.RUNNING, TrialState.COMPLETE)
POLL_SECONDS = 2.0  # how often a worker with nothing to claim looks for others' results
CREATE_TRIES = 8  # workers started together race to create the schema; the losers retry


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


def heartbeat_interval(stale_after: float) -> int:
    """Beat a few times within the grace period, at most every 10 s: cheap, and a dead worker shows soon."""
    return max(1, min(10, int(stale_after // 3)))


def open_study(url: str, name: str, stale_after: float = 60.0) -> optuna.Study:
    """The study at `url`, created if new. Creation is retried: workers started together race to create
    the tables, and the losers of that race find them made on the next try."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats outside Study.optimize are what this module is for: Optuna's notes about it are noise here
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    for attempt in range(CREATE_TRIES):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=heartbeat_interval(stale_after),
                                                 grace_period=max(1, int(stale_after)))
            return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                       load_if_exists=True)
        except Exception as exc:  # bad URLs, missing drivers, unreachable servers, creation races
            if attempt + 1 < CREATE_TRIES and creation_race(exc):
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise FastMnistError(f"cannot open sweep storage {url!r}: {type(exc).__name__}: {first}") from None
    raise AssertionError("unreachable")


def creation_race(exc: Exception) -> bool:
    """True for the errors two processes creating one schema at once give each other."""
    text = str(exc)
    return any(sign in text for sign in ("already exists", "UNIQUE constraint failed", "duplicate key",
                                         "database is locked"))


class Heartbeat:
    """Records a trial's heartbeat in the store every few seconds while its job runs."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        storage.record_heartbeat(trial_id)  # before the thread starts: no moment without a beat
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self):
        while not self.stop.wait(self.storage.get_heartbeat_interval()):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a store that went away: the job's own write will report it
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class JobStore:
    """The study seen as jobs: which are done, which are claimed, and claiming one."""

    def __init__(self, study: optuna.Study):
        self.study = study

    def trials(self, states=ALIVE) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    def finished_count(self) -> int:
        return len(self.trials((TrialState.COMPLETE,)))

    def fail_stale(self) -> None:
        """RUNNING trials whose heartbeat stopped belong to a worker that died (kill -9, power loss)."""
        optuna.storages.fail_stale_trials(self.study)

    def results(self, keys: set[str]) -> dict[str, dict]:
        return {t.user_attrs["job"]: t.user_attrs for t in self.trials((TrialState.COMPLETE,))
                if t.user_attrs.get("job") in keys}

    def claim(self, key: str):
        """A trial that owns `key`, or None if another worker's trial has it."""
        trial = self.study.ask()
        trial.set_user_attr("job", key)
        owners = [t.number for t in self.trials() if t.user_attrs.get("job") == key]
        if min(owners) != trial.number:
            self.study.tell(trial, state=TrialState.PRUNED)  # a duplicate claim: the lower number runs it
            return None
        return trial

    def finish(self, trial, point: dict, seed: int, result: dict) -> bool:
        """Store a result; False when the trial was meanwhile failed as stale and taken over (a lost
        race: the other worker's run counts, this one is dropped quietly)."""
        try:
            for name in ("accuracy", "seconds", "diverged", "epochs"):
                trial.set_user_attr(name, result[name])
            trial.set_user_attr("point", point)
            trial.set_user_attr("seed", seed)
            self.study.tell(trial, result["accuracy"])
        except UpdateFinishedTrialError:
            return False
        return True


def run_jobs(store: JobStore, jobs: dict[str, tuple[dict, int]], run_job, on_start=None, on_result=None,
             on_wait=None) -> tuple[dict[str, dict], int]:
    """Run (or wait for other workers to run) every job; returns each job's stored result and how many
    this worker ran."""
    keys, ran, waiting = set(jobs), 0, False
    while True:
        store.fail_stale()
        done = store.results(keys)
        if len(done) == len(keys):
            return done, ran
        taken = {t.user_attrs.get("job") for t in store.trials()}
        free = [k for k in jobs if k not in taken]
        if not free:
            if on_wait and not waiting:
                on_wait(len(keys) - len(done))
            waiting = True
            time.sleep(POLL_SECONDS)  # the rest are in flight in other workers
            continue
        waiting = False
        trial = store.claim(free[0])
        if trial is None:
            continue
        point, seed = jobs[free[0]]
        if on_start:
            on_start(point, seed)
        try:
            with Heartbeat(store.study._storage, trial._trial_id):
                result = run_job(point, seed)
        except BaseException:
            try:  # Ctrl-C, SIGTERM or a crash: release the job so it runs again
                store.study.tell(trial, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass
            raise
        if store.finish(trial, point, seed, result):
            ran += 1
            if on_result:
                on_result(point, seed, result)


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
            jobs = {job_key(p, s): (p, s) for p in points.values() for s in range(spec.runs)}
            done, ran_now = run_jobs(store, jobs, run_job, on_start, on_result, on_wait)
            ran += ran_now
            used |= set(jobs)
            stats = {v: point_stats([done[job_key(p, s)] for s in range(spec.runs)], spec.target)
                     for v, p in points.items()}
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
    return {"best": best, "phases": phases, "runs_total": len(used), "runs_run_here": ran,
            "runs_reused": len(used) - ran}


def real_job_runner(spec: SweepSpec, runner) -> Callable[[dict, int], dict]:
    """Train the recipe at a point for a seed through the run core (warm, data shared across points)."""
    def run(point: dict, seed: int) -> dict:
        result = runner.run(apply_point(spec.recipe, point), seed)
        return {"accuracy": result.accuracy, "seconds": result.seconds, "diverged": result.diverged,
                "epochs": result.epochs}
    return run


def default_study_name(spec: SweepSpec) -> str:
    params = ";".join(f"{n}={','.join(map(str, v))}" for n, v in spec.params)
    return f"{spec.recipe.name}|{params}|runs={spec.runs}"
