"""A search's trials as rows, their front of time against accuracy, and what the search writes from them:
the table (search.md), the picture (front.png), the best line and the best recipe's file (best.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fastmnist.errors import FastMnistError
from fastmnist.experiments.ledger import definition
from fastmnist.experiments.seeds import describe_seeds
from fastmnist.experiments.stats import (ALPHA, CLAIM_REPLICATION, format_p, format_ratio,
                                         format_share)
from fastmnist.recipes.overrides import overridden
from fastmnist.results.output import pyplot, save_figure
from fastmnist.results.records import recipe_record
from fastmnist.training.nets import NetSpec

if TYPE_CHECKING:
    from fastmnist.experiments.search import SearchSpec


ROW_KEYS = ("recipe", "definition", "seeds", "accuracy_mean", "accuracy_std", "share_reaching_target", "p_value",
            "replication_probability",
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


def recipe_file(spec: SearchSpec, best: dict, study_name: str, trials: int, verified: dict) -> str:
    """A recipe file that `fastmnist bench FILE.py:best` and `derive` accept: the searched recipe resolved
    field by field (what ran, whatever an alias names later) with the best point, and where it was verified."""
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
            f"from fastmnist import NetSpec, Recipe\n\n"
            f"# definition {definition(recipe)}: {recipe.name}\n"
            f"best = Recipe(\n    name=\"search_best\",\n    summary={summary!r},\n    net=NetSpec({net}),\n"
            f"    {args},\n)\n")


def front_plot(rows: list[dict], spec: SearchSpec, path: Path, verified: dict | None = None) -> None:
    """Time ratio against mean accuracy on tuning seeds: feasible and infeasible trials apart, each numbered,
    the front of the feasible ones joined, the reference at 1.0, the verified candidates ringed."""
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
                 f"p(below) < {plan.futility:g}; feasible at {plan.max_seeds} seeds when p < {plan.alpha:g}"
                 f"{f' and it replicates >= {CLAIM_REPLICATION:.0%}' if plan.rule == 'replicates' else ''}); "
                 f"*: on the front of the feasible trials")
    if verified and verified["candidates"]:

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
        replicates = record.get("plan", {}).get("rule") == "replicates"
        held_to = f"p < {ALPHA:g}" + (f" and {CLAIM_REPLICATION:.0%} replication" if replicates else "")
        return (f"no verified candidate ({len(verified['candidates'])} of {len(rows)} trials) reached {held_to} "
                f"on the fresh verification seeds; no best.py")
    separation = ("its ratio interval lies below the runner-up's" if verified["separated"] else
                  "its ratio interval still overlaps the runner-up's after "
                  f"{len(verified['seeds'])} verification seeds: the two are not told apart"
                  if verified["separated"] is False else "no runner-up passed verification")
    count = len(verified["candidates"])
    which = f"the fastest of {count} candidates" if count > 1 else "the only candidate"
    return (f"best: trial {best['trial']}, {which} verified on {len(verified['seeds'])} fresh seeds, "
            f"selected from {len(rows)} trials; {separation}")
