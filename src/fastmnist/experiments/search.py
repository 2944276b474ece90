"""`fastmnist search`: the fastest recipe whose mean still reaches the target, found by Optuna's samplers
over any recipe fields, its decisions made with stated power and its best verified on fresh seeds.

Each trial is a point of the space. It runs interleaved with a reference recipe on the same tuning seeds,
each seed its own weights and data order, so its time is the median paired ratio against the reference.
Its accuracy is decided by a seed plan (seed_plan.py): seeds come in looks of a few at a time; after
any look a trial whose mean is already shown below the target (one-sided p < `futility`) is pruned; at
`max_seeds` it is feasible when the one-sided t-test puts its mean above the target at level `alpha`.
`operating_characteristics` gives the chance of each verdict for a true mean and SD, and the defaults are
chosen so a recipe at 99.06% (SD 0.07) is judged feasible >= 80% of the time and one at 99.00% <= 5%.
With `rule="replicates"` a trial must also look like a claim: its measured mean and SD would pass a fresh
25-seed bench >= 95% of the time, and a verified candidate is held to the same on its fresh seeds.

A feasible trial is COMPLETE with its values; an infeasible one is PRUNED (its constraint stored where
optuna-dashboard reads it), so the dashboard's best trial and every front are feasible. At the end the
search benches its fastest feasible trials against the reference on fresh seeds no trial used
(verification.py), and writes its table, front and best.py from the store (front.py).
Trials live in an Optuna storage shared by workers; a killed worker's trial is retried, the study never
holds more than `--trials` finished trials, and the same command resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fastmnist.errors import FastMnistError
from fastmnist.experiments.front import (best_line, front_plot, front_table, invalid_trials, recipe_file,
                                         trials_table)
from fastmnist.experiments.ledger import Ledger, definition, entry as ledger_entry, without_neutral
from fastmnist.experiments.seed_plan import FEASIBILITY_RULES, SeedPlan
from fastmnist.experiments.verification import verification_seeds, verify
from fastmnist.experiments.seeds import describe_seeds
from fastmnist.experiments.stats import CLAIM_REPLICATION, p_reaches, paired_ratio_interval, replication_probability
from fastmnist.experiments.store import open_study, retry_lost_trials
from fastmnist.recipes.overrides import Dimension, overridden, parse_fields
from fastmnist.recipes.recipe import Recipe
from fastmnist.results.machine import load_average, machine_info
from fastmnist.results.output import check_folder, write_study, write_text
from fastmnist.results.provenance import redact
from fastmnist.results.records import envelope, with_load
from fastmnist.training.runner import Load, Runner


def search(recipe: Recipe, reference: Recipe, space: list[str], seeds: list[int], load: Load, trials: int,
           sampler: str = "tpe", target: float = 99.0, look: int = 4, alpha: float = 0.04, rule: str = "p",
           verify_seeds: int = 25, verify_top: int = 3,
           storage: str | None = None, study: str | None = None, stale_after: float = 60.0,
           out_dir: str | Path | None = None, on_trial=None, on_verify=None, show=None) -> tuple[dict, list[Path]]:
    """Optuna's sampler over `space` (['lr=0.005:0.05:log', ...]) until the study holds `trials` finished or
    pruned trials (a rerun resumes; workers on one storage share them), each trial interleaved with `reference`
    on as many of `seeds` as its seed plan (seed_plan.py: a look of `look` seeds at a time, the verdict at level
    `alpha` after all of them) gives it; then the fastest feasible trials verified on fresh seeds.
    With `out_dir`: search.json, search.md, front.png and, when a candidate passed verification, best.py, all
    made from the store (the last worker to finish writes the whole study), after `show(table, record)`."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if not 0 < alpha < 1:
        raise FastMnistError(f"alpha={alpha:g}: expected a level between 0 and 1, e.g. 0.04")
    if not 0 < target <= 100:
        raise FastMnistError(f"target={target:g}: expected a test accuracy in (0, 100] %")
    if rule not in FEASIBILITY_RULES:
        raise FastMnistError(f"--feasible {rule!r}: choose from {', '.join(FEASIBILITY_RULES)}")
    plan = SeedPlan(look=min(look, len(seeds)), max_seeds=len(seeds), alpha=alpha, rule=rule)  # at most every seed given
    start = load_average()
    dims = parse_fields(recipe, space, "--space", ranges=True)
    spec = SearchSpec(recipe, reference, dims, tuple(seeds), target, sampler, plan, verify_seeds, verify_top,
                      verify_max_seeds=2 * verify_seeds)
    if out_dir is not None:  # made only once every input is checked: a refused command leaves nothing behind

        out_dir = check_folder(out_dir, "--out")
        storage = storage or f"sqlite:///{Path(out_dir) / 'search.db'}"
    name = study or spec.default_study()
    sampler_seed = new_sampler_seed()
    optuna_study, storage_object = open_study(storage, name, stale_after, directions(spec),
                                              make_sampler(spec, sampler_seed), retry_failed=True)
    check_identity(optuna_study, spec)
    optuna_study.set_metric_names([f"time ratio vs {reference.name}"] +
                                  ([] if sampler == "tpe" else [f"accuracy % ({target:g}% target)"]))
    retry_lost_trials(optuna_study, storage_object)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    device, mnist = load()
    runner = Runner(mnist, device)
    ledger = Ledger(storage)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Ctrl-C: our one line, not Optuna's traceback
    try:  # until the study is full; again while trials lost by killed workers wait to be retried
        while (left := trials - len(optuna_study.get_trials(deepcopy=False, states=finished))) > 0:
            optuna_study.optimize(objective(spec, runner, trials, storage_object, sampler_seed, on_trial),
                                  n_trials=left, catch=(Surplus,), callbacks=[MaxTrialsCallback(trials, states=finished)])
            retry_lost_trials(optuna_study, storage_object)
            if not optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                break  # what is left is running in other workers: the last of them writes the whole study
    finally:
        optuna.logging.set_verbosity(verbosity)
    rows = trials_table(optuna_study)
    ledger.add([ledger_entry(r, list(seeds[:plan.max_seeds]), "tuning", "search", f"study {name!r}")
                for r in [recipe, reference]] +
               [entry_of(row, seeds, name) for row in rows])
    verified = optuna_study.user_attrs.get("verification")
    if verified is None or [c["trial"] for c in verified["candidates"]] != \
            [r["trial"] for r in sorted((r for r in rows if r["feasible"]), key=lambda r: r["time_ratio"])[:verify_top]]:
        fresh = verification_seeds(verify_seeds, ledger) if verify_seeds else []
        verified = verify(spec, rows, runner, ledger, fresh, on_verify)
        optuna_study.set_user_attr("verification", verified)
    record = with_load({**envelope("search", machine_info(device), [recipe, reference]), "study": name,
                        "storage": redact(storage) if storage else "(in memory)", "sampler": sampler,
                        "sampler_seeds": sorted({r["sampler_seed"] for r in rows if r.get("sampler_seed") is not None}),
                        "space": list(space), "target": target, "plan": dataclasses.asdict(plan),
                        "seeds": describe_seeds(list(seeds[:plan.max_seeds])), "seed_use": "tuning",
                        "trials": rows, "invalid_trials": invalid_trials(optuna_study),
                        "verification": verified}, start)
    record["best"] = best_line(record)
    if out_dir is None:
        return record, []
    out_dir = Path(out_dir)
    pictures = [(out_dir / "front.png", lambda path: front_plot(rows, spec, path, verified), "the front's picture")]
    if verified["best"]:
        pictures.append((out_dir / "best.py", lambda path: write_text(path, recipe_file(
            spec, verified["best"], name, len(rows), verified)), "the best recipe"))
    return record, write_study(out_dir, "search", record, front_table(rows, spec, verified), show, pictures,
                               summary=record["best"])


def entry_of(row: dict, seeds: list[int], study: str) -> dict:
    """A trial's seeds in the seed ledger: its definition was tuned on them."""
    return {**ledger_entry(Recipe("", ""), row["seeds"], "tuning", "search", f"study {study!r}, trial {row['trial']}"),
            "definition": row["definition"], "recipe": row["recipe"]}


SAMPLERS = ("tpe", "nsga2", "random")
CONSTRAINT_KEY = "constraints"  # the system attribute optuna-dashboard (and Optuna's samplers) read


@dataclass(frozen=True)
class SearchSpec:
    recipe: Recipe
    reference: Recipe
    space: tuple[Dimension, ...]
    seeds: tuple[int, ...]  # the tuning seeds, in order; a trial takes as many as its plan gives it
    target: float = 99.0
    sampler: str = "tpe"
    plan: SeedPlan = SeedPlan()
    verify_seeds: int = 25  # fresh seeds the best candidates are benched on at the end (0: none)
    verify_top: int = 3  # how many of the fastest feasible trials are verified
    verify_max_seeds: int = 50  # seeds verification may grow to while the best and runner-up overlap (2x)

    def default_study(self) -> str:
        digest = hashlib.sha256(json.dumps(identity(self), sort_keys=True, default=str).encode()).hexdigest()[:10]
        space = ";".join(d.name for d in self.space)
        return f"search|{self.recipe.name}|vs {self.reference.name}|{space}|{self.sampler}|{digest}"


def identity(spec: SearchSpec) -> dict:
    """What makes two searches the same study: recipes by definition, the space, target, sampler and plan (its
    rule named only where it is not the first one, p: the studies from before it keep their identity)."""
    plan = without_neutral(asdict(spec.plan), {"rule": "p"})
    return {"recipe": definition(spec.recipe), "reference": definition(spec.reference),
            "space": [asdict(d) for d in spec.space], "target": spec.target, "sampler": spec.sampler,
            "plan": plan, "seeds": [spec.seeds[0], len(spec.seeds)]}


def check_identity(study, spec: SearchSpec) -> None:
    """A study holds one search: a new study takes this one's identity, a study of another is refused."""
    mine = json.loads(json.dumps(identity(spec), default=str))
    stored = study.user_attrs.get("search_identity")
    if stored is None:
        study.set_user_attr("search_identity", mine)
    elif stored != mine:
        changed = sorted(k for k in mine if stored.get(k) != mine[k])
        raise FastMnistError(f"the study {study.study_name!r} holds a search with another {', '.join(changed)}; "
                             f"give a new --study (or leave it out for one named after this search)")


def suggest(trial, dims: tuple[Dimension, ...]) -> dict:
    """The trial's point, drawn by the study's sampler, under the fields' own names."""
    point = {}
    for d in dims:
        if d.choices is not None:
            point[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif isinstance(d.low, int):
            point[d.name] = trial.suggest_int(d.name, d.low, d.high, step=int(d.step or 1), log=d.log)
        else:
            point[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
    return point


def make_sampler(spec: SearchSpec, seed: int):
    """Optuna's own sampler, seeded per process (`seed`, recorded with each trial), so a second worker or
    a rerun explores new points instead of replaying the same start."""
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise FastMnistError(f"--sampler {spec.sampler!r}: choose from {', '.join(SAMPLERS)}")


def new_sampler_seed() -> int:
    return secrets.randbits(31)


def directions(spec: SearchSpec) -> tuple[str, ...]:
    """TPE minimises the time ratio of feasible trials; NSGA-II (and random) keep the whole front of time
    ratio against accuracy."""
    return ("minimize",) if spec.sampler == "tpe" else ("minimize", "maximize")


class Surplus(Exception):
    """A trial started when the study already held its `--trials`: failed at once, never run."""


def objective(spec: SearchSpec, runner, trials: int, storage, sampler_seed: int, on_trial=None):
    """What one trial does: the point's recipe and the reference run interleaved, a look of seeds at a time,
    until the seed plan reaches a verdict; feasible trials return their values, others are pruned."""
    import optuna

    from fastmnist.results.machine import describe, machine_info
    from fastmnist.experiments.store import retry_lost_trials, this_worker

    machine = describe(machine_info(runner.device))

    def run(trial) -> tuple[float, ...] | float:
        retry_lost_trials(trial.study, storage)  # a worker killed meanwhile: its trial is queued again
        counted = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number
                   and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                   optuna.trial.TrialState.RUNNING)]
        if len(counted) >= trials:  # the study is full: this worker stops, the others finish what they hold
            trial.study.stop()
            raise Surplus()
        for key, value in {"worker": this_worker(), "machine": machine, "sampler_seed": sampler_seed}.items():
            trial.set_user_attr(key, value)
        point = suggest(trial, spec.space)
        if on_trial:
            on_trial(trial.number, point)
        try:
            recipe = overridden(spec.recipe, point)
        except FastMnistError as exc:  # a point the network cannot be built at: pruned at once, no seed spent
            trial.set_user_attr("verdict", "invalid")
            trial.set_user_attr("problems", [str(exc)])
            raise optuna.TrialPruned() from None
        try:
            return measure(trial, recipe)
        finally:
            runner.forget(recipe)  # a trial's engine serves no other trial

    def measure(trial, recipe: Recipe) -> tuple[float, ...] | float:
        mine, theirs = [], []
        for seed in spec.seeds[:spec.plan.max_seeds]:
            results = runner.run_interleaved([spec.reference, recipe], [seed])
            theirs.append(results[spec.reference.name][0])
            mine.append(results[recipe.name][0])
            verdict = spec.plan.judge([r.accuracy for r in mine], spec.target)
            record(trial, recipe, mine, theirs, spec, verdict)
            if verdict != "continue":
                break
        state_constraint(trial, spec, storage)
        if verdict != "feasible":
            raise optuna.TrialPruned()
        ratio = trial.user_attrs["time_ratio"]
        return ratio if spec.sampler == "tpe" else (ratio, trial.user_attrs["accuracy_mean"])
    return run


def state_constraint(trial, spec: SearchSpec, storage) -> None:
    """The accuracy constraint (p - alpha, and under the replicates rule 0.95 - the replication estimate;
    feasible when every one is <= 0) where optuna-dashboard and Optuna's samplers read it: the trial's
    `constraints` system attribute."""
    p, replication = trial.user_attrs["p_value"], trial.user_attrs["replication_probability"]
    constraints = [1.0 if p is None else p - spec.plan.alpha]
    if spec.plan.rule == "replicates":
        constraints.append(1.0 if replication is None else CLAIM_REPLICATION - replication)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(trial.study.study_name), trial.number)
    storage.set_trial_system_attr(trial_id, CONSTRAINT_KEY, constraints)


def record(trial, recipe: Recipe, mine: list, theirs: list, spec: SearchSpec, verdict: str) -> None:
    """What a trial measured so far, as user attributes the dashboard and the front read."""
    accuracies = [r.accuracy for r in mine]
    interval = paired_ratio_interval([r.seconds for r in theirs], [r.seconds for r in mine])
    p = p_reaches(accuracies, spec.target)
    std = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None
    for key, value in {"recipe": recipe.name, "definition": definition(recipe), "seeds": [r.seed for r in mine],
                       "accuracies": accuracies, "accuracy_mean": float(np.mean(accuracies)),
                       "accuracy_std": std,
                       "replication_probability": replication_probability(float(np.mean(accuracies)), std,
                                                                          spec.target),
                       "share_reaching_target": float(np.mean([a >= spec.target for a in accuracies])),
                       "p_value": p, "verdict": verdict, "feasible": verdict == "feasible",
                       "time_ratio": interval["median"], "time_ratio_ci95": interval["ci95"],
                       "ratios": [a.seconds / b.seconds for a, b in zip(mine, theirs)],
                       "seconds_median": float(np.median([r.seconds for r in mine])),
                       "diverged": int(sum(r.diverged for r in mine))}.items():
        trial.set_user_attr(key, value)
