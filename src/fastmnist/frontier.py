"""`fastmnist search`: the fastest recipe whose mean still reaches the target with confidence, found by
Optuna's samplers (never a hand-written one) over any recipe fields.

Each trial is a point of the space. It runs interleaved with a reference recipe on the same tuning seeds,
each seed its own weights and data order, so its time is the median paired ratio against the reference
(the bench's method, robust to a drifting machine), and its accuracy is a constraint: the one-sided p that
the trial's mean reaches the target must be below `alpha`. A trial stops early (pruned) once its first
seeds already show, at 95% confidence, that its mean lies below the target; a trial that meets the
constraint on its base seeds gets more seeds before its values are told. Trials live in an Optuna storage:
several workers share one study, Ctrl-C or a killed worker loses at most the trial in flight (a killed
worker's trial is failed after its heartbeat stops and run again once), and the same command resumes,
counting the trials already finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastmnist.errors import FastMnistError
from fastmnist.recipes import Recipe, overridden, parse_param, split_assignment
from fastmnist.stats import p_reaches, paired_ratio_interval

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class Dimension:
    """One searched field: a range (low:high[:step|log]) or a list of values."""
    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple | None = None


@dataclass(frozen=True)
class SearchSpec:
    recipe: Recipe
    reference: Recipe
    space: tuple[Dimension, ...]
    seeds: tuple[int, ...]  # every trial's base seeds (the tuning range by default)
    extra_seeds: tuple[int, ...] = ()  # a trial that meets the constraint on its base seeds runs these too
    target: float = 99.0
    alpha: float = 0.01
    sampler: str = "tpe"


def parse_space(recipe: Recipe, texts: list[str]) -> tuple[Dimension, ...]:
    """['lr=0.005:0.05:log', 'batch_size=256:1024:64', 'train_fraction=0.8,0.9,1.0'] -> dimensions, every
    bound and value checked as --set checks it, before anything runs."""
    if not texts:
        raise FastMnistError("give at least one --space NAME=LOW:HIGH[:STEP|:log] or NAME=V1,V2,...")
    dims: list[Dimension] = []
    for text in texts:
        name, values = split_assignment(text)
        if name in {d.name for d in dims}:
            raise FastMnistError(f"--space {name} given twice")
        if ":" in values:
            parts = values.split(":")
            if len(parts) not in (2, 3):
                raise FastMnistError(f"--space {text!r}: expected NAME=LOW:HIGH, NAME=LOW:HIGH:STEP or LOW:HIGH:log")
            low, high = (parse_param(recipe, name, v) for v in parts[:2])
            if isinstance(low, (bool, str)):
                raise FastMnistError(f"--space {text!r}: {name} takes a list of values, not a range")
            if not low < high:
                raise FastMnistError(f"--space {text!r}: LOW must be below HIGH")
            log = len(parts) == 3 and parts[2].strip() == "log"
            step = None if len(parts) == 2 or log else parse_param(recipe, name, parts[2])
            if log and low <= 0:
                raise FastMnistError(f"--space {text!r}: a log range needs LOW above 0")
            dims.append(Dimension(name, low, high, step, log))
        else:
            choices = tuple(dict.fromkeys(parse_param(recipe, name, v) for v in values.split(",") if v.strip()))
            if not choices:
                raise FastMnistError(f"--space {text!r}: no values")
            dims.append(Dimension(name, choices=choices))
    return tuple(dims)


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


def cannot_reach(accuracies: list[float], target: float) -> bool:
    """True once the runs show at 95% confidence that the mean is below the target (one-sided t-test)."""
    from scipy import stats

    acc = np.asarray(accuracies, float)
    if len(acc) < 3 or acc.std() == 0:
        return len(acc) >= 3 and acc.mean() < target
    return float(stats.ttest_1samp(acc, target, alternative="less").pvalue) < 0.05


def make_sampler(spec: SearchSpec):
    """Optuna's own sampler; each trial states the accuracy constraint itself (`state_constraint`), which
    TPE and NSGA-II read from the storage."""
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=0, population_size=8)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=0)
    raise FastMnistError(f"--sampler {spec.sampler!r}: choose from {', '.join(SAMPLERS)}")


def directions(spec: SearchSpec) -> tuple[str, ...]:
    """TPE minimises the time ratio under the constraint; NSGA-II (and random) keep the whole front of time
    ratio against accuracy."""
    return ("minimize",) if spec.sampler == "tpe" else ("minimize", "maximize")


def objective(spec: SearchSpec, runner, on_trial=None):
    """What one trial does: the point's recipe and the reference run interleaved on the base seeds
    (pruned as soon as the point cannot reach the target), on the extra seeds too when it meets it."""
    import optuna

    def run(trial) -> tuple[float, ...] | float:
        point = suggest(trial, spec.space)
        recipe = overridden(spec.recipe, point)
        if on_trial:
            on_trial(trial.number, point)
        try:
            return measure(trial, recipe)
        finally:
            runner.forget(recipe)  # a trial's engine serves no other trial

    def measure(trial, recipe: Recipe) -> tuple[float, ...] | float:
        mine, theirs = [], []
        for i, seed in enumerate(spec.seeds + spec.extra_seeds):
            if i == len(spec.seeds) and (p_reaches([r.accuracy for r in mine], spec.target) or 1.0) >= spec.alpha:
                break  # only a trial that meets the constraint on its base seeds earns the extra ones
            results = runner.run_interleaved([spec.reference, recipe], [seed])
            theirs.append(results[spec.reference.name][0])
            mine.append(results[recipe.name][0])
            trial.report(float(np.mean([r.accuracy for r in mine])), i)
            record(trial, recipe, mine, theirs, spec)
            if cannot_reach([r.accuracy for r in mine], spec.target):
                state_constraint(trial, spec)
                raise optuna.TrialPruned()
        state_constraint(trial, spec)
        ratio = trial.user_attrs["time_ratio"]
        return ratio if spec.sampler == "tpe" else (ratio, trial.user_attrs["accuracy_mean"])
    return run


def state_constraint(trial, spec: SearchSpec) -> None:
    """The accuracy constraint, once a trial's seeds are all in: feasible when p - alpha <= 0."""
    p = trial.user_attrs["p_value"]
    trial.set_constraint("accuracy_p_minus_alpha", 1.0 if p is None else p - spec.alpha)


def record(trial, recipe: Recipe, mine: list, theirs: list, spec: SearchSpec) -> None:
    """What a trial measured so far, as user attributes the dashboard and the front read."""
    accuracies = [r.accuracy for r in mine]
    interval = paired_ratio_interval([r.seconds for r in theirs], [r.seconds for r in mine])
    p = p_reaches(accuracies, spec.target)
    for key, value in {"recipe": recipe.name, "seeds": [r.seed for r in mine], "accuracies": accuracies,
                       "accuracy_mean": float(np.mean(accuracies)),
                       "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
                       "share_reaching_target": float(np.mean([a >= spec.target for a in accuracies])),
                       "p_value": p, "feasible": p is not None and p < spec.alpha,
                       "time_ratio": interval["median"], "time_ratio_ci95": interval["ci95"],
                       "seconds_median": float(np.median([r.seconds for r in mine])),
                       "diverged": int(sum(r.diverged for r in mine))}.items():
        trial.set_user_attr(key, value)


def trials_table(study) -> list[dict]:
    """Every finished or pruned trial: its point, what it measured, and whether it is on the front."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if "time_ratio" not in t.user_attrs:
            continue
        point = {k: round(v, 12) if isinstance(v, float) else v for k, v in t.params.items()}  # 0.95, not 0.9500..01
        rows.append({"trial": t.number, "state": t.state.name.lower(), "point": point,
                     **{k: t.user_attrs.get(k) for k in ("recipe", "seeds", "accuracy_mean", "accuracy_std",
                                                        "share_reaching_target", "p_value", "feasible",
                                                        "time_ratio", "time_ratio_ci95", "seconds_median",
                                                        "diverged")}})
    front = pareto([r for r in rows if r["state"] == "complete"])
    for r in rows:
        r["on_front"] = r["trial"] in front
    return rows


def pareto(rows: list[dict]) -> set[int]:
    """Trials no other finished trial beats on both time ratio (lower) and mean accuracy (higher)."""
    return {r["trial"] for r in rows if not any(
        o["time_ratio"] <= r["time_ratio"] and o["accuracy_mean"] >= r["accuracy_mean"]
        and (o["time_ratio"], o["accuracy_mean"]) != (r["time_ratio"], r["accuracy_mean"]) for o in rows)}


def best_trial(rows: list[dict]) -> dict | None:
    """The fastest trial that meets the constraint."""
    feasible = [r for r in rows if r["state"] == "complete" and r["feasible"]]
    return min(feasible, key=lambda r: r["time_ratio"]) if feasible else None


def recipe_file(spec: SearchSpec, base: str, best: dict, study_name: str) -> str:
    """A recipe file that `fastmnist bench FILE.py:best` and `derive` accept: the searched recipe (`base`, as
    it was named) with the best point."""
    args = ", ".join(f"{k}={v!r}" for k, v in best["point"].items())
    summary = (f"found by fastmnist search, study {study_name}, trial {best['trial']}: time ratio "
               f"{best['time_ratio']:.2f} against {spec.reference.name}, {best['accuracy_mean']:.2f}% "
               f"(p {best['p_value']:.3g}) on tuning seeds")
    return (f'"""{summary}.\n\nClaim it only from a bench on seeds this search never saw, e.g.\n'
            f'    fastmnist bench {spec.reference.name} THIS_FILE.py:best --runs 25\n"""\n\n'
            f"import fastmnist\n\n"
            f"best = fastmnist.derive(fastmnist.recipe({base!r}), \"search_best\",\n"
            f"                        {summary!r},\n"
            f"                        {args})\n")


def front_plot(rows: list[dict], spec: SearchSpec, path: Path) -> None:
    """Time ratio against mean accuracy, every finished trial; the front joined, each point's p written."""
    from fastmnist.output import save_figure
    from fastmnist.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [r for r in rows if r["state"] == "complete"]
    for feasible, style in ((True, dict(color="tab:green", label=f"p < {spec.alpha:g}")),
                            (False, dict(color="tab:gray", label="constraint not met"))):
        chosen = [r for r in done if bool(r["feasible"]) == feasible]
        ax.scatter([r["time_ratio"] for r in chosen], [r["accuracy_mean"] for r in chosen], **style)
    for r in done:
        p = r["p_value"]
        ax.annotate("p n/a" if p is None else f"p {p:.2g}", (r["time_ratio"], r["accuracy_mean"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 3))
    front = sorted((r for r in done if r["on_front"]), key=lambda r: r["time_ratio"])
    ax.plot([r["time_ratio"] for r in front], [r["accuracy_mean"] for r in front], color="tab:blue", lw=1,
            label="front")
    ax.axhline(spec.target, color="tab:red", lw=0.8, ls="--", label=f"target {spec.target:g}%")
    ax.set_xlabel(f"median time ratio against {spec.reference.name} (paired seeds)")
    ax.set_ylabel("mean test accuracy %")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def front_table(rows: list[dict], spec: SearchSpec) -> str:
    lines = [f"{'trial':>5} {'state':<8} {'ratio':>6} {'accuracy %':>10} {'p':>7} {'seeds':>5} front  point"]
    for r in sorted(rows, key=lambda r: (r["state"] != "complete", r["time_ratio"])):
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3f}"
        point = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["point"].items())
        lines.append(f"{r['trial']:>5} {r['state']:<8} {r['time_ratio']:>6.2f} {r['accuracy_mean']:>10.3f} {p:>7} "
                     f"{len(r['seeds']):>5} {'*' if r['on_front'] else ' ':^5}  {point}")
    lines.append(f"ratio: median paired time against {spec.reference.name}; p: one-sided t-test that the mean "
                 f"reaches {spec.target:g}% (the constraint: p < {spec.alpha:g}); *: on the front of time "
                 f"against accuracy")
    return "\n".join(lines)


def default_study_name(spec: SearchSpec) -> str:
    space = ";".join(d.name for d in spec.space)
    return f"search|{spec.recipe.name}|vs {spec.reference.name}|{space}|{spec.sampler}"
