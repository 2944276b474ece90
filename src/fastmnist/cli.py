"""The `fastmnist` command. Each subcommand is a thin layer over one module; errors become one line + exit 2."""

from __future__ import annotations

import argparse
import json
import sys

from fastmnist.errors import FastMnistError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder with the four MNIST files (default: $FASTMNIST_DATA, then "
                                           "the user cache)")
    parser.add_argument("--download", action="store_true", help="download MNIST if it is not found")


def add_common(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto picks CUDA when available (default: auto)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch (default: its own choice)")
    add_data_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if overrides:
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a recipe field, e.g. --set lr=0.02 --set conv1=16 (repeatable)")


def setup(args):
    """Threads, device and data, all before any clock starts."""
    import torch

    from fastmnist.data import load_mnist
    from fastmnist.train import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    mnist = load_mnist(args.data_dir, allow_download=args.download)
    return device, mnist


def cmd_train(args) -> int:
    from fastmnist.bench import Preparer, machine, warm_up
    from fastmnist.checkpoint import save_model
    from fastmnist.recipes import get_recipe, with_overrides
    from fastmnist.train import train_run

    recipe = with_overrides(get_recipe(args.recipe), args.set)
    device, mnist = setup(args)
    data = Preparer(mnist, device)(recipe)
    warmup_seconds = 0.0 if args.no_warmup else warm_up(recipe, data)
    result = train_run(recipe, data, args.seed)
    info = machine(device)
    record = {**result.record(), "recipe": recipe.name, "device": device.type,
              "torch_version": info["torch_version"], "cpu_model": info["cpu_model"],
              "threads": info["torch_threads"], "gpu": info.get("gpu"),
              "excluded_seconds": {"data_load": mnist.load_seconds, "prepare": data.seconds,
                                   "warmup": warmup_seconds}}
    if args.save:
        save_model(args.save, result.model, {k: record[k] for k in ("recipe", "seed", "accuracy", "device")})
    if args.json:
        print(json.dumps(record))
    else:
        flag = "  DIVERGED (loss became NaN/inf)" if result.diverged else ""
        print(f"{recipe.name}: test accuracy {result.accuracy:.2f}% after {result.epochs} epoch(s) in "
              f"{result.seconds:.2f} s on {device.type} ({info['cpu_model'] if device.type == 'cpu' else info['gpu']},"
              f" {info['torch_threads']} threads, {result.precision}){flag}")
        print(f"timed: model creation + training + test evaluation; not timed: data load "
              f"{mnist.load_seconds:.2f} s, preparation {data.seconds:.2f} s, warm-up {warmup_seconds:.2f} s")
        if args.save:
            print(f"saved weights to {args.save}")
    return 3 if result.diverged else 0


def cmd_recipes(args) -> int:
    from fastmnist.recipes import FASTEST, RECIPES, describe_changes

    for recipe in RECIPES.values():
        alias = "  (= fastest)" if recipe.name == FASTEST else ""
        print(f"{recipe.name:<10} {recipe.summary}{alias}")
        if args.diff:
            parent = RECIPES.get(recipe.parent) if recipe.parent else None
            for line in describe_changes(parent, recipe):
                print(f"{'':<12}{line}")
    return 0


def cmd_bench(args) -> int:
    from fastmnist.bench import benchmark, format_table, write_json
    from fastmnist.recipes import get_recipe, with_overrides

    recipes = [with_overrides(get_recipe(name), args.set) for name in args.recipes]
    device, mnist = setup(args)
    report = benchmark(recipes, args.runs, mnist, device, progress=not args.no_progress)
    print(format_table(report))
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


def cmd_ladder(args) -> int:
    from pathlib import Path

    from fastmnist.ladder import parse_stages, run_ladder
    from fastmnist.report import write_ladder_report

    stages = parse_stages(args.stages)
    device, mnist = setup(args)
    out_dir = Path(args.out)
    report = run_ladder(stages, args.runs, mnist, device, out_dir, progress=not args.no_progress)
    md, png = write_ladder_report(report, out_dir)
    print(md.read_text())
    print(f"wrote {out_dir / 'ladder.json'}, {md}, {png}")
    return 0


def cmd_sweep(args) -> int:
    from pathlib import Path

    from fastmnist.bench import machine, write_json
    from fastmnist.data import write_text
    from fastmnist.recipes import get_recipe
    from fastmnist.sweep import (JobStore, SweepSpec, coordinate_ascent, default_study_name, open_study,
                                 parse_params, real_job_runner, sweep_plots, sweep_table)

    recipe = get_recipe(args.recipe)
    spec = SweepSpec(recipe, parse_params(recipe, args.param), args.runs, args.rounds, args.objective, args.target)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out_dir / 'sweep.db'}"
    study_name = args.study or default_study_name(spec)
    store = JobStore(open_study(storage, study_name), args.stale_after)
    device, mnist = setup(args)

    def show(point, seed, result):
        if not args.no_progress:
            label = ", ".join(f"{k}={v}" for k, v in point.items())
            print(f"  {label} seed {seed}: {result['accuracy']:.2f}% {result['seconds']:.2f}s", file=sys.stderr)

    record = coordinate_ascent(spec, store, real_job_runner(spec, mnist, device), on_result=show)
    record.update({"kind": "sweep", "recipe": recipe.name, "objective": args.objective, "target": args.target,
                   "runs_per_point": args.runs, "study": study_name, "storage": storage,
                   "machine": machine(device)})
    table = sweep_table(record)
    print(table)
    write_json(out_dir / "sweep.json", record)
    write_text(out_dir / "sweep.md", "```\n" + table + "\n```\n")
    pictures = sweep_plots(record, out_dir)
    print(f"wrote {out_dir / 'sweep.json'}, {out_dir / 'sweep.md'}, {', '.join(map(str, pictures))}")
    return 0


def load_test_data(args):
    from fastmnist.data import load_mnist

    return load_mnist(args.data_dir, allow_download=args.download)


def cmd_evaluate(args) -> int:
    from fastmnist.checkpoint import load_model
    from fastmnist.use import evaluate, format_evaluation, save_error_grid

    model, info = load_model(args.model)
    mnist = load_test_data(args)
    result = evaluate(model, mnist)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "predicted"} | {"model": info}))
    else:
        trained = ", ".join(f"{k} {v}" for k, v in info.items())
        print(f"model: {args.model} ({trained})")
        print(format_evaluation(result))
    if args.errors:
        count = save_error_grid(mnist, result["predicted"], args.errors)
        print(f"wrote {args.errors} ({count} misclassified digits)", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_predict(args) -> int:
    from fastmnist.checkpoint import load_model
    from fastmnist.use import predict_files

    model, _ = load_model(args.model)
    records = predict_files(model, args.images)
    if args.json:
        print(json.dumps(records))
    for record in records:
        if "error" in record:
            print(f"fastmnist: error: {record['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{record['file']}: {record['digit']} (p={record['probability']:.3f})")
    return 2 if any("error" in r for r in records) else 0


def cmd_export(args) -> int:
    from fastmnist.checkpoint import load_model
    from fastmnist.use import export_onnx

    model, _ = load_model(args.model)
    check = export_onnx(model, args.onnx, load_test_data(args))
    print(f"wrote {check['path']}; onnxruntime vs PyTorch on {check['images']} test images: "
          f"{check['same_predictions']} same predictions, max |logit difference| {check['max_abs_diff']:.2e}")
    return 0 if check["same_predictions"] == check["images"] else 1


def cmd_data(args) -> int:
    from fastmnist.data import cache_path, load_mnist, locate

    folder, looked = locate(args.data_dir)
    print(f"looked in: {', '.join(map(str, looked))}")
    mnist = load_mnist(args.data_dir, allow_download=args.download)
    counts = " ".join(str(int((mnist.train_labels == d).sum())) for d in range(10))
    print(f"MNIST OK: {len(mnist.train_labels)} training and {len(mnist.test_labels)} test images, "
          f"verified by SHA-256, from {mnist.source}")
    print(f"training label counts 0-9: {counts}")
    print(f"cache: {cache_path()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fastmnist import __version__

    parser = argparse.ArgumentParser(prog="fastmnist", description="Train to 99% on MNIST as fast as the "
                                     "hardware allows, and show where the time goes.")
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one recipe, print test accuracy and time")
    p.add_argument("--recipe", default="fastest", help="recipe name (see `fastmnist recipes`; default: fastest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="PATH", help="write the trained weights (safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("recipes", help="list the recipes")
    p.add_argument("--diff", action="store_true", help="show what each recipe changes from its parent")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("bench", help="run recipes interleaved over seeds 0..N-1 and compare")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--runs", type=positive_int, default=10, help="seeds per recipe (default: 10)")
    p.add_argument("--out", metavar="FILE.json", help="write every run and the summary as JSON")
    add_common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("ladder", help="run the ladder's stages and write ladder.json/.md/.png")
    p.add_argument("--stages", default="all", help="e.g. 0-8, 3,5,9-12 or all (default: all)")
    p.add_argument("--runs", type=positive_int, default=5, help="seeds per stage (default: 5)")
    p.add_argument("--out", default="ladder", metavar="DIR", help="output folder; stages already in its "
                   "ladder.json and not selected are kept (default: ./ladder)")
    add_common(p, overrides=False)
    p.set_defaults(func=cmd_ladder)

    p = sub.add_parser("sweep", help="coordinate-ascent search, many seeds per point, resumable")
    p.add_argument("--recipe", default="fastest", help="the starting recipe (default: fastest)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a parameter and the values to try (repeatable; optimised in the order given)")
    p.add_argument("--runs", type=positive_int, default=30, help="seeds per point (default: 30)")
    p.add_argument("--rounds", type=positive_int, default=1, help="passes over all parameters (default: 1)")
    p.add_argument("--objective", choices=("accuracy", "time"), default="accuracy",
                   help="keep the best mean accuracy, or the fastest whose mean accuracy >= --target")
    p.add_argument("--target", type=float, default=99.0, help="accuracy target for --objective time")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/sweep.db); "
                   "postgresql://... lets workers on several machines share one sweep")
    p.add_argument("--study", help="study name (default: derived from recipe, params and runs)")
    p.add_argument("--stale-after", type=float, default=1800.0, metavar="SECONDS",
                   help="a run claimed this long ago without a result is taken as lost and rerun")
    p.add_argument("--out", default="sweep", metavar="DIR", help="where sweep.json/.md/.png go")
    add_common(p, overrides=False)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a saved model")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("--errors", metavar="PATH.png", help="save a grid of the misclassified test digits")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_data_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict the digit in image files (PNG, JPEG, ...)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write an ONNX model, checked against PyTorch with onnxruntime")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--onnx", required=True, metavar="PATH", help="where to write the .onnx file")
    add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="find, verify (and download) MNIST, build the cache")
    add_data_args(p)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FastMnistError as exc:
        print(f"fastmnist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastmnist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
