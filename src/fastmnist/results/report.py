"""`fastmnist report`: a bench's JSON summarised again from its own runs, or several pooled; and the bench
table, which `fastmnist bench` prints too."""

from __future__ import annotations

from pathlib import Path

from fastmnist.errors import FastMnistError
from fastmnist.experiments.stats import ALPHA, CLAIM_RUNS, MIN_PAIRS, format_p, format_ratio, format_share, plus_minus
from fastmnist.results.machine import describe, peak_gflops
from fastmnist.results.output import check_writable, write_json, write_or_fallback
from fastmnist.results.provenance import provenance
from fastmnist.results.records import resummarised


def report(path: str | Path, out: str | Path | None = None, show=None) -> dict:
    """A bench's JSON summarised again from its own runs, every run checked (records.resummarised); seen by
    `show(report)`, then written to `out` (checked before anything is read)."""
    if out:
        check_writable(out, "--out")
    record = resummarised_file(path)
    return shown_and_written(record, out, show, "the report")


def pool(paths: list[str | Path], out: str | Path | None = None, show=None) -> dict:
    """The runs of each recipe definition pooled over several bench files (pooling.py): what a claim's
    replication probability rests on; seen by `show(record)`, then written to `out`."""
    from fastmnist.experiments.pooling import pooled

    if out:
        check_writable(out, "--out")
    record = {**pooled([(str(path), resummarised_file(path)) for path in paths]), "provenance": provenance(),
              "files": [str(p) for p in paths]}
    return shown_and_written(record, out, show, "the pooled report")


def shown_and_written(record: dict, out, show, what: str) -> dict:
    if show:
        show(record)  # first: a full disk cannot take the table away
    if out:
        write_or_fallback(out, lambda path: write_json(path, record), what)
    return record


def resummarised_file(path: str | Path) -> dict:
    import json

    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FastMnistError(f"{path}: not a readable JSON results file ({exc})") from None
    except RecursionError:
        raise FastMnistError(f"{path}: not a results file (JSON nested too deep to read)") from None
    try:
        return resummarised(stored)
    except FastMnistError as exc:
        raise FastMnistError(f"{path}: {exc}") from None


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
