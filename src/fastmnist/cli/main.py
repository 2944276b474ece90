"""The `fastmnist` command: each subcommand parses its arguments (parser.py), calls its command's function
(the one the Python API calls, in the file named after the command) and prints what it returns.

Exit codes: 0 success; 1 the work was done but a result could not be written where asked (it was saved
elsewhere, and the message says where) or an exported model disagrees with PyTorch; 2 bad input, one line
on stderr; 3 a training run diverged; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import warnings

from fastmnist.cli.parser import Parser, build_parser, joined_values
from fastmnist.errors import FastMnistError
from fastmnist.experiments.seeds import CLAIM_FIRST_SEED, TUNING_FIRST_SEED, choose_seeds, parse_seed_range


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: a sweep marks its run unfinished."""


def on_sigterm(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def signals_that_are_never_lost():
    """SIGTERM unwinds like Ctrl-C. And a Ctrl-C or SIGTERM whose exception Python swallows, because it was
    raised inside a destructor or a weakref callback (SQLAlchemy's, as objects are collected), is sent again
    so that it is raised where the program is next, instead of the run going on to the end unasked. It is
    sent from another thread a moment later: sent here, it would be raised at once, inside the hook, and
    swallowed again."""
    resent = []

    def resend_a_swallowed_signal(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            sent = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
            resent.append(threading.Timer(0.02, os.kill, args=(os.getpid(), sent)))
            resent[-1].start()
        else:
            previous_hook(unraisable)
    previous_hook, sys.unraisablehook = sys.unraisablehook, resend_a_swallowed_signal
    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
        for timer in resent:  # a command that ends before its signal comes back still stops with it
            timer.join()
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous_handler)


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A warning is one line on stderr, `fastmnist: warning: ...`, not a source location and its code."""
    stderr(f"fastmnist: warning: {message}")


def chosen_seeds(args, default_first: int) -> list[int]:
    if args.seeds is not None and args.runs is not None:
        raise FastMnistError(f"give --seeds or --runs, not both (--seeds {args.seeds} is {len(parse_seed_range(args.seeds))} "
                             f"run(s))")
    return choose_seeds(args.runs or args.default_runs, args.first_seed, args.seeds, default_first)


def setup(args):
    """Threads, device and data as the arguments ask, loaded only when runs will happen."""
    from fastmnist.training.runner import setup as load

    return lambda: load(args.device, args.threads, args.data_dir, args.offline)


def load_mnist(args):
    from fastmnist.data import load_mnist as load

    return lambda: load(args.data_dir, allow_download=not args.offline)


def stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def epoch_printer(args, recipe):
    """One stderr line per epoch for multi-epoch recipes (the original printed each epoch's test result)."""
    if args.quiet or recipe.epochs == 1:
        return None
    return lambda epoch, accuracy, elapsed: stderr(f"  epoch {epoch}: test accuracy {accuracy:.2f}% "
                                                   f"({elapsed:.1f} s)")


def cmd_train(args) -> int:
    from fastmnist.recipes.overrides import get_recipe, with_overrides
    from fastmnist.training.train import train

    if args.recipe and args.recipe_option and args.recipe != args.recipe_option:
        raise FastMnistError(f"two recipes given ({args.recipe} and --recipe {args.recipe_option}); train takes one")
    recipe = with_overrides(get_recipe(args.recipe or args.recipe_option or "fastest"), args.set)
    result, _ = train(recipe, args.seed, setup(args), warmup=not args.no_warmup, on_epoch=epoch_printer(args, recipe),
                      save=args.save, show=lambda result, record: print_run(args, result, record))
    if result.diverged:
        if args.save:
            stderr(f"fastmnist: error: not saving {args.save}: the run diverged")
        return 3
    if args.save:
        print(f"saved weights to {args.save}", file=sys.stderr if args.json else sys.stdout)
    return 0


def print_run(args, result, record) -> None:
    from fastmnist.results.machine import describe

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
    from fastmnist.recipes.recipes import listing, show_recipe
    from fastmnist.training.device import pick_device

    print(show_recipe(args.show, pick_device("auto")) if args.show else "\n".join(listing(args.diff)))
    return 0


LONG_BENCH_SECONDS = 180  # a bench expected to take longer says so even with --quiet


def cmd_bench(args) -> int:
    from fastmnist.experiments.bench import bench
    from fastmnist.recipes.overrides import get_recipe, with_overrides
    from fastmnist.results.report import bench_table

    recipes = [with_overrides(get_recipe(name), args.set) for name in args.recipes]
    seeds = chosen_seeds(args, CLAIM_FIRST_SEED)
    say = (lambda text: None) if args.quiet else stderr
    kept = {"seeds": 0}

    def plan(seconds: float) -> None:
        if seconds > LONG_BENCH_SECONDS or not args.quiet:  # a long bench is announced, --quiet or not
            stderr(f"bench: about {seconds / 60:.0f} min for {len(seeds)} seed(s), from the first seed's time"
                   + (f"; Ctrl-C keeps the finished seeds in {args.out}, and the same command continues"
                      if args.out else "; give --out FILE.json to keep finished seeds if it is interrupted"))

    def show(report: dict) -> None:
        if "seeds_run_here" in report:
            say(f"bench: {report['seeds_total']} seed(s) in this bench, {report['seeds_run_here']} run now by this "
                f"worker, {report['seeds_total'] - report['seeds_run_here']} reused from the store (run earlier, or "
                f"by other workers)")
        print(bench_table(report))
    try:
        bench(recipes, seeds, setup(args), storage=args.storage, study=args.study, stale_after=args.stale_after,
              report_only=args.report, progress=not args.quiet,
              on_start=lambda point, seed: say(f"bench: running seed {seed} ({len(recipes)} recipe(s))"),
              on_wait=lambda count: say(f"bench: waiting for {count} seed(s) held by other workers; a worker "
                                        f"that stops beating is taken as gone after {args.stale_after:g} s"),
              asked_as=args.recipes, out=args.out, on_plan=plan, show=show,
              on_run=lambda result: kept.update(seeds=kept["seeds"] + (result.recipe == recipes[-1].name)),
              on_resume=lambda count: stderr(f"bench: continuing {args.out}: {count} seed(s) already there"))
    except (KeyboardInterrupt, Terminated):
        if args.out and not args.storage and kept["seeds"]:
            stderr(f"bench: the finished seeds are kept in {args.out} (marked partial); the same command continues")
        raise
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_ladder(args) -> int:
    from fastmnist.experiments.ladder import ladder, parse_stages

    _, paths = ladder(parse_stages(args.stages), chosen_seeds(args, CLAIM_FIRST_SEED), setup(args),
                               args.out, progress=not args.quiet, show=print,
                               on_plan=None if args.quiet else stderr)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def cmd_sweep(args) -> int:
    from fastmnist.experiments.sweep import sweep
    from fastmnist.recipes.overrides import get_recipe

    recipe = get_recipe(args.recipe)
    seeds = chosen_seeds(args, TUNING_FIRST_SEED)
    say = (lambda text: None) if args.quiet else stderr

    def show(table: str, record: dict) -> None:
        print(table)
        print(f"runs: {record['runs_total']} in this sweep, {record['runs_run_here']} run now by this worker, "
              f"{record['runs_reused']} reused from the store (run earlier, or by other workers)")
    _, written = sweep(
        recipe, args.param, seeds, setup(args), rounds=args.rounds, objective=args.objective,
        target=args.target, storage=args.storage, study=args.study,
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
        out_dir=args.out, show=show)
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_search(args) -> int:
    from pathlib import Path

    from fastmnist.experiments.search import search
    from fastmnist.recipes.overrides import get_recipe, read_space_file

    recipe, reference = get_recipe(args.recipe), get_recipe(args.reference)
    seeds = chosen_seeds(args, TUNING_FIRST_SEED)
    space = [*(read_space_file(args.space_file) if args.space_file else []), *args.space]
    say = (lambda text: None) if args.quiet else stderr

    def show(table: str, record: dict) -> None:
        print(table)
        print(record["best"] + (f", written to {Path(args.out) / 'best.py'}" if record["verification"]["best"] else ""))
    _, written = search(
        recipe, reference, space, seeds, setup(args), args.trials, sampler=args.sampler,
        target=args.target, look=args.look, alpha=args.alpha, rule=args.feasible, verify_seeds=args.verify_seeds,
        verify_top=args.verify_top,
        storage=args.storage, study=args.study, stale_after=args.stale_after, out_dir=args.out, show=show,
        on_trial=lambda number, point: say(f"search: trial {number}: "
                                           f"{', '.join(f'{k}={v}' for k, v in point.items())}"),
        on_verify=lambda count, block: stderr(f"search: verifying the {count} fastest feasible trial(s) on fresh "
                                              f"seeds {block[0]}-{block[-1]}"))
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_report(args) -> int:
    from fastmnist.results.report import bench_table, pool, report

    if len(args.files) == 1:
        report(args.files[0], args.out, show=lambda record: print(bench_table(record)))
    else:
        from fastmnist.experiments.pooling import pooled_table

        pool(args.files, args.out, show=lambda record: print(pooled_table(record)))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from fastmnist.use.evaluate import evaluate, evaluation_text

    def show(result, info) -> None:
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "predicted"} | {"model": info}),
                  file=args.out_json)
        else:
            print(f"model: {args.model} ({', '.join(f'{k} {v}' for k, v in info.items())})")
            print(evaluation_text(result))
    _, _, shown = evaluate(args.model, load_mnist(args), args.errors, show)
    if args.errors:
        print(f"wrote {args.errors} ({shown} misclassified digits)", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_predict(args) -> int:
    from fastmnist.use.predict import predict

    records = predict(args.model, args.images)
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
    from fastmnist.use.export import export

    check = export(args.model, load_mnist(args), args.onnx)
    print(f"wrote {args.onnx}; onnxruntime vs PyTorch on {check['images']} test images: "
          f"{check['same_predictions']} same predictions, max |logit difference| {check['max_abs_diff']:.2e}")
    return 0 if check["same_predictions"] == check["images"] else 1


def cmd_data(args) -> int:
    from fastmnist.data import data

    for line in data(args.data_dir, args.offline):
        print(line)
    return 0


COMMANDS = {"train": cmd_train, "recipes": cmd_recipes, "bench": cmd_bench, "ladder": cmd_ladder, "sweep": cmd_sweep,
            "search": cmd_search, "report": cmd_report, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "export": cmd_export, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    Parser.argv = joined_values(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(Parser.argv)
    args.out_json = sys.stdout  # with --json, only the JSON goes there: whatever else prints (a user's recipe
    try:                        # file at import, say) goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext(), \
                warnings.catch_warnings(), signals_that_are_never_lost():
            warnings.showwarning = one_line_warning
            return COMMANDS[args.command](args)
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
