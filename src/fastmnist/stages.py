"""`fastmnist ladder`: run the stages interleaved over the seeds, and keep every run in DIR/ladder.json.

A later call with other stages updates those stages and keeps the rest, so a slow stage 0 need not be rerun
to add a new stage at the top. Stages are numbered by their place in `recipes.LADDER`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from fastmnist.errors import FastMnistError
from fastmnist.models import flops_per_image
from fastmnist.output import write_json, write_or_fallback
from fastmnist.recipes import LADDER, Recipe, changes_from_parent, get_recipe
from fastmnist.machine import load_average, load_span, machine_info
from fastmnist.records import envelope, summary_row, with_ratio
from fastmnist.seeds import int_range
from fastmnist.runner import Runner

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


RECORDED_LADDER = Path(__file__).resolve().parents[2] / "results" / "ladder" / "ladder.json"  # in a checkout


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
