"""Pooling: the runs of one recipe definition gathered from many bench files, so a claim rests on every fresh
seed set it was measured on (a replication probability wants >= 100 seeds, and they often come in benches
of 25). Runs are grouped by definition (ledger.definition: the resolved fields, whatever the recipe was
called in each file) and by the precision they ran in (bf16 and fp32 runs of one recipe are two recipes
as far as accuracy goes); a seed met twice counts once. Times are not pooled: a ratio holds only within
the bench whose pairs ran back to back.
"""

from __future__ import annotations

from fastmnist.errors import FastMnistError
from fastmnist.experiments.seeds import describe_seeds, seed_use
from fastmnist.experiments.stats import claim_status, summarize


def pooled(reports: list[tuple[str, dict]]) -> dict:
    """[(path, resummarised bench report)] -> one row per (definition, precision): the pooled accuracy
    statistics, replication probability and claim status, and where the runs came from."""
    from fastmnist.experiments.ledger import definition
    from fastmnist.results.records import recipe_from_record

    groups: dict[tuple[str, str], dict] = {}
    for path, report in reports:
        uses = {row["recipe"]: row.get("seed_use") for row in report["summary"]}
        for row in report["summary"]:
            recipe = recipe_from_record(report["recipes"][row["recipe"]])
            for run in (r for r in report["runs"] if r["recipe"] == row["recipe"]):
                key = (definition(recipe), run["precision"])
                group = groups.setdefault(key, {"definition": key[0], "precision": key[1], "names": [],
                                                "files": [], "runs": {}, "target": recipe.target, "tuning": False})
                if row["recipe"] not in group["names"]:
                    group["names"].append(row["recipe"])
                if path not in group["files"]:
                    group["files"].append(path)
                group["tuning"] |= uses.get(row["recipe"]) == "tuning"
                group["runs"].setdefault(run["seed"], run)
    if not groups:
        raise FastMnistError("no runs to pool")
    rows = []
    for group in groups.values():
        seeds = sorted(group["runs"])
        runs = [group["runs"][s] for s in seeds]
        stats = summarize([r["accuracy"] for r in runs], [r["seconds"] for r in runs], group["target"])
        use = "tuning" if group["tuning"] or seed_use(seeds) == "tuning" else "claim"
        rows.append({"definition": group["definition"], "recipes": group["names"], "precision": group["precision"],
                     "files": group["files"], "seeds": describe_seeds(seeds), "seed_use": use,
                     "distinct_data_orders": len({r.get("data_order") for r in runs}),
                     **{k: v for k, v in stats.items() if not k.startswith("seconds")},
                     "claim": claim_status(stats, use)})
    return {"kind": "pooled", "rows": sorted(rows, key=lambda r: r["recipes"][0])}


def pooled_table(record: dict) -> str:
    from fastmnist.experiments.stats import format_p, format_share, plus_minus

    lines = [f"{'recipe (as named in the files)':<34} {'definition':<12} {'prec.':<5} {'runs':>4} {'accuracy %':>15} "
             f"{'>=99%':>6} {'p':>6} {'replicates':>10}  claim"]
    for row in record["rows"]:
        lines.append(f"{' = '.join(row['recipes'])[:34]:<34} {row['definition']:<12} {row['precision']:<5} "
                     f"{row['runs']:>4} {plus_minus(row['accuracy_mean'], row['accuracy_std'], 3):>15} "
                     f"{100 * row['share_reaching_target']:>5.0f}% {format_p(row['p_value']):>6} "
                     f"{format_share(row['replication_probability']):>10}  {row['claim']}")
    lines.append("pooled by definition and precision over the files given (a seed met twice counts once); p: "
                 "one-sided t-test that the mean reaches the target; replicates: the estimated chance that a fresh "
                 "25-seed bench reaches p < 0.01; times are not pooled (a ratio holds within its own bench)")
    return "\n".join(lines)
