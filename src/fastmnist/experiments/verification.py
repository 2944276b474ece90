"""The end of a search: its fastest feasible trials benched against the reference on fresh seeds that no
trial used (recorded in the seed ledger as verification, so no later claim takes them for fresh), with seeds
added while the best's ratio interval still overlaps the runner-up's, up to a cap."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fastmnist.experiments.front import candidates
from fastmnist.experiments.ledger import entry
from fastmnist.experiments.seeds import parse_seed_range
from fastmnist.experiments.seed_plan import meets_rule
from fastmnist.experiments.stats import ALPHA, median_interval, verdict as ratio_verdict
from fastmnist.recipes.overrides import overridden
from fastmnist.recipes.recipe import Recipe
from fastmnist.results.records import summary_row

if TYPE_CHECKING:
    from fastmnist.experiments.search import SearchSpec


VERIFY_FIRST_SEED = 500_000


def verification_seeds(count: int, ledger) -> list[int]:
    """`count` seeds no ledger entry has used, for any recipe: the first whole block of them from
    VERIFY_FIRST_SEED (in the claims range, so fresh; the ledger then marks them used)."""

    used = set()
    for e in ledger.entries():
        used.update(parse_seed_range(e["seeds"]))
    start = VERIFY_FIRST_SEED
    while used & set(range(start, start + count)):
        start += count
    return list(range(start, start + count))


def verify(spec: SearchSpec, rows: list[dict], runner, ledger, seeds: list[int], on_verify=None) -> dict:
    """The fastest feasible trials and the reference benched interleaved on fresh `seeds`; while the best's
    ratio interval overlaps the runner-up's, more fresh seeds (a block at a time, up to verify_max_seeds).
    Returns each candidate's verified figures, the verdict on the best, and the seeds used."""

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
                          "p_value": summary["p_value"],
                          "passes": meets_rule(spec.plan.rule, summary["p_value"], summary["replication_probability"],
                                               ALPHA),
                          "replication_probability": summary["replication_probability"],
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

    return entry(recipe, seeds, "verification", "search")
