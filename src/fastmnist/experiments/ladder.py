"""`fastmnist ladder`: the stages run interleaved over the seeds, every run kept in DIR/ladder.json, and
the ladder's table and picture (ladder.md, ladder.png).

A later call with other stages updates those stages and keeps the rest, so a slow stage 0 need not be rerun
to add a new stage at the top. Stages are numbered by their place in `recipes.stages.LADDER`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastmnist.errors import FastMnistError
from fastmnist.experiments.ledger import Ledger, entry as ledger_entry
from fastmnist.experiments.seeds import int_range
from fastmnist.experiments.stats import CLAIM_RUNS, ALPHA, format_p, format_share, plus_minus
from fastmnist.recipes.overrides import get_recipe
from fastmnist.recipes.recipe import Recipe
from fastmnist.recipes.stages import LADDER, RECIPES, changes_from_parent
from fastmnist.results.machine import describe, peak_gflops, load_average, load_span, machine_info
from fastmnist.results.output import (check_folder, check_writable, pyplot, save_figure, write_json, write_or_fallback,
                                      write_results, write_text)
from fastmnist.results.records import envelope, recipe_record, summary_row, with_ratio
from fastmnist.results.report import peaks_text, ratio_text
from fastmnist.training.nets import NetSpec, flops_per_image
from fastmnist.training.runner import Load, Runner


def ladder(stages: list[Recipe], seeds: list[int], load: Load, out_dir: str | Path, progress: bool = False,
           on_epoch=None, show=None, on_plan=None) -> tuple[dict, list[Path]]:
    """The stages interleaved over the seeds into OUT/ladder.json (kept after every seed), then OUT/ladder.md
    and .png. The folder and its files are checked before anything loads; `on_plan(line)` hears how long
    the ladder should take, `show(table)` sees the table before the files are written, so a full disk
    cannot take it away. Stopped before its first seed finished, it leaves no folder it made."""
    made = not Path(out_dir).exists()
    out_dir = check_folder(Path(out_dir), "--out")
    try:
        for name in ("ladder.json", "ladder.md", "ladder.png"):
            check_writable(out_dir / name, "--out")
        if on_plan:
            on_plan(expected_duration(stages, len(seeds), out_dir))

        ledger = Ledger()
        uses = {r.name: ledger.seed_use(r, seeds) for r in stages}
        device, mnist = load()
        report = run_ladder(stages, seeds, mnist, device, out_dir, progress, on_epoch, uses)
        ledger.add([ledger_entry(r, seeds, uses[r.name][0], "ladder", str(out_dir)) for r in stages])
    except BaseException:
        if made and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    if show:
        show(ladder_markdown(report))
    return report, [out_dir / "ladder.json", *write_ladder_report(report, out_dir)]


TYPICAL_EARLY_STOP_EPOCHS = 3  # for the time estimate only: stages 1-4 stop after 2-5 epochs


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: '12-14,mine.py:r[lr=0.1,epochs=2]' -> two parts."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def parse_stages(text: str) -> list[Recipe]:
    """'0-8', '3,5,9-12' or 'all' -> those stages, in ladder order, then any other recipes named
    (e.g. 'mine.py:r'). A reversed or empty range is an error."""
    if text.strip() == "all":
        return list(LADDER)
    wanted, others = set(), []
    for part in split_top_level(text):
        if not part.strip().replace("-", "").isdigit() and part.strip():
            others.append(get_recipe(part.strip()))
            continue
        first, last = int_range(part, "--stages", text, "0-8, 3,5,9-12 or all")
        wanted.update(range(first, last + 1))
    unknown = sorted(n for n in wanted if not 0 <= n < len(LADDER))
    if unknown:
        raise FastMnistError(f"--stages: no stage {unknown[0]}; stages are 0-{len(LADDER) - 1}")
    return [LADDER[n] for n in sorted(wanted)] + others


def ladder_position(name: str) -> int:
    """Where a stored stage sits in today's ladder; stages no longer defined go last."""
    names = [r.name for r in LADDER]
    return names.index(name) if name in names else len(names)


def estimated_tflop(recipe: Recipe) -> float:
    """Work of one run, for the progress bar's time estimate: stages differ 100x in cost, runs do not."""
    train, infer = flops_per_image(recipe.net)
    epochs = min(recipe.epochs, TYPICAL_EARLY_STOP_EPOCHS) if recipe.early_stop else recipe.epochs
    evaluations = epochs if recipe.eval_every_epoch else 1
    return (epochs * 60000 * recipe.train_fraction * train + evaluations * 10000 * infer) / 1e12


def run_ladder(stages: list[Recipe], seeds: list[int], mnist, device, out_dir: Path, progress: bool = True,
               on_epoch=None, uses: dict | None = None) -> dict:
    """One warm-up per stage, then for each seed every stage in turn (A B A B ...), so a stage and its parent
    pair up seed by seed on the same machine load. The JSON is rewritten after every seed. `uses`: each
    stage's seed use from the seed ledger."""
    path = Path(out_dir) / "ladder.json"
    report = load_ladder(path) if path.is_file() else {"kind": "ladder", "stages": {}}
    runner = Runner(mnist, device, on_epoch=on_epoch)
    machine = machine_info(device, peaks=True)  # once: the floors every stage's time is held to
    bar = tqdm(total=sum(estimated_tflop(r) for r in stages) * len(seeds), unit="TFLOP", disable=not (progress and sys.stderr.isatty()),
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} TFLOP [{elapsed}<{remaining}]")
    load_start = load_average()
    results = {r.name: [] for r in stages}
    by_name = {r.name: r for r in stages}
    for seed in seeds:
        bar.set_description(f"seed {seed}")
        for name, runs in runner.run_interleaved(
                stages, [seed], on_run=lambda result: bar.update(estimated_tflop(by_name[result.recipe]))).items():
            results[name] += runs
        for recipe in stages:
            report["stages"][recipe.name] = stage_record(recipe, results, runner, machine, load_start,
                                                         (uses or {}).get(recipe.name))
        report["stages"] = dict(sorted(report["stages"].items(), key=lambda kv: ladder_position(kv[0])))
        write_or_fallback(path, lambda target: write_json(target, report), "the ladder's runs")
    bar.close()
    return report


def stage_record(recipe: Recipe, results: dict, runner: Runner, machine: dict, load_start, use=None) -> dict:
    """A stage's runs and summary; with its parent run beside it, the paired time ratio to the parent."""
    runs = results[recipe.name]
    summary = summary_row(recipe, runs, use)
    if recipe.parent in results:
        summary = with_ratio(summary, results[recipe.parent], runs, "parent")
    head = envelope("ladder-stage", machine, [recipe])
    return {"recipe": head["recipes"][recipe.name], "what_changed": "; ".join(changes_from_parent(recipe)),
            "summary": summary, "excluded_seconds": runner.excluded_seconds(recipe),
            "runs": [r.record() for r in runs], "machine": head["machine"], "provenance": head["provenance"],
            "load_average": load_span(load_start)}


RECORDED_LADDER = Path(__file__).resolve().parents[3] / "results" / "ladder" / "ladder.json"  # in a checkout


def expected_duration(stages: list[Recipe], runs: int, out_dir: Path) -> str:
    """One line before a ladder starts: how long it should take, from the seconds per run recorded for these
    stages (in OUT/ladder.json, else in the project's own results), with where they were measured."""
    total, machines, unknown = 0.0, set(), []
    recorded = [load_ladder(path)["stages"] for path in (Path(out_dir) / "ladder.json", RECORDED_LADDER)
                if path.is_file()]
    for recipe in stages:
        stage = next((r[recipe.name] for r in recorded if recipe.name in r), None)
        if stage is None:
            unknown.append(recipe.name)
            continue
        total += runs * (stage["summary"]["seconds_mean"] + stage["excluded_seconds"].get("warmup", 0.0) / runs)
        machines.add(stage["machine"].get("cpu_model") or stage["machine"].get("gpu", "?"))
    if not total:
        return f"ladder: {len(stages)} stage(s) x {runs} run(s); no recorded times to estimate the duration from"
    hours, rest = divmod(int(total), 3600)
    length = f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
    missing = f", not counting {', '.join(unknown)} (no recorded time)" if unknown else ""
    return (f"ladder: {len(stages)} stage(s) x {runs} run(s): about {length} as recorded on "
            f"{', '.join(sorted(machines))}{missing}; Ctrl-C keeps every finished seed")


def load_ladder(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
        assert report.get("kind") == "ladder" and isinstance(report.get("stages"), dict)
        return report
    except (OSError, ValueError, AssertionError):
        raise FastMnistError(f"{path}: not a ladder.json written by fastmnist; move it away or pick another "
                             f"--out") from None


# The original study's own times (docs/ladder.md, GTX 1660 Ti laptop GPU): its claims, shown beside ours.
ORIGINAL_GPU_SECONDS = {"stage0": 172.0, "stage1": 57.4, "stage2": 30.3, "stage3": 7.31, "stage4": 4.66,
                        "stage5": 3.14, "stage6": 2.31, "stage7": 1.74, "stage8": 0.762}


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
