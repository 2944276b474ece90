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
from fastmnist.models import NetSpec, flops_per_image
from fastmnist.provenance import provenance
from fastmnist.recipes import Recipe
from fastmnist.seeds import describe_seeds, seed_use
from fastmnist.stats import paired_ratio_interval, summarize, verdict

TIMED = "model creation, training, test evaluation (as each recipe says)"
NOT_TIMED = ("data loading/verification, preparation into tensors, drawing and writing each run's training order "
             "(order_seconds in each run), one short warm-up run per recipe (and, for engine=graph on CUDA, the "
             "capture of an epoch)")


def recipe_record(recipe: Recipe) -> dict:
    """The recipe in full, as JSON: a user's network is recorded by its factory's import path."""
    from fastmnist.userfile import reference_of

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
    """Training FLOPs for the images seen plus a test pass per evaluation (`run`: a RunResult)."""
    train, infer = flops_per_image(recipe.net)
    return run.images_seen * train + len(run.epoch_accuracies) * run.test_images * infer


def as_ran(values: list[str]) -> str:
    """The one value every run recorded, or them all joined when runs differed (a shared bench over unlike
    machines): a summary never claims more than its runs did."""
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else "+".join(distinct)


def summary_row(recipe: Recipe, runs: list) -> dict:
    """The statistics of one recipe's runs, its work in FLOPs, the rate achieved, and the precision and
    engine the runs recorded."""
    row = {"recipe": recipe.name,
           **summarize([r.accuracy for r in runs], [r.seconds for r in runs], recipe.target)}
    seeds = [r.seed for r in runs]
    orders = [r.data_order for r in runs]
    row.update({"seeds": describe_seeds(seeds), "seed_use": seed_use(seeds),
                "distinct_data_orders": len(set(orders))})
    flops = float(np.mean([run_flops(recipe, r) for r in runs]))
    row.update({
        "diverged": int(sum(r.diverged for r in runs)),
        "epochs_mean": float(np.mean([r.epochs for r in runs])),
        "tflop_per_run": float(flops / 1e12),
        "gflop_per_s": float(flops / 1e9 / row["seconds_median"]),
        "precision": as_ran([r.precision for r in runs]),
        "engine": as_ran([r.engine for r in runs]),
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
    the verdict the interval allows, and how many seeds paired (keys end in `_vs_{against}`)."""
    interval = paired_ratio_interval(*paired_times(reference, other))
    return {**row, f"median_time_ratio_vs_{against}": interval["median"],
            f"time_ratio_ci95_vs_{against}": interval["ci95"],
            f"time_ratio_wilcoxon_p_vs_{against}": interval["wilcoxon_p"],
            f"time_verdict_vs_{against}": verdict(interval),
            f"paired_seeds_vs_{against}": len(paired_times(reference, other)[0])}


def summary_rows(recipes: list[Recipe], results: dict[str, list]) -> list[dict]:
    """Each recipe's summary row, with its paired time ratio against the first recipe, seed by seed."""
    reference = results[recipes[0].name]
    return [with_ratio(summary_row(r, results[r.name]), reference, results[r.name], "first") for r in recipes]


def bench_report(recipes: list[Recipe], results: dict[str, list], machine: dict, timing: dict,
                 machines: list[dict] | None = None) -> dict:
    """The bench report from runs grouped by recipe, each list in the same seed order, so that the i-th
    runs of two recipes are a pair measured back to back on one machine."""
    seeds = [r.seed for r in results[recipes[0].name]]
    report = {**envelope("bench", machine, recipes), "seeds": describe_seeds(seeds), "seed_use": seed_use(seeds),
              "timing": {"includes": TIMED, "excludes": NOT_TIMED, **timing},
              "summary": summary_rows(recipes, results),
              "runs": [r.record() for recipe in recipes for r in results[recipe.name]]}
    if machines is not None:
        report["machines"] = machines
    return report


def recipe_from_record(record: dict) -> Recipe:
    """A recipe as a results file recorded it; fields added to Recipe since then take their defaults."""
    values = {k: v for k, v in record.items() if k in {f.name for f in dataclasses.fields(Recipe)}}
    net = values.get("net")
    if isinstance(net, dict) and "factory" in net:
        from fastmnist.userfile import load_object

        values["net"] = load_object(net["factory"])
    elif isinstance(net, dict):
        values["net"] = NetSpec(**{k: v for k, v in net.items() if k in {f.name for f in dataclasses.fields(NetSpec)}})
    values["changes"] = tuple(values.get("changes", ()))
    return Recipe(**values)


def resummarised(report: dict) -> dict:
    """A bench report whose summary is made again from its own runs by today's statistics (a file written
    before a statistic existed gains it: the p-value, the engine); runs, machine and provenance stay."""
    from fastmnist.trainer import RunResult

    kind = report.get("kind", "unknown") if isinstance(report, dict) else type(report).__name__
    if kind != "bench":
        raise FastMnistError(f"a {kind!r} file: only bench reports (fastmnist bench --out) are summarised again")
    known = {f.name for f in dataclasses.fields(RunResult)}
    try:
        recipes = [recipe_from_record(report["recipes"][row["recipe"]]) for row in report["summary"]]
        results = {r.name: [RunResult(**{k: v for k, v in run.items() if k in known})
                            for run in report["runs"] if run["recipe"] == r.name] for r in recipes}
        summary = summary_rows(recipes, results)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise FastMnistError(f"not a complete bench report ({type(exc).__name__}: {exc})") from None
    return {**report, "summary": summary, "summary_provenance": provenance()}
