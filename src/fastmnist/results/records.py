"""What a results file says, made from the runs themselves: the head every file carries (kind, provenance,
the machine that ran, every recipe in full), a recipe's summary row, and the bench report.

Nothing here runs or measures anything: precision and engine come from each run's record, the machine and
its peaks from the machine that ran (measured there), so a report printed elsewhere says what happened.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict

import numpy as np

from fastmnist.errors import FastMnistError
from fastmnist.training.nets import NetSpec, flops_per_image
from fastmnist.training.views import TEST_VIEWS
from fastmnist.results.machine import load_span
from fastmnist.results.provenance import provenance
from fastmnist.recipes.recipe import Recipe
from fastmnist.experiments.seeds import describe_seeds, seed_use
from fastmnist.experiments.stats import claim_status, paired_ratio_interval, summarize, verdict

TIMED = "model creation, training, test evaluation (as each recipe says)"
NOT_TIMED = ("data loading/verification, preparation into tensors, drawing and writing each run's training order "
             "(order_seconds in each run), one short warm-up run per recipe (and, for engine=graph on CUDA, the "
             "capture of an epoch)")


def recipe_record(recipe: Recipe) -> dict:
    """The recipe in full, as JSON: a user's network is recorded by its factory's import path."""
    from fastmnist.recipes.userfile import reference_of

    record = asdict(recipe)  # a factory is copied as itself, then replaced by where it comes from
    if not isinstance(recipe.net, NetSpec):
        record["net"] = {"factory": reference_of(recipe.net)}
    record["changes"] = list(recipe.changes)
    return record


def envelope(kind: str, machine: dict, recipes: list[Recipe]) -> dict:
    """The head of every results file: what it is, where it came from, the machine and the recipes."""
    return {"kind": kind, "provenance": provenance(), "machine": machine,
            "recipes": {r.name: recipe_record(r) for r in recipes}}


def run_flops(recipe: Recipe, run) -> float:
    """Training FLOPs for the images seen plus a test pass per evaluation and test-time view (`run`: a
    RunResult)."""
    train, infer = flops_per_image(recipe.net)
    views = len(TEST_VIEWS[recipe.test_views])
    return run.images_seen * train + len(run.epoch_accuracies) * views * run.test_images * infer


def as_ran(values: list[str]) -> str:
    """The one value every run recorded, or them all joined when runs differed (a shared bench over unlike
    machines): a summary never claims more than its runs did."""
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else "+".join(distinct)


def summary_row(recipe: Recipe, runs: list, use: tuple[str, str] | None = None) -> dict:
    """The statistics of one recipe's runs, whether they can carry a claim, its work in FLOPs, the rate
    achieved, and the precision and engine the runs recorded. `use`: what the seed ledger says the seeds
    are for this recipe (ledger.Ledger.seed_use); without one, the seeds' range decides."""
    row = {"recipe": recipe.name,
           **summarize([r.accuracy for r in runs], [r.seconds for r in runs], recipe.target)}
    seeds = [r.seed for r in runs]
    orders = [r.data_order for r in runs]
    use = use or (seed_use(seeds), "decided by the seeds' range alone (no seed ledger was read)")
    row.update({"seeds": describe_seeds(seeds), "seed_use": use[0], "seed_use_why": use[1],
                "distinct_data_orders": len(set(orders))})
    row["claim"] = claim_status(row, use[0])
    flops = float(np.mean([run_flops(recipe, r) for r in runs]))
    row.update({
        "diverged": int(sum(r.diverged for r in runs)),
        "epochs_mean": float(np.mean([r.epochs for r in runs])),
        "tflop_per_run": float(flops / 1e12),
        "gflop_per_s": float(flops / 1e9 / row["seconds_median"]),
        "precision": as_ran([r.precision for r in runs]),
        "engine": as_ran([r.engine for r in runs]),
        **{f"{part}_seconds_median": float(np.median([getattr(r, f"{part}_seconds") for r in runs]))
           for part in ("creation", "training", "test")},
    })
    return row


def paired_times(reference: list, other: list) -> tuple[list[float], list[float]]:
    """The two recipes' seconds for the seeds both ran, seed by seed (runs: RunResults)."""
    theirs = {r.seed: r.seconds for r in reference}
    seeds = [r.seed for r in other if r.seed in theirs]
    mine = {r.seed: r.seconds for r in other}
    return [theirs[s] for s in seeds], [mine[s] for s in seeds]


def with_ratio(row: dict, reference: list, other: list, against: str) -> dict:
    """`row` with the paired time ratio of `other`'s runs to `reference`'s: median, 95% interval, Wilcoxon p,
    the verdict the interval allows, and how many seeds paired (keys end in `_vs_{against}`): the interval is
    the order-statistic one (stats.median_interval), with its exact coverage, and the p the sign test's."""
    theirs, mine = paired_times(reference, other)
    interval = paired_ratio_interval(theirs, mine)
    return {**row, f"median_time_ratio_vs_{against}": interval["median"],
            f"time_ratio_ci95_vs_{against}": interval["ci95"],
            f"time_ratio_ci_coverage_vs_{against}": interval["coverage"],
            f"time_ratio_sign_p_vs_{against}": interval["sign_p"],
            f"time_verdict_vs_{against}": verdict(interval),
            f"paired_seeds_vs_{against}": len(theirs)}


def summary_rows(recipes: list[Recipe], results: dict[str, list],
                 uses: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Each recipe's summary row, with its paired time ratio against the first recipe, seed by seed."""
    reference = results[recipes[0].name]
    return [with_ratio(summary_row(r, results[r.name], (uses or {}).get(r.name)), reference, results[r.name], "first")
            for r in recipes]


def bench_report(recipes: list[Recipe], results: dict[str, list], machine: dict, timing: dict,
                 machines: list[dict] | None = None, uses: dict[str, tuple[str, str]] | None = None) -> dict:
    """The bench report from runs grouped by recipe, each list in the same seed order, so that the i-th
    runs of two recipes are a pair measured back to back on one machine. `uses`: each recipe's seed use from
    the seed ledger; the report's own is tuning when any recipe's is."""
    seeds = [r.seed for r in results[recipes[0].name]]
    summary = summary_rows(recipes, results, uses)
    use = "tuning" if any(row["seed_use"] == "tuning" for row in summary) else "claim"
    from fastmnist.experiments.ledger import definition

    report = {**envelope("bench", machine, recipes), "seeds": describe_seeds(seeds), "seed_use": use,
              "seed_ledger": uses is not None, "definitions": {r.name: definition(r) for r in recipes},
              "timing": {"includes": TIMED, "excludes": NOT_TIMED, **timing},
              "summary": summary,
              "runs": [r.record() for recipe in recipes for r in results[recipe.name]]}
    if machines is not None:
        report["machines"] = machines
    return report


def recipe_from_record(record: dict) -> Recipe:
    """A recipe as a results file recorded it; fields added to Recipe since then take their defaults."""
    values = {k: v for k, v in record.items() if k in {f.name for f in dataclasses.fields(Recipe)}}
    net = values.get("net")
    if isinstance(net, dict) and "factory" in net:
        from fastmnist.recipes.userfile import load_object

        values["net"] = load_object(net["factory"])
    elif isinstance(net, dict):
        values["net"] = NetSpec(**{k: v for k, v in net.items() if k in {f.name for f in dataclasses.fields(NetSpec)}})
    values["changes"] = tuple(values.get("changes", ()))
    return Recipe(**values)


RUN_FIELDS = {  # what a run must hold for a summary: the type of each value and its range (low, high or None)
    "recipe": (str, None), "seed": (int, (0, None)), "accuracy": (float, (0, 100)), "seconds": (float, (0, None)),
    "epochs": (int, (1, None)), "epoch_accuracies": (list, None), "diverged": (bool, None),
    "precision": (str, None), "images_seen": (int, (0, None)), "test_images": (int, (1, None)),
}
TYPE_WORDS = {str: "a text", int: "an integer", float: "a number", list: "a list", bool: "true or false"}


def of_type(value, kind) -> bool:
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def checked_run(index: int, run) -> dict:
    """A run of a results file, checked field by field; one line, in the file's terms, for the first fault."""
    where = f"runs[{index}]"
    if not isinstance(run, dict):
        raise FastMnistError(f"{where} is {type(run).__name__}, not a run")
    for key, (kind, bounds) in RUN_FIELDS.items():
        if key not in run:
            raise FastMnistError(f"{where} has no {key!r}")
        value = run[key]
        if not of_type(value, kind):
            raise FastMnistError(f"{where}.{key} = {value!r}: expected {TYPE_WORDS[kind]}")
        if bounds:
            low, high = bounds
            if not np.isfinite(value) or value < low or (high is not None and value > high) or \
                    (key == "seconds" and value == 0):
                span = "above 0" if key == "seconds" else f"{low} to {high}" if high is not None else f"{low} or more"
                raise FastMnistError(f"{where}.{key} = {value!r}: out of range ({span})")
    return run


def resummarised(report: dict) -> dict:
    """A bench report whose summary is made again from its own runs by today's statistics (a file written
    before a statistic existed gains it: the p-value, the engine); runs, machine and provenance stay. Every
    run is checked; runs are paired by seed, and what could not be paired, or belongs to no recipe of the
    summary, is said in `notes`."""
    from fastmnist.training.trainer import RunResult

    kind = report.get("kind", "unknown") if isinstance(report, dict) else type(report).__name__
    if kind != "bench":
        raise FastMnistError(f"a {kind!r} file: only bench reports (fastmnist bench --out) are summarised again")
    runs, summary, recorded = report.get("runs"), report.get("summary"), report.get("recipes")
    if not isinstance(summary, list) or not summary or not isinstance(recorded, dict):
        raise FastMnistError("the file has no 'summary' list or no 'recipes' table: not a complete bench report")
    if not isinstance(runs, list) or not runs:
        raise FastMnistError("the file holds no runs ('runs' is empty or missing): nothing to summarise")
    names = []
    for i, row in enumerate(summary):
        name = row.get("recipe") if isinstance(row, dict) else None
        if name not in recorded:
            raise FastMnistError(f"summary[{i}] names recipe {name!r}, which the file's 'recipes' does not hold")
        names.append(name)
    checked = [checked_run(i, run) for i, run in enumerate(runs)]
    seen, notes = set(), []
    for i, run in enumerate(checked):
        if (run["recipe"], run["seed"]) in seen:
            raise FastMnistError(f"runs[{i}]: recipe {run['recipe']} seed {run['seed']} appears twice")
        seen.add((run["recipe"], run["seed"]))
    foreign = sorted({run["recipe"] for run in checked} - set(names))
    if foreign:
        notes.append(f"left out: runs of {', '.join(foreign)}, which the file's summary does not list")
    try:
        recipes = [recipe_from_record(recorded[name]) for name in names]
    except (KeyError, TypeError, ValueError) as exc:
        raise FastMnistError(f"the file's 'recipes' entry cannot be read ({type(exc).__name__}: {exc})") from None
    known = {f.name for f in dataclasses.fields(RunResult)}
    results = {r.name: [RunResult(**{k: v for k, v in run.items() if k in known})
                        for run in checked if run["recipe"] == r.name] for r in recipes}
    for recipe in recipes:
        if not results[recipe.name]:
            raise FastMnistError(f"the file holds no runs of {recipe.name}, which its summary lists")
    seeds = {name: {r.seed for r in results[name]} for name in names}
    for name in names[1:]:
        unpaired = sorted(seeds[name] ^ seeds[names[0]])
        if unpaired:
            notes.append(f"unpaired: seeds {', '.join(map(str, unpaired))} ran for only one of {names[0]} and "
                         f"{name}; the ratio pairs the {len(seeds[name] & seeds[names[0]])} seeds both ran")
    uses = {row["recipe"]: (row["seed_use"], row["seed_use_why"]) for row in summary
            if isinstance(row, dict) and "seed_use_why" in row} if report.get("seed_ledger") else None
    notes += missing_guarantees(report, results)
    return {**report, "summary": summary_rows(recipes, results, uses), "notes": notes,
            "summary_provenance": provenance()}


def missing_guarantees(report: dict, results: dict[str, list]) -> list[str]:
    """What an older file cannot promise that today's bench does: seeds checked against the seed ledger, and a
    data order of each seed's own."""
    notes = []
    if not report.get("seed_ledger"):
        notes.append("made before the seed ledger: whether a sweep or search used these seeds is unknown; "
                     "'claim' below comes from the seeds' range alone")
    for name, runs in results.items():
        orders = {r.data_order for r in runs}
        if "" in orders or len(orders) < len(runs):
            notes.append(f"{name}: {len(runs)} seeds walked {len(orders) - ('' in orders) or 'no recorded'} "
                         f"data order(s): a seed varied its weights only, not its data order (data_order=fixed, or "
                         f"a file made before each seed drew its own order)")
    return notes


def with_load(record: dict, start: list[float] | None) -> dict:
    """The record with the machine's load average when the command started and now: a busy machine
    explains slow figures."""
    return {**record, "load_average": load_span(start)}
