"""The `fastmnist` command: each subcommand parses its arguments, calls one function of `commands` (the same
one the Python API calls) and prints what it returns.

Exit codes: 0 success; 1 the work was done but a result could not be written where asked (it was saved
elsewhere, and the message says where) or an exported model disagrees with PyTorch; 2 bad input, one line
on stderr; 3 a training run diverged; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import warnings

from fastmnist.errors import FastMnistError
from fastmnist.seeds import CLAIM_FIRST_SEED, MAX_SEED, TUNING_FIRST_SEED, choose_seeds, parse_seed_range


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: a sweep marks its run unfinished."""


def on_sigterm(signum, frame):
    raise Terminated()


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A warning is one line on stderr, `fastmnist: warning: ...`, not a source location and its code."""
    stderr(f"fastmnist: warning: {message}")


def positive_int(text: str) -> int:
    return bounded_int(text, 1)


def seed_int(text: str) -> int:
    return bounded_int(text, 0, MAX_SEED)


def bounded_nonnegative(text: str) -> int:
    return bounded_int(text, 0, 1000)


def thread_count(text: str) -> int:
    """More threads than cores only makes them wait for each other (999 stalled a 2-core machine)."""
    import os

    cores = os.cpu_count() or 1
    value = bounded_int(text, 1)
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} is more threads than this machine's {cores} cores; workers "
                                         f"sharing it should split them (e.g. {cores} workers with --threads 1)")
    return value


def bounded_int(text: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {high})")
    return value


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder with the four MNIST files (default: the verified cache, "
                                           "then $FASTMNIST_DATA, then the user data folder)")
    parser.add_argument("--offline", action="store_true", help="never download MNIST; fail if it is not found")


def add_common(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto picks CUDA when available (default: auto)")
    parser.add_argument("--threads", type=thread_count, help="CPU threads for PyTorch, at most the cores "
                        "(default: its own choice; workers sharing a machine should split its cores)")
    add_data_args(parser)
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                        help="no progress bars or per-run/per-epoch lines")
    if overrides:
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a recipe field, e.g. --set lr=0.02 --set conv1=16 (repeatable)")


def add_seed_args(parser: argparse.ArgumentParser, runs: int, what: str, first: int, use: str) -> None:
    parser.add_argument("--runs", type=positive_int, help=f"seeds {what} (default: {runs})")
    parser.set_defaults(default_runs=runs)
    parser.add_argument("--first-seed", type=seed_int, metavar="N",
                        help=f"run seeds N, N+1, ... (default: {first}, the {use} range)")
    parser.add_argument("--seeds", metavar="RANGE", help="exactly these seeds, e.g. 100-124 or 3,5,9-12 "
                        "(instead of --runs and --first-seed)")


def chosen_seeds(args, default_first: int) -> list[int]:
    if args.seeds is not None and args.runs is not None:
        raise FastMnistError(f"give --seeds or --runs, not both (--seeds {args.seeds} is {len(parse_seed_range(args.seeds))} "
                             f"run(s))")
    return choose_seeds(args.runs or args.default_runs, args.first_seed, args.seeds, default_first)


def joined_values(argv: list[str]) -> list[str]:
    """`--seeds -5-3` as `--seeds=-5-3`: argparse takes a value that starts with '-' for an option and answers
    'expected one argument'; joined, it reaches the seed parser, which says what is wrong with it."""
    out = []
    for arg in argv:
        if out and out[-1] == "--seeds" and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"--seeds={arg}"
        else:
            out.append(arg)
    return out


class Parser(argparse.ArgumentParser):
    """argparse, with a hint when a file name that starts with '-' was read as an option."""
    argv: list[str] = []

    def error(self, message: str):
        dashed = [a for a in Parser.argv if a.startswith("-") and not a.startswith("--") and "." in a]
        if dashed:
            message += (f" ({dashed[0]} was read as an option: write ./{dashed[0]}, or put -- before the file "
                        f"names)")
        super().error(message)


def setup(args):
    from fastmnist import commands

    return commands.setup(args.device, args.threads, args.data_dir, args.offline)


def stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def epoch_printer(args, recipe):
    """One stderr line per epoch for multi-epoch recipes (the original printed each epoch's test result)."""
    if args.quiet or recipe.epochs == 1:
        return None
    return lambda epoch, accuracy, elapsed: stderr(f"  epoch {epoch}: test accuracy {accuracy:.2f}% "
                                                   f"({elapsed:.1f} s)")


def cmd_train(args) -> int:
    from fastmnist import commands
    from fastmnist.output import check_writable
    from fastmnist.recipes import get_recipe, with_overrides

    if args.recipe and args.recipe_option and args.recipe != args.recipe_option:
        raise FastMnistError(f"two recipes given ({args.recipe} and --recipe {args.recipe_option}); train takes one")
    recipe = with_overrides(get_recipe(args.recipe or args.recipe_option or "fastest"), args.set)
    if args.save:
        check_writable(args.save, "--save")
    device, mnist = setup(args)
    result, _ = commands.train(recipe, args.seed, mnist, device, warmup=not args.no_warmup,
                               on_epoch=epoch_printer(args, recipe), save=args.save,
                               show=lambda result, record: print_run(args, result, record))
    if result.diverged:
        if args.save:
            stderr(f"fastmnist: error: not saving {args.save}: the run diverged")
        return 3
    if args.save:
        print(f"saved weights to {args.save}", file=sys.stderr if args.json else sys.stdout)
    return 0


def print_run(args, result, record) -> None:
    from fastmnist.machine import describe

    if args.json:
        print(json.dumps(record), file=args.out_json)
        return
    excluded = record["excluded_seconds"]
    flag = "  DIVERGED (NaN/inf in the loss, weights or outputs, or ended at chance)" if result.diverged else ""
    print(f"{result.recipe}: test accuracy {result.accuracy:.2f}% after {result.epochs} epoch(s) in "
          f"{result.seconds:.2f} s ({describe(record['machine'])}, {result.precision}, {result.engine}){flag}")
    capture = f", capture {excluded['capture']:.2f} s" if result.engine == "graph" else ""
    print(f"seed {result.seed}, data order {result.data_order}; timed: model creation + training + test "
          f"evaluation; not timed: data load {excluded['data_load']:.2f} s, preparation {excluded['prepare']:.2f} "
          f"s, the seed's data order {result.order_seconds:.2f} s, warm-up {excluded['warmup']:.2f} s{capture}")


def cmd_recipes(args) -> int:
    from fastmnist.recipes import FASTEST, RECIPES, changes_from_parent, get_recipe

    if args.show:
        from fastmnist import commands

        from fastmnist.device import pick_device

        print(commands.show_recipe(get_recipe(args.show), pick_device("auto")))
        return 0
    for recipe in RECIPES.values():
        alias = "  (= fastest)" if recipe.name == FASTEST else ""
        print(f"{recipe.name:<10} {recipe.summary}{alias}")
        if args.diff:
            for line in changes_from_parent(recipe):
                print(f"{'':<12}{line}")
    return 0


LONG_BENCH_SECONDS = 180  # a bench expected to take longer says so even with --quiet


def show_bench(report: dict, out: str | None) -> int:
    """The bench table on stdout (first: a full disk cannot take it away), then the JSON where asked."""
    from fastmnist.output import write_json, write_or_fallback
    from fastmnist.report import bench_table

    print(bench_table(report))
    if out:
        write_or_fallback(out, lambda path: write_json(path, report), "the bench report")
        print(f"wrote {out}")
    return 0


def cmd_bench(args) -> int:
    from fastmnist import commands
    from fastmnist.output import check_writable
    from fastmnist.recipes import get_recipe, with_overrides

    recipes = [with_overrides(get_recipe(name), args.set) for name in args.recipes]
    seeds = chosen_seeds(args, CLAIM_FIRST_SEED)
    if args.out:
        check_writable(args.out, "--out")
    say = (lambda text: None) if args.quiet else stderr
    kept = {"seeds": 0}

    def plan(seconds: float) -> None:
        if seconds > LONG_BENCH_SECONDS or not args.quiet:  # a long bench is announced, --quiet or not
            stderr(f"bench: about {seconds / 60:.0f} min for {len(seeds)} seed(s), from the first seed's time"
                   + (f"; Ctrl-C keeps the finished seeds in {args.out}, and the same command continues"
                      if args.out else "; give --out FILE.json to keep finished seeds if it is interrupted"))

    try:
        report = commands.bench(
            recipes, seeds, lambda: setup(args), storage=args.storage, study=args.study, stale_after=args.stale_after,
            report_only=args.report, progress=not args.quiet,
            on_start=lambda point, seed: say(f"bench: running seed {seed} ({len(recipes)} recipe(s))"),
            on_wait=lambda count: say(f"bench: waiting for {count} seed(s) held by other workers; a worker "
                                      f"that stops beating is taken as gone after {args.stale_after:g} s"),
            asked_as=args.recipes, out=None if args.storage else args.out, on_plan=plan,
            on_run=lambda result: kept.update(seeds=kept["seeds"] + (result.recipe == recipes[-1].name)),
            on_resume=lambda count: stderr(f"bench: continuing {args.out}: {count} seed(s) already there"))
    except (KeyboardInterrupt, Terminated):
        if args.out and not args.storage and kept["seeds"]:
            stderr(f"bench: the finished seeds are kept in {args.out} (marked partial); the same command continues")
        raise
    if "seeds_run_here" in report:
        say(f"bench: {report['seeds_total']} seed(s) in this bench, {report['seeds_run_here']} run now by this "
            f"worker, {report['seeds_total'] - report['seeds_run_here']} reused from the store (run earlier, or by "
            f"other workers)")
    return show_bench(report, args.out)


def add_store_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--storage", metavar="URL", help=f"Optuna storage URL shared by workers ({default}); "
                        "postgresql+psycopg://USER:PASSWORD@HOST/DB lets workers on several machines share the "
                        "work")
    parser.add_argument("--study", help="study name in the storage (default: derived from the recipes)")
    parser.add_argument("--stale-after", type=positive_int, default=60, metavar="SECONDS",
                        help="a run whose worker has sent no heartbeat for this long is taken as lost and rerun "
                             "(default: 60; heartbeats every few seconds)")


def cmd_ladder(args) -> int:
    from fastmnist import commands
    from fastmnist.stages import parse_stages

    _, paths = commands.ladder(parse_stages(args.stages), chosen_seeds(args, CLAIM_FIRST_SEED), lambda: setup(args),
                               args.out, progress=not args.quiet, show=print,
                               on_plan=None if args.quiet else stderr)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def cmd_sweep(args) -> int:
    from pathlib import Path

    from fastmnist import commands
    from fastmnist.output import check_folder
    from fastmnist.recipes import get_recipe

    from fastmnist.search import parse_params

    recipe = get_recipe(args.recipe)
    seeds = chosen_seeds(args, TUNING_FIRST_SEED)
    parse_params(recipe, args.param)  # every value checked before the folder is made: a refusal leaves nothing
    out_dir = check_folder(Path(args.out), "--out")
    say = (lambda text: None) if args.quiet else stderr

    def show(table: str, record: dict) -> None:
        print(table)
        print(f"runs: {record['runs_total']} in this sweep, {record['runs_run_here']} run now by this worker, "
              f"{record['runs_reused']} reused from the store (run earlier, or by other workers)")
    _, written = commands.sweep(
        recipe, args.param, seeds, lambda: setup(args), rounds=args.rounds, objective=args.objective,
        target=args.target, storage=args.storage or f"sqlite:///{out_dir / 'sweep.db'}", study=args.study,
        stale_after=args.stale_after,
        on_resume=lambda count: count and say(f"sweep: the study already holds {count} finished run(s); "
                                              f"they are reused"),
        on_start=lambda point, seed: say(f"sweep: running {', '.join(f'{k}={v}' for k, v in point.items())}, "
                                         f"seed {seed}"),
        on_result=lambda point, seed, result: say(f"sweep:   -> {result['accuracy']:.2f}% in "
                                                  f"{result['seconds']:.2f} s"),
        on_wait=lambda count: say(f"sweep: waiting for {count} run(s) held by other workers; a worker that "
                                  f"stops beating is taken as gone after {args.stale_after:g} s and its run "
                                  f"redone here"),
        out_dir=out_dir, show=show)
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_search(args) -> int:
    from pathlib import Path

    from fastmnist import commands
    from fastmnist.frontier import SeedPlan, read_space_file
    from fastmnist.recipes import get_recipe

    recipe, reference = get_recipe(args.recipe), get_recipe(args.reference)
    seeds = chosen_seeds(args, TUNING_FIRST_SEED)
    space = [*(read_space_file(args.space_file) if args.space_file else []), *args.space]
    plan = SeedPlan(look=min(args.look, len(seeds)), max_seeds=len(seeds), alpha=args.alpha)
    say = (lambda text: None) if args.quiet else stderr

    def show(table: str, record: dict) -> None:
        print(table)
        print(record["best"] + (f", written to {Path(args.out) / 'best.py'}" if record["verification"]["best"] else ""))
    _, written = commands.search(
        recipe, reference, space, seeds, lambda: setup(args), args.trials, sampler=args.sampler,
        target=args.target, plan=plan, verify_seeds=args.verify_seeds, verify_top=args.verify_top,
        storage=args.storage, study=args.study, stale_after=args.stale_after, out_dir=args.out, show=show,
        on_trial=lambda number, point: say(f"search: trial {number}: "
                                           f"{', '.join(f'{k}={v}' for k, v in point.items())}"),
        on_verify=lambda count, block: stderr(f"search: verifying the {count} fastest feasible trial(s) on fresh "
                                              f"seeds {block[0]}-{block[-1]}"))
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_report(args) -> int:
    from fastmnist import commands
    from fastmnist.output import check_writable

    if args.out:
        check_writable(args.out, "--out")
    if len(args.files) == 1:
        return show_bench(commands.report(args.files[0]), args.out)
    from fastmnist.output import write_json, write_or_fallback
    from fastmnist.pooling import pooled_table

    record = commands.pool(args.files)
    print(pooled_table(record))
    if args.out:
        write_or_fallback(args.out, lambda path: write_json(path, record), "the pooled report")
        print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from fastmnist import commands
    from fastmnist.output import check_writable
    from fastmnist.report import evaluation_text

    if args.errors:
        check_writable(args.errors, "--errors", suffixes=(".png",))

    def show(result, info) -> None:
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "predicted"} | {"model": info}),
                  file=args.out_json)
        else:
            print(f"model: {args.model} ({', '.join(f'{k} {v}' for k, v in info.items())})")
            print(evaluation_text(result))
    _, _, shown = commands.evaluate(args.model, lambda: commands.load_data(args.data_dir, args.offline),
                                    args.errors, show)
    if args.errors:
        print(f"wrote {args.errors} ({shown} misclassified digits)", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_predict(args) -> int:
    from fastmnist import commands

    records = commands.predict(args.model, args.images)
    if args.json:
        print(json.dumps(records), file=args.out_json)
    for record in records:
        if "error" in record:
            stderr(f"fastmnist: error: {record['error']}")
        elif not args.json:
            print(f"{record['file']}: {record['digit']} (p={record['probability']:.3f})")
        if "note" in record:
            stderr(f"fastmnist: note: {record['file']}: {record['note']}")
    return 2 if any("error" in r for r in records) else 0


def cmd_export(args) -> int:
    from fastmnist import commands
    from fastmnist.output import check_writable

    check_writable(args.onnx, "--onnx")
    check = commands.export(args.model, lambda: commands.load_data(args.data_dir, args.offline), args.onnx)
    print(f"wrote {args.onnx}; onnxruntime vs PyTorch on {check['images']} test images: "
          f"{check['same_predictions']} same predictions, max |logit difference| {check['max_abs_diff']:.2e}")
    return 0 if check["same_predictions"] == check["images"] else 1


def cmd_data(args) -> int:
    from fastmnist import commands

    for line in commands.data(args.data_dir, args.offline):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fastmnist.version import __version__

    parser = Parser(prog="fastmnist", description="Train to 99% on MNIST as fast as the "
                                     "hardware allows, and show where the time goes.")
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one recipe, print test accuracy and time")
    p.add_argument("recipe", nargs="?", metavar="RECIPE", help="recipe: a built-in name (see `fastmnist "
                   "recipes`), NAME[key=value,...] or FILE.py:NAME (default: fastest); --recipe says the same")
    p.add_argument("--recipe", dest="recipe_option", metavar="RECIPE", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=seed_int, default=0, help="RNG seed, 0 to 2^63-1 (default: 0)")
    p.add_argument("--save", metavar="PATH", help="write the trained weights (safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("recipes", help="list the recipes")
    p.add_argument("--diff", action="store_true", help="show what each recipe changes from its parent")
    p.add_argument("--show", metavar="RECIPE", help="every field of one recipe (its network's included), its "
                   "value, the stage that last set it, and the constants of training")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("bench", help="run recipes interleaved over seeds (the claims range) and compare")
    p.add_argument("recipes", nargs="+", metavar="RECIPE",
                   help="a built-in name (fastmnist recipes), fastest, NAME[key=value,...] or FILE.py:NAME")
    add_seed_args(p, 10, "per recipe", CLAIM_FIRST_SEED, "claims")
    p.add_argument("--out", metavar="FILE.json", help="write every run and the summary as JSON")
    add_store_args(p, "default: none, everything runs in this process")
    p.add_argument("--report", action="store_true", help="run nothing: summarise what the --storage holds")
    add_common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("ladder", help="run the ladder's stages and write ladder.json/.md/.png")
    p.add_argument("--stages", default="all", help="e.g. 0-8, 3,5,9-12 or all (default: all)")
    add_seed_args(p, 5, "per stage", CLAIM_FIRST_SEED, "claims")
    p.add_argument("--out", default="ladder", metavar="DIR", help="output folder; stages already in its "
                   "ladder.json and not selected are kept (default: ./ladder)")
    add_common(p, overrides=False)
    p.set_defaults(func=cmd_ladder)

    p = sub.add_parser("sweep", help="coordinate-ascent search, many seeds per point, resumable")
    p.add_argument("--recipe", default="fastest", help="the starting recipe (default: fastest)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a parameter and the values to try (repeatable; optimised in the order given)")
    add_seed_args(p, 30, "per point", TUNING_FIRST_SEED, "tuning")
    p.add_argument("--rounds", type=positive_int, default=1, help="passes over all parameters (default: 1)")
    p.add_argument("--objective", choices=("accuracy", "time"), default="accuracy",
                   help="keep the best mean accuracy, or the fastest whose mean accuracy >= --target")
    p.add_argument("--target", type=float, default=99.0, help="accuracy target for --objective time")
    add_store_args(p, "default: sqlite:///OUT/sweep.db")
    p.add_argument("--out", default="sweep", metavar="DIR", help="where sweep.json/.md/.png go")
    add_common(p, overrides=False)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("search", help="Optuna's samplers over recipe fields: the fastest recipe whose mean "
                       "still reaches the target, time measured against a reference on the same seeds")
    p.add_argument("--recipe", default="fastest", help="the recipe whose fields are searched (default: fastest)")
    p.add_argument("--reference", default="stage18", help="what every trial's time is compared with, seed by "
                   "seed (default: stage18)")
    p.add_argument("--space", action="append", default=[], metavar="NAME=LOW:HIGH[:STEP|:log] or NAME=V1,V2",
                   help="a field and its range or values, e.g. lr=0.005:0.05:log, batch_size=256:1024:64, "
                        "train_fraction=0.8,0.9,1.0 (repeatable; network fields too)")
    p.add_argument("--space-file", metavar="FILE.toml", help="a named space: NAME = \"LOW:HIGH[:STEP|:log]\" or a "
                   "list of values per line (e.g. spaces/cpu-network.toml); --space adds to it")
    p.add_argument("--trials", type=positive_int, default=20, help="finished trials the study should hold: "
                   "a rerun resumes towards it (default: 20)")
    add_seed_args(p, 12, "a trial runs at most: its verdict, feasible or not, comes at the last", TUNING_FIRST_SEED,
                  "tuning")
    p.add_argument("--look", type=positive_int, default=4, metavar="N",
                   help="seeds between two checks of a trial: one shown below the target is pruned (default: 4)")
    p.add_argument("--sampler", choices=("tpe", "nsga2", "random"), default="tpe",
                   help="Optuna's sampler: tpe minimises the time ratio of feasible trials; nsga2 and random keep "
                        "the front of time against accuracy (default: tpe)")
    p.add_argument("--target", type=float, default=99.0, help="accuracy %% the mean must reach (default: 99.0)")
    p.add_argument("--alpha", type=float, default=0.04, help="a trial is feasible when the one-sided p that its "
                   "mean reaches the target is below this at its last seed (default: 0.04; docs/search.md gives "
                   "the chance of each verdict)")
    p.add_argument("--verify-seeds", type=bounded_nonnegative, default=25, metavar="N",
                   help="fresh seeds the fastest feasible trials are benched on at the end, more while the best "
                        "and the runner-up overlap (default: 25; 0: no verification, no best.py)")
    p.add_argument("--verify-top", type=positive_int, default=3, metavar="N",
                   help="how many of the fastest feasible trials are verified (default: 3)")
    add_store_args(p, "default: sqlite:///OUT/search.db")
    p.add_argument("--out", default="search", metavar="DIR", help="where search.json/.md, front.png and best.py "
                   "go (default: ./search)")
    add_common(p, overrides=False)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("report", help="a bench's JSON summarised again from its runs (today's statistics, "
                       "e.g. the p-value and replication), as a table; several files: each recipe's runs pooled")
    p.add_argument("files", nargs="+", metavar="FILE.json", help="written by `fastmnist bench --out`; with more "
                   "than one, the runs of each recipe definition are pooled over them")
    p.add_argument("--out", metavar="FILE.json", help="write the report with its new summary (or the pooled one)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a saved model")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("--errors", metavar="PATH.png", help="save a grid of the misclassified test digits")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_data_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict the digit in image files (PNG, JPEG, ...)")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="an image file of one digit, or a folder of them")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write an ONNX model, checked against PyTorch with onnxruntime")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("--onnx", required=True, metavar="PATH", help="where to write the .onnx file")
    add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="find, verify (and download) MNIST, build the cache")
    add_data_args(p)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    Parser.argv = joined_values(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(Parser.argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    args.out_json = sys.stdout  # with --json, only the JSON goes there: whatever else prints (a user's recipe
    try:                        # file at import, say) goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext(), \
                warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return args.func(args)
    except FastMnistError as exc:
        stderr(f"fastmnist: error: {exc}")
        return exc.exit_code
    except Terminated:
        stderr("fastmnist: terminated (SIGTERM)")
        return 143
    except KeyboardInterrupt:
        stderr("fastmnist: interrupted")
        return 130
    except BrokenPipeError:  # `fastmnist recipes | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
