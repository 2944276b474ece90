"""Every table and picture fastmnist shows: bench, ladder, sweep and evaluate, built from their JSON."""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from fastmnist.machine import describe, peak_gflops
from fastmnist.models import NetSpec
from fastmnist.output import save_figure, write_results, write_text
from fastmnist.recipes import RECIPES, Recipe, changes_from_parent
from fastmnist.records import recipe_record
from fastmnist.stats import ALPHA, CLAIM_RUNS, MIN_PAIRS, format_p, format_ratio, format_share, plus_minus

# The original study's own times (docs/ladder.md, GTX 1660 Ti laptop GPU): its claims, shown beside ours.
ORIGINAL_GPU_SECONDS = {"stage0": 172.0, "stage1": 57.4, "stage2": 30.3, "stage3": 7.31, "stage4": 4.66,
                        "stage5": 3.14, "stage6": 2.31, "stage7": 1.74, "stage8": 0.762}


def pyplot():
    """matplotlib on its file backend, its font cache in fastmnist's cache folder (a HOME that cannot be
    written would otherwise cost a two-line warning on every plot)."""
    import os

    if "MPLCONFIGDIR" not in os.environ:
        from fastmnist.data import cache_dir

        os.environ["MPLCONFIGDIR"] = str(cache_dir() / "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def peaks_text(machine: dict) -> str:
    """'fp32 150, bf16 410': the best matmul rates measured on the machine, in GFLOP/s ('' if none was)."""
    return ", ".join(f"{p} {peak_gflops(machine, p):.0f}" for p in ("fp32", "bf16") if peak_gflops(machine, p))


def machine_line(machine: dict) -> str:
    peaks = peaks_text(machine)
    return (f"machine: {describe(machine)}, {machine['cpu_count']} cores, torch {machine['torch_version']}"
            + (f", best matmul GFLOP/s: {peaks}" if peaks else ""))


def bench_table(report: dict) -> str:
    asked = report.get("asked_as", {})  # `fastest` as the user typed it: 'fastest (stage21)'
    label = {row["recipe"]: f"{asked[row['recipe']]} ({row['recipe']})" if row["recipe"] in asked else row["recipe"]
             for row in report["summary"]}
    width = max(12, *(len(text) for text in label.values()))
    target = report["summary"][0]["target"]
    lines = [f"{'recipe':<{width}} {'runs':>4} {'accuracy %':>15} {f'>={target:g}%':>6} {'p':>6} {'replicates':>10} "
             f"{'seconds':>15} "
             f"{'median s':>9} {'ratio [95% CI]':>18} {'TFLOP':>6} {'GFLOP/s':>8}  precision, engine"]
    for row in report["summary"]:
        lines.append(
            f"{label[row['recipe']]:<{width}} {row['runs']:>4} {plus_minus(row['accuracy_mean'], row['accuracy_std']):>15} "
            f"{100 * row['share_reaching_target']:>5.0f}% {format_p(row.get('p_value')):>6} "
            f"{format_share(row.get('replication_probability')):>10} "
            f"{plus_minus(row['seconds_mean'], row['seconds_std']):>15} "
            f"{row['seconds_median']:>9.2f} {ratio_text(row, 'first'):>18} "
            f"{row['tflop_per_run']:>6.3f} {row['gflop_per_s']:>8.1f}  {row.get('precision', '?')}, "
            f"{row.get('engine', 'eager')}"
            + (f"  DIVERGED {row['diverged']} of {row['runs']}" if row.get("diverged") else ""))
    t = report["timing"]
    if "machines" in report:  # a shared bench: each seed ran on one machine, all of its recipes
        for entry in report["machines"]:
            workers = ", ".join(f"{w} {n}" for w, n in sorted(entry.get("workers", {}).items()))
            lines.append(f"{machine_line(entry['machine'])} on {entry['machine'].get('hostname', '?')}: "
                         f"{len(entry['seeds'])} seed(s)" + (f" (by worker: {workers})" if workers else ""))
        lines.append(f"timed: {t['includes']}; not timed: {t['excludes']}")
    else:
        lines.append(machine_line(report["machine"]))
        lines.append(f"timed: {t['includes']}; not timed: {t['excludes']} "
                     f"(load {t['data_load_seconds']:.2f}s, warm-up {sum(t['warmup_seconds'].values()):.2f}s"
                     + (f", capture {captured:.2f}s" if (captured := sum(t.get("capture_seconds", {}).values())) else "")
                     + ")")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    seeds = f"seeds {report['seeds']} ({report.get('seed_use', '?')}), " if "seeds" in report else ""
    own_orders = all(row.get("distinct_data_orders") == row["runs"] for row in report["summary"])
    lines.append(f"{seeds}" + ("each its own weights and data order" if own_orders else
                               "each its own weights (not each its own data order: see the notes)")
                 + f"; ratio: median over seeds of (recipe time / first recipe time), each pair run back to back "
                   f"on one machine, with the order-statistic 95% interval of that median (exact at any number of "
                   f"pairs; none below {MIN_PAIRS}; faster only when it lies below 1); p: one-sided t-test over the "
                   f"seeds that the mean accuracy reaches the target; replicates: the estimated chance that a fresh "
                   f"{CLAIM_RUNS}-seed bench reaches p < {ALPHA:g} (docs/statistics.md)")
    lines += [f"{row['recipe']}: {row['claim']}" + (f" [seeds: {row['seed_use_why']}]"
                                                    if row.get("seed_use") == "tuning" else "")
              for row in report["summary"] if "claim" in row]
    blocks = [(row["recipe"], row.get("block_p_values") or []) for row in report["summary"]]
    lines += [f"{name}: p of each {CLAIM_RUNS}-seed block: {', '.join(format_p(p) for p in ps)}"
              for name, ps in blocks if len(ps) > 1]
    return "\n".join(lines)


def ratio_text(row: dict, against: str) -> str:
    """'0.92 [0.90, 0.95]' from a summary row's paired ratio (a record older than the intervals: the median)."""
    median = row.get(f"median_time_ratio_vs_{against}")
    if median is None:
        return "-"
    return format_ratio({"median": median, "ci95": row.get(f"time_ratio_ci95_vs_{against}")})


def what_changed(name: str, stage: dict) -> str:
    """From today's definition for a built-in stage, else as recorded when the stage ran."""
    return "; ".join(changes_from_parent(RECIPES[name])) if name in RECIPES else stage.get("what_changed", "?")


def is_stale(name: str, stage: dict) -> bool:
    """True when a built-in stage's runs were made with a definition other than today's. A field added to
    Recipe or NetSpec since then counts as unchanged when today's value is its default."""
    if name not in RECIPES:
        return False
    defaults = {**recipe_record(Recipe("", "")), "net": asdict(NetSpec())}
    return differs(stage["recipe"], recipe_record(RECIPES[name]), defaults)


def differs(stored, current, defaults) -> bool:
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return stored != current
    defaults = defaults if isinstance(defaults, dict) else {}
    return bool(set(stored) - set(current)) or any(
        differs(stored[k], v, defaults.get(k)) if k in stored else v != defaults.get(k) for k, v in current.items())


def ladder_markdown(report: dict) -> str:
    stages = report["stages"]
    names = list(stages)
    first = stages[names[0]]["summary"]["seconds_mean"]
    rows = ["| stage | what changed | epochs | accuracy % (mean +- std) | runs >= target | p | replicates "
            "| seconds (mean +- std) | x vs first | time vs parent [95% CI] | TFLOP/run | GFLOP/s | x above floor "
            "| original's GPU s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        s = stages[name]["summary"]
        stale = " (stale: definition changed since)" if is_stale(name, stages[name]) else ""
        vs_parent = ratio_text(s, "parent")
        verdict = s.get("time_verdict_vs_parent")
        vs_parent += f" {verdict}" if verdict and verdict != "too few pairs" else ""
        original = ORIGINAL_GPU_SECONDS.get(name)
        peak = peak_gflops(stages[name]["machine"], s.get("precision", "fp32"))
        floor = f"{s['seconds_mean'] / (s['tflop_per_run'] * 1e3 / peak):.1f}" if peak else "-"
        rows.append(
            f"| {name} | {what_changed(name, stages[name])}{stale} | {s['epochs_mean']:.1f} "
            f"| {plus_minus(s['accuracy_mean'], s['accuracy_std'], 3)} | {s['share_reaching_target'] * 100:.0f}% "
            f"of {s['runs']} | {format_p(s.get('p_value'))} | {format_share(s.get('replication_probability'))} "
            f"| {plus_minus(s['seconds_mean'], s['seconds_std'])} "
            f"| {first / s['seconds_mean']:.1f} | {vs_parent} | {s['tflop_per_run']:.3f} | {s['gflop_per_s']:.1f} | {floor} | {original or '-'} |")
    machines = {describe(stage["machine"]) for stage in stages.values()}
    machine = stages[names[-1]]["machine"]
    where = (f"Measured on {machine['cpu_model']} ({machine['vector_isa']}, {machine['cpu_count']} cores, "
             f"{machine['torch_threads']} threads, {machine['device']}), torch {machine['torch_version']}."
             if len(machines) == 1 else
             "**Measured on more than one machine** (" + "; ".join(sorted(machines)) + "): times of "
             "different machines are not comparable, see each stage's `machine` in ladder.json.")
    rows += ["", where + " Timed: model creation, training and every test evaluation the recipe makes; not "
             "timed: data loading, preparation, each run's data order, one short warm-up run per stage. Seeds: "
             f"{', '.join(sorted({stages[n]['summary'].get('seeds', '?') for n in names}))}, each its own weights "
             "and data order; stages run interleaved seed by seed, so a stage and its parent pair up (time vs "
             "parent: median of the paired ratios, its order-statistic 95% interval, 'faster' only when it lies "
             "below 1). p: one-sided t-test that the mean reaches the target; replicates: the estimated chance "
             f"that a fresh {CLAIM_RUNS}-seed bench reaches p < {ALPHA:g}. Floor: the run's FLOPs at this "
             f"machine's best matmul rate in the precision the stage ran ({peaks_text(machine)} GFLOP/s). "
             "The last column is the original study's own GTX 1660 Ti figure (docs/ladder.md)."]
    return "\n".join(rows) + "\n"


def ladder_plot(report: dict, path: Path) -> None:
    """Times as points on a log axis (bars on a log axis have no true zero and mislead), accuracy below."""
    plt = pyplot()
    stages = report["stages"]
    names = list(stages)
    x = np.arange(len(names))
    summary = [stages[n]["summary"] for n in names]
    seconds = [s["seconds_mean"] for s in summary]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=(3, 2))
    top.errorbar(x, seconds, yerr=[s["seconds_std"] or 0 for s in summary], fmt="o-", color="tab:blue",
                 capsize=3, label="ours (this machine)")
    original = [(i, ORIGINAL_GPU_SECONDS[n]) for i, n in enumerate(names) if n in ORIGINAL_GPU_SECONDS]
    if original:
        top.plot(*zip(*original), "s--", color="tab:orange", label="original study (GTX 1660 Ti)")
    top.set_yscale("log")
    top.grid(True, which="both", axis="y", alpha=0.3)
    top.set_ylabel("seconds per run (log scale)")
    top.set_title("Time to train and test, stage by stage")
    top.legend()
    for i, s in zip(x, seconds):
        top.annotate(f"{s:.2f}", (i, s), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    bottom.errorbar(x, [s["accuracy_mean"] for s in summary], yerr=[s["accuracy_std"] or 0 for s in summary],
                    fmt="o", color="tab:green")
    bottom.axhline(summary[0]["target"], color="red", linestyle=":", label=f"{summary[0]['target']:g}%")
    bottom.set_ylabel("test accuracy % (mean +- std)")
    bottom.set_xlabel("stage")
    bottom.set_xticks(list(x), [n.replace("stage", "") for n in names])
    bottom.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_ladder_report(report: dict, out_dir: Path) -> list[Path]:
    """ladder.md and ladder.png beside ladder.json; what cannot be written goes to a named fallback file."""
    return write_results([(Path(out_dir) / "ladder.md", lambda p: write_text(p, ladder_markdown(report)),
                           "the ladder table"),
                          (Path(out_dir) / "ladder.png", lambda p: ladder_plot(report, p), "the ladder picture")])


def sweep_table(record: dict) -> str:
    target = record["target"]
    lines = [f"{'round':>5} {'param':<16} {'value':>10} {'runs':>4} {'accuracy %':>17} {'SE':>6} "
             f"{f'>={target:g}%':>6} {'seconds':>8} {'p vs kept':>9}"]
    for phase in record["phases"]:
        for s in phase["points"]:
            mark = " <- kept" if s["value"] == phase["chosen"] else ""
            p = "-" if s["p_vs_incumbent"] is None else f"{s['p_vs_incumbent']:.3f}"
            se = "n/a" if s["accuracy_se"] is None else f"{s['accuracy_se']:.3f}"
            lines.append(f"{phase['round']:>5} {phase['param']:<16} {str(s['value']):>10} {s['runs']:>4} "
                         f"{plus_minus(s['accuracy_mean'], s['accuracy_std'], 3):>17} {se:>6} "
                         f"{100 * s['share_reaching_target']:>5.0f}% {s['seconds_mean']:>8.2f} {p:>9}{mark}")
    lines.append("best: " + ", ".join(f"{k}={v}" for k, v in record["best"].items()))
    lines.append("p vs kept: Welch's t-test of the point's accuracies against the value held when the "
                 "parameter's turn began")
    return "\n".join(lines)


def sweep_plots(record: dict, out_dir: Path) -> list[tuple[Path, Callable[[Path], Path], str]]:
    """One picture per parameter (mean accuracy vs value, error bars one standard error, target line), as
    (path, writer, what) for `write_results`."""
    return [(Path(out_dir) / f"sweep-{name}.png", functools.partial(sweep_plot, record, name), f"the {name} picture")
            for name in dict.fromkeys(p["param"] for p in record["phases"])]


def sweep_plot(record: dict, name: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for phase in (p for p in record["phases"] if p["param"] == name):
        points = phase["points"]
        if all(isinstance(s["value"], (int, float)) for s in points):
            points = sorted(points, key=lambda s: s["value"])  # numbers read left to right
        ax.errorbar([str(s["value"]) for s in points], [s["accuracy_mean"] for s in points],
                    yerr=[s["accuracy_se"] or 0 for s in points], fmt="o-", capsize=4,
                    label=f"round {phase['round']} (kept {phase['chosen']})")
    ax.axhline(record["target"], color="red", linestyle=":", label=f"{record['target']:g}%")
    ax.set_xlabel(name)
    ax.set_ylabel("test accuracy % (mean +- SE)")
    ax.set_title(f"sweep: {name}")
    ax.legend()
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def evaluation_text(result: dict) -> str:
    lines = [f"test accuracy: {result['accuracy']:.2f}% ({int(np.trace(result['confusion']))}/"
             f"{int(np.sum(result['confusion']))})",
             "per class:    " + " ".join(f"{d}:{a:.1f}" for d, a in enumerate(result["per_class"])),
             "confusion (rows: true digit, columns: predicted):",
             "      " + " ".join(f"{d:>5}" for d in range(10))]
    lines += [f"  {d:>2}  " + " ".join(f"{n:>5}" for n in row) for d, row in enumerate(result["confusion"])]
    return "\n".join(lines)


def error_grid(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path, limit: int = 100) -> int:
    """A grid of misclassified digits titled 'true->predicted'. Returns how many errors exist."""
    plt = pyplot()
    wrong = np.flatnonzero(predicted != labels)
    shown = wrong[:limit]
    cols = 10
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        ax.imshow(images[index], cmap="gray_r")
        ax.set_title(f"{labels[index]}->{predicted[index]}", fontsize=8)
    fig.suptitle(f"{len(wrong)} misclassified test digits (true->predicted), first {len(shown)} shown")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return len(wrong)
