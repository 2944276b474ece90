"""Reports: the ladder as a Markdown table and a picture, built only from a ladder.json and the recipes."""

from __future__ import annotations

from pathlib import Path

from fastmnist.bench import recipe_record
from fastmnist.data import atomic_write, write_text
from fastmnist.recipes import RECIPES, Recipe, describe_changes

# The seed's own times (LADDER.md, GTX 1660 Ti laptop GPU): its claims, shown beside ours, not ours.
SEED_GPU_SECONDS = {"stage0": 172.0, "stage1": 57.4, "stage2": 30.3, "stage3": 7.31, "stage4": 4.66,
                    "stage5": 3.14, "stage6": 2.31, "stage7": 1.74, "stage8": 0.762}


def what_changed(name: str) -> str:
    recipe: Recipe = RECIPES[name]
    parent = RECIPES.get(recipe.parent) if recipe.parent else None
    return "; ".join(describe_changes(parent, recipe))


def is_stale(name: str, stage: dict) -> bool:
    """True when the stored runs were made with a definition other than today's."""
    return name not in RECIPES or stage["recipe"] != recipe_record(RECIPES[name])


def ladder_markdown(report: dict) -> str:
    stages = report["stages"]
    names = list(stages)
    first = stages[names[0]]["summary"]["seconds_mean"]
    rows = ["| stage | what changed | epochs | accuracy % (mean +- std) | runs >= 99% | seconds (mean +- std) "
            "| x vs first | x vs previous | TFLOP/run | GFLOP/s | x above floor | seed's GPU s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    previous = None
    for name in names:
        s = stages[name]["summary"]
        stale = " (stale: definition changed since)" if is_stale(name, stages[name]) else ""
        vs_prev = f"{previous / s['seconds_mean']:.2f}" if previous else "-"
        seed = SEED_GPU_SECONDS.get(name)
        peak = stages[name]["machine"].get("matmul_gflops_fp32")
        floor = f"{s['seconds_mean'] / (s['tflop_per_run'] * 1e3 / peak):.1f}" if peak else "-"
        rows.append(
            f"| {name} | {what_changed(name) if name in RECIPES else '?'}{stale} | {s['epochs_mean']:.1f} "
            f"| {s['accuracy_mean']:.3f} +- {s['accuracy_std']:.3f} | {s['share_at_least_99'] * 100:.0f}% of "
            f"{s['runs']} | {s['seconds_mean']:.2f} +- {s['seconds_std']:.2f} | {first / s['seconds_mean']:.1f} "
            f"| {vs_prev} | {s['tflop_per_run']:.3f} | {s['gflop_per_s']:.1f} | {floor} | {seed if seed else '-'} |")
        previous = s["seconds_mean"]
    machine = stages[names[-1]]["machine"]
    rows += ["", f"Measured on {machine['cpu_model']} ({machine['cpu_count']} cores, {machine['torch_threads']} "
                 f"threads, {machine['device']}), torch {machine['torch_version']}. Timed: model creation, "
                 "training and every test evaluation the recipe makes; not timed: data loading, preparation, one "
                 "short warm-up run per stage. Floor: the run's FLOPs at this machine's best fp32 matmul rate "
                 f"({machine.get('matmul_gflops_fp32', float('nan')):.0f} GFLOP/s). The seed's column is its own "
                 "GTX 1660 Ti figure (LADDER.md)."]
    return "\n".join(rows) + "\n"


def ladder_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report["stages"]
    names = list(stages)
    x = range(len(names))
    seconds = [stages[n]["summary"]["seconds_mean"] for n in names]
    errors = [stages[n]["summary"]["seconds_std"] for n in names]
    accuracy = [stages[n]["summary"]["accuracy_mean"] for n in names]
    acc_err = [stages[n]["summary"]["accuracy_std"] for n in names]
    labels = [n.replace("stage", "") for n in names]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=(3, 2))
    top.bar(x, seconds, yerr=errors, color="tab:blue", label="ours (this machine)")
    seed = [(i, SEED_GPU_SECONDS[n]) for i, n in enumerate(names) if n in SEED_GPU_SECONDS]
    if seed:
        top.plot(*zip(*seed), "o--", color="tab:orange", label="seed (GTX 1660 Ti)")
    top.set_yscale("log")
    top.set_ylabel("seconds per run (log)")
    top.set_title("Time to train and test, stage by stage")
    top.legend()
    for i, s in zip(x, seconds):
        top.annotate(f"{s:.2f}", (i, s), ha="center", va="bottom", fontsize=8)
    bottom.errorbar(x, accuracy, yerr=acc_err, fmt="o", color="tab:green")
    bottom.axhline(99.0, color="red", linestyle=":", label="99%")
    bottom.set_ylabel("test accuracy % (mean +- std)")
    bottom.set_xlabel("stage")
    bottom.set_xticks(list(x), labels)
    bottom.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig, path: Path) -> None:
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))


def write_ladder_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    md, png = out_dir / "ladder.md", out_dir / "ladder.png"
    write_text(md, ladder_markdown(report))
    ladder_plot(report, png)
    return md, png
