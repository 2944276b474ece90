"""`fastmnist search`: the fastest recipe whose mean still reaches the target, found by Optuna's samplers
over any recipe fields, its decisions made with stated power and its best verified on fresh seeds.

Each trial is a point of the space. It runs interleaved with a reference recipe on the same tuning seeds,
each seed its own weights and data order, so its time is the median paired ratio against the reference.
Its accuracy is decided by a seed plan (`SeedPlan.judge`): seeds come in looks of a few at a time; after
any look a trial whose mean is already shown below the target (one-sided p < `futility`) is pruned; at
`max_seeds` it is feasible when the one-sided t-test puts its mean above the target at level `alpha`.
`operating_characteristics` gives the chance of each verdict for a true mean and SD, and the defaults are
chosen so a recipe at 99.06% (SD 0.07) is judged feasible >= 80% of the time and one at 99.00% <= 5%.

A feasible trial is COMPLETE with its values; an infeasible one is PRUNED (its constraint stored where
optuna-dashboard reads it), so the dashboard's best trial and every front are feasible. At the end the
search benches its fastest feasible trials against the reference on fresh seeds no trial used (recorded
in the seed ledger as verification, so no later claim takes them for fresh), adds seeds while the best's
ratio interval still overlaps the runner-up's (up to a cap), and writes best.py from the resolved recipe.
Trials live in an Optuna storage shared by workers; a killed worker's trial is retried, the study never
holds more than `--trials` finished trials, and the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from fastmnist.errors import FastMnistError
from fastmnist.recipes import Recipe, overridden, parse_param, split_assignment
from fastmnist.stats import ALPHA, median_interval, p_reaches, paired_ratio_interval

SAMPLERS = ("tpe", "nsga2", "random")
CONSTRAINT_KEY = "constraints"  # the system attribute optuna-dashboard (and Optuna's samplers) read


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
class SeedPlan:
    """How many seeds a trial gets, and the rules that decide it. The defaults meet the operating
    characteristics in docs/search.md: at SD 0.07, P(feasible | mean 99.06) >= 0.80 and
    P(feasible | mean 99.00) <= 0.05, and a clearly worse trial stops after its first look."""
    look: int = 4  # seeds per look: the pruning rule is checked after each
    max_seeds: int = 12  # the verdict: feasible or not, at this many seeds
    alpha: float = 0.04  # feasible when the one-sided p that the mean reaches the target is below this
    futility: float = 0.05  # pruned at a look when the one-sided p that the mean lies below it is below this

    def judge(self, accuracies, target: float) -> str:
        """'continue', 'pruned' (shown below the target at a look) or, at max_seeds, 'feasible' / 'infeasible'."""
        n = len(accuracies)
        if n >= self.max_seeds:
            p = p_reaches(accuracies, target)
            return "feasible" if p is not None and p < self.alpha else "infeasible"
        if n >= 2 and n % self.look == 0 and below_target_p(accuracies, target) < self.futility:
            return "pruned"
        return "continue"


def below_target_p(accuracies, target: float) -> float:
    """One-sided p that the mean lies below the target (1.0 when there is no spread to test with, unless
    every run lies below it)."""
    from scipy import stats

    acc = np.asarray(accuracies, float)
    if acc.std() == 0:
        return 0.0 if acc.mean() < target else 1.0
    return float(stats.ttest_1samp(acc, target, alternative="less").pvalue)


def operating_characteristics(mean: float, sd: float, plan: SeedPlan, target: float = 99.0, trials: int = 4000,
                              seed: int = 0) -> dict:
    """The plan applied to `trials` synthetic trials whose runs are normal(mean, sd): how often each is
    judged feasible, and the seeds one costs on average."""
    rng = np.random.default_rng(seed)
    feasible, seeds = 0, 0
    for _ in range(trials):
        draws = rng.normal(mean, sd, plan.max_seeds)
        for n in range(1, plan.max_seeds + 1):
            verdict = plan.judge(draws[:n], target)
            if verdict != "continue":
                break
        feasible += verdict == "feasible"
        seeds += n
    return {"mean": mean, "sd": sd, "p_feasible": feasible / trials, "mean_seeds": seeds / trials}


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


def identity(spec: SearchSpec) -> dict:
    """What makes two searches the same study: recipes by definition, the space, target, sampler and plan."""
    from fastmnist.ledger import definition

    return {"recipe": definition(spec.recipe), "reference": definition(spec.reference),
            "space": [asdict(d) for d in spec.space], "target": spec.target, "sampler": spec.sampler,
            "plan": asdict(spec.plan), "seeds": [spec.seeds[0], len(spec.seeds)]}


def default_study_name(spec: SearchSpec) -> str:
    digest = hashlib.sha256(json.dumps(identity(spec), sort_keys=True, default=str).encode()).hexdigest()[:10]
    space = ";".join(d.name for d in spec.space)
    return f"search|{spec.recipe.name}|vs {spec.reference.name}|{space}|{spec.sampler}|{digest}"


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


def read_space_file(path: str | Path) -> list[str]:
    """A named space: a TOML file of NAME = "LOW:HIGH[:STEP|:log]" or "V1,V2,..." lines (a [space] table or
    top level), so a search is reproducible from a file kept beside its results."""
    import tomllib

    try:
        table = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise FastMnistError(f"--space-file {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FastMnistError(f"--space-file {path}: not TOML ({exc})") from None
    table = table.get("space", table)
    texts = []
    for name, value in table.items():
        if isinstance(value, list):
            value = ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value)
        if not isinstance(value, str):
            raise FastMnistError(f"--space-file {path}: {name} = {value!r}: expected a text such as "
                                 f"\"0.01:0.03:log\" or a list of values")
        texts.append(f"{name}={value}")
    return texts


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
            dims.append(parse_range(recipe, text, name, values.split(":")))
        else:
            choices = tuple(dict.fromkeys(parse_param(recipe, name, v) for v in values.split(",") if v.strip()))
            if not choices:
                raise FastMnistError(f"--space {text!r}: no values")
            dims.append(Dimension(name, choices=choices))
    return tuple(dims)


def parse_range(recipe: Recipe, text: str, name: str, parts: list[str]) -> Dimension:
    if len(parts) not in (2, 3):
        raise FastMnistError(f"--space {text!r}: expected NAME=LOW:HIGH, NAME=LOW:HIGH:STEP or LOW:HIGH:log")
    low, high = (parse_param(recipe, name, v) for v in parts[:2])
    if isinstance(low, (bool, str)):
        raise FastMnistError(f"--space {text!r}: {name} takes a list of values, not a range")
    if not low < high:
        raise FastMnistError(f"--space {text!r}: LOW must be below HIGH")
    log = len(parts) == 3 and parts[2].strip() == "log"
    if log and low <= 0:
        raise FastMnistError(f"--space {text!r}: a log range needs LOW above 0")
    step = None
    if len(parts) == 3 and not log:
        try:
            step = type(low)(parts[2].strip())
        except ValueError:
            raise FastMnistError(f"--space {text!r}: STEP {parts[2].strip()!r} is not "
                                 f"{'an integer' if isinstance(low, int) else 'a number'} (or 'log')") from None
        if not step > 0:
            raise FastMnistError(f"--space {text!r}: STEP must be > 0")
        if step > high - low:
            raise FastMnistError(f"--space {text!r}: STEP {step:g} is larger than the range {low:g}..{high:g}, "
                                 f"which would hold one point")
    return Dimension(name, low, high, step, log)


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

    from fastmnist.machine import describe, machine_info
    from fastmnist.store import retry_lost_trials, this_worker

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
    """The accuracy constraint (p - alpha, feasible when <= 0) where optuna-dashboard and Optuna's samplers
    read it: the trial's `constraints` system attribute."""
    p = trial.user_attrs["p_value"]
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(trial.study.study_name), trial.number)
    storage.set_trial_system_attr(trial_id, CONSTRAINT_KEY, [1.0 if p is None else p - spec.plan.alpha])


def record(trial, recipe: Recipe, mine: list, theirs: list, spec: SearchSpec, verdict: str) -> None:
    """What a trial measured so far, as user attributes the dashboard and the front read."""
    from fastmnist.ledger import definition

    accuracies = [r.accuracy for r in mine]
    interval = paired_ratio_interval([r.seconds for r in theirs], [r.seconds for r in mine])
    p = p_reaches(accuracies, spec.target)
    for key, value in {"recipe": recipe.name, "definition": definition(recipe), "seeds": [r.seed for r in mine],
                       "accuracies": accuracies, "accuracy_mean": float(np.mean(accuracies)),
                       "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
                       "share_reaching_target": float(np.mean([a >= spec.target for a in accuracies])),
                       "p_value": p, "verdict": verdict, "feasible": verdict == "feasible",
                       "time_ratio": interval["median"], "time_ratio_ci95": interval["ci95"],
                       "ratios": [a.seconds / b.seconds for a, b in zip(mine, theirs)],
                       "seconds_median": float(np.median([r.seconds for r in mine])),
                       "diverged": int(sum(r.diverged for r in mine))}.items():
        trial.set_user_attr(key, value)


ROW_KEYS = ("recipe", "definition", "seeds", "accuracy_mean", "accuracy_std", "share_reaching_target", "p_value",
            "verdict", "feasible", "time_ratio", "time_ratio_ci95", "seconds_median", "diverged", "worker",
            "machine", "sampler_seed")


def invalid_trials(study) -> list[dict]:
    """Trials pruned before any seed because the network cannot be built at their point."""
    return [{"trial": t.number, "point": t.params, "problems": t.user_attrs.get("problems")}
            for t in study.get_trials(deepcopy=False) if t.user_attrs.get("verdict") == "invalid"]


def trials_table(study) -> list[dict]:
    """Every finished or pruned trial: its point, what it measured, and whether it is on the front of the
    feasible trials."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if "time_ratio" not in t.user_attrs:
            continue
        point = {k: round(v, 12) if isinstance(v, float) else v for k, v in t.params.items()}  # 0.95, not 0.9500..01
        rows.append({"trial": t.number, "state": t.state.name.lower(), "point": point,
                     **{k: t.user_attrs.get(k) for k in ROW_KEYS}})
    front = pareto([r for r in rows if r["feasible"]])
    for r in rows:
        r["on_front"] = r["trial"] in front
    return rows


def pareto(rows: list[dict]) -> set[int]:
    """Trials no other trial beats on both time ratio (lower) and mean accuracy (higher)."""
    return {r["trial"] for r in rows if not any(
        o["time_ratio"] <= r["time_ratio"] and o["accuracy_mean"] >= r["accuracy_mean"]
        and (o["time_ratio"], o["accuracy_mean"]) != (r["time_ratio"], r["accuracy_mean"]) for o in rows)}


def candidates(rows: list[dict], top: int) -> list[dict]:
    """The fastest feasible trials, fastest first."""
    return sorted((r for r in rows if r["feasible"]), key=lambda r: r["time_ratio"])[:top]


def verification_seeds(count: int, ledger) -> list[int]:
    """`count` seeds no ledger entry has used, for any recipe: the first whole block of them from
    VERIFY_FIRST_SEED (in the claims range, so fresh; the ledger then marks them used)."""
    from fastmnist.seeds import parse_seed_range

    used = set()
    for e in ledger.entries():
        used.update(parse_seed_range(e["seeds"]))
    start = VERIFY_FIRST_SEED
    while used & set(range(start, start + count)):
        start += count
    return list(range(start, start + count))


VERIFY_FIRST_SEED = 500_000


def verify(spec: SearchSpec, rows: list[dict], runner, ledger, seeds: list[int], on_verify=None) -> dict:
    """The fastest feasible trials and the reference benched interleaved on fresh `seeds`; while the best's
    ratio interval overlaps the runner-up's, more fresh seeds (a block at a time, up to verify_max_seeds).
    Returns each candidate's verified figures, the verdict on the best, and the seeds used."""
    from fastmnist.records import summary_row
    from fastmnist.stats import verdict as ratio_verdict

    chosen = candidates(rows, spec.verify_top)
    if not chosen or not seeds:
        return {"seeds": [], "candidates": [], "best": None, "separated": None}
    recipes = {row["trial"]: overridden(spec.recipe, row["point"]) for row in chosen}
    names = [spec.reference, *recipes.values()]
    results = {r.name: [] for r in names}
    used: list[int] = []
    block = list(seeds)
    while True:
        if on_verify:
            on_verify(len(chosen), block)
        for name, runs in runner.run_interleaved(names, block).items():
            results[name] += runs
        used += block
        table = []
        for row in chosen:
            recipe = recipes[row["trial"]]
            summary = summary_row(replace(recipe, target=spec.target), results[recipe.name],
                                  ("claim", "fresh verification seeds of this search"))
            ratios = [m.seconds / t.seconds for m, t in zip(results[recipe.name], results[spec.reference.name])]
            ci, _ = median_interval(ratios)
            table.append({"trial": row["trial"], "recipe": recipe.name, "point": row["point"],
                          "tuning_ratio": row["time_ratio"], "tuning_accuracy_mean": row["accuracy_mean"],
                          "accuracy_mean": summary["accuracy_mean"], "accuracy_std": summary["accuracy_std"],
                          "p_value": summary["p_value"], "passes": summary["p_value"] is not None
                          and summary["p_value"] < ALPHA, "replication_probability": summary["replication_probability"],
                          "time_ratio": float(np.median(ratios)), "time_ratio_ci95": ci,
                          "verdict_vs_reference": ratio_verdict({"ci95": ci})})
        passing = sorted((t for t in table if t["passes"]), key=lambda t: t["time_ratio"])
        separated = None
        if len(passing) >= 2 and passing[0]["time_ratio_ci95"] and passing[1]["time_ratio_ci95"]:
            separated = passing[0]["time_ratio_ci95"][1] < passing[1]["time_ratio_ci95"][0]
        grow = len(used) + len(seeds) <= spec.verify_max_seeds and separated is False
        if not grow:
            break
        block = [s + len(seeds) for s in block]
    ledger.add([ledger_entry_for(recipe, used) for recipe in recipes.values()] +
               [ledger_entry_for(spec.reference, used)])
    return {"seeds": used, "candidates": table, "best": passing[0] if passing else None, "separated": separated,
            "runner_up": passing[1] if len(passing) > 1 else None}


def ledger_entry_for(recipe: Recipe, seeds: list[int]) -> dict:
    from fastmnist.ledger import entry

    return entry(recipe, seeds, "verification", "search")


def recipe_file(spec: SearchSpec, best: dict, study_name: str, trials: int, verified: dict) -> str:
    """A recipe file that `fastmnist bench FILE.py:best` and `derive` accept: the searched recipe resolved
    field by field (what ran, whatever an alias names later) with the best point, and where it was verified."""
    from fastmnist.ledger import definition
    from fastmnist.models import NetSpec
    from fastmnist.records import recipe_record
    from fastmnist.seeds import describe_seeds

    recipe = overridden(spec.recipe, best["point"])
    fields = {k: v for k, v in recipe_record(recipe).items() if k not in ("name", "summary", "parent", "changes", "net")}
    if not isinstance(recipe.net, NetSpec):
        raise FastMnistError("best.py is written for fastmnist's own network; this search's recipe uses another")
    net = ", ".join(f"{k}={v!r}" for k, v in asdict(recipe.net).items())
    args = ",\n    ".join(f"{k}={v!r}" for k, v in fields.items())
    seeds = describe_seeds(verified["seeds"])
    summary = (f"found by fastmnist search (study {study_name}, trial {best['trial']}, the fastest verified of "
               f"{trials} trials): time ratio {best['time_ratio']:.2f} against {spec.reference.name} and "
               f"{best['accuracy_mean']:.3f}% (p {best['p_value']:.2g}) on fresh seeds {seeds}")
    return (f'"""{summary}.\n\nThose seeds are recorded in the seed ledger as this search\'s verification: '
            f'claim the recipe only from\nseeds neither the search nor its verification used, e.g.\n'
            f'    fastmnist bench {spec.reference.name} THIS_FILE.py:best --seeds 600-699\n"""\n\n'
            f"from fastmnist import Recipe\nfrom fastmnist.models import NetSpec\n\n"
            f"# definition {definition(recipe)}: {recipe.name}\n"
            f"best = Recipe(\n    name=\"search_best\",\n    summary={summary!r},\n    net=NetSpec({net}),\n"
            f"    {args},\n)\n")


def front_plot(rows: list[dict], spec: SearchSpec, path: Path, verified: dict | None = None) -> None:
    """Time ratio against mean accuracy on tuning seeds: feasible and infeasible trials apart, each numbered,
    the front of the feasible ones joined, the reference at 1.0, the verified candidates ringed."""
    from fastmnist.output import save_figure
    from fastmnist.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    if not rows:
        ax.text(0.5, 0.5, "no trial has finished yet: nothing to plot", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for kind, style in (("feasible", dict(color="tab:green", marker="o", label="feasible (judged by the seed plan)")),
                            ("infeasible", dict(color="tab:gray", marker="x", label="infeasible or pruned"))):
            chosen = [r for r in rows if bool(r["feasible"]) == (kind == "feasible")]
            ax.scatter([r["time_ratio"] for r in chosen], [r["accuracy_mean"] for r in chosen], **style)
        for r in rows:
            ax.annotate(str(r["trial"]), (r["time_ratio"], r["accuracy_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
        front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["time_ratio"])
        if front:
            ax.plot([r["time_ratio"] for r in front], [r["accuracy_mean"] for r in front], color="tab:blue", lw=1,
                    label="front of the feasible trials")
        checked = {c["trial"] for c in (verified or {}).get("candidates", [])}
        ringed = [r for r in rows if r["trial"] in checked]
        if ringed:
            ax.scatter([r["time_ratio"] for r in ringed], [r["accuracy_mean"] for r in ringed], s=160,
                       facecolors="none", edgecolors="tab:purple", label="verified on fresh seeds")
        ax.axhline(spec.target, color="tab:red", lw=0.8, ls="--", label=f"target {spec.target:g}%")
        ax.axvline(1.0, color="black", lw=0.8, ls=":", label=f"{spec.reference.name} (1.0)")
        ax.set_xlabel(f"median time ratio against {spec.reference.name} (paired tuning seeds)")
        ax.set_ylabel("mean test accuracy % (tuning seeds)")
        ax.legend(fontsize=7)
    ax.set_title(f"search: {len(rows)} trial(s)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def front_table(rows: list[dict], spec: SearchSpec, verified: dict | None = None) -> str:
    lines = [f"{'trial':>5} {'verdict':<10} {'ratio':>6} {'accuracy %':>10} {'p':>7} {'seeds':>5} front  point"]
    for r in sorted(rows, key=lambda r: (not r["feasible"], r["time_ratio"])):
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3f}"
        point = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["point"].items())
        lines.append(f"{r['trial']:>5} {r.get('verdict') or r['state']:<10} {r['time_ratio']:>6.2f} "
                     f"{r['accuracy_mean']:>10.3f} {p:>7} {len(r['seeds']):>5} {'*' if r['on_front'] else ' ':^5}  {point}")
    plan = spec.plan
    lines.append(f"tuning seeds: ratio: median paired time against {spec.reference.name}; p: one-sided t-test that "
                 f"the mean reaches {spec.target:g}%; verdict: the seed plan (looks of {plan.look}, pruned when "
                 f"p(below) < {plan.futility:g}; feasible at {plan.max_seeds} seeds when p < {plan.alpha:g}); "
                 f"*: on the front of the feasible trials")
    if verified and verified["candidates"]:
        from fastmnist.seeds import describe_seeds
        from fastmnist.stats import format_p, format_ratio, format_share

        lines.append(f"verified on fresh seeds {describe_seeds(verified['seeds'])} (in the seed ledger now), each "
                     f"candidate interleaved with {spec.reference.name}:")
        for c in verified["candidates"]:
            lines.append(f"  trial {c['trial']:>4}: ratio {format_ratio({'median': c['time_ratio'], 'ci95': c['time_ratio_ci95']})}"
                         f" (tuning {c['tuning_ratio']:.2f}), {c['accuracy_mean']:.3f}% (tuning "
                         f"{c['tuning_accuracy_mean']:.3f}%), p {format_p(c['p_value'])}, replicates "
                         f"{format_share(c['replication_probability'])}")
    return "\n".join(lines)


def best_line(record: dict) -> str:
    """What the search found, in one sentence that says how it was chosen."""
    verified, rows = record["verification"], record["trials"]
    feasible = sum(1 for r in rows if r["feasible"])
    if not rows:
        return "no trial finished"
    if not feasible:
        return f"no trial of {len(rows)} was judged feasible on its tuning seeds"
    if not verified["candidates"]:
        best = candidates(rows, 1)[0]
        return (f"best on tuning seeds: trial {best['trial']} (selected from {len(rows)} trials on the same seeds: "
                f"its figures are biased; not verified, --verify-seeds 0)")
    best = verified["best"]
    if best is None:
        return (f"no verified candidate ({len(verified['candidates'])} of {len(rows)} trials) reached p < {ALPHA:g} "
                f"on the fresh verification seeds; no best.py")
    separation = ("its ratio interval lies below the runner-up's" if verified["separated"] else
                  "its ratio interval still overlaps the runner-up's after "
                  f"{len(verified['seeds'])} verification seeds: the two are not told apart"
                  if verified["separated"] is False else "no runner-up passed verification")
    return (f"best: trial {best['trial']}, the fastest of {len(verified['candidates'])} candidates verified on "
            f"{len(verified['seeds'])} fresh seeds, selected from {len(rows)} trials; {separation}")
