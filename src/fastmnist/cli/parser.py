"""The `fastmnist` command line: every subcommand, its arguments and their help, and the checks of single
values (integers in range, thread counts) that argparse reports as usage errors."""

from __future__ import annotations

import argparse

from fastmnist.errors import FastMnistError
from fastmnist.experiments.seeds import CLAIM_FIRST_SEED, MAX_SEED, TUNING_FIRST_SEED, checked_int


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
    """An integer in [low, high], checked by the same rule the Python API applies (seeds.checked_int)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    try:
        return checked_int("value", value, low, high)
    except FastMnistError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"value={value}: ")) from None


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


def add_store_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--storage", metavar="URL", help=f"Optuna storage URL shared by workers ({default}); "
                        "postgresql+psycopg://USER:PASSWORD@HOST/DB lets workers on several machines share the "
                        "work")
    parser.add_argument("--study", help="study name in the storage (default: derived from the recipes)")
    parser.add_argument("--stale-after", type=positive_int, default=60, metavar="SECONDS",
                        help="a run whose worker has sent no heartbeat for this long is taken as lost and rerun "
                             "(default: 60; heartbeats every few seconds)")


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

    p = sub.add_parser("recipes", help="list the recipes")
    p.add_argument("--diff", action="store_true", help="show what each recipe changes from its parent")
    p.add_argument("--show", metavar="RECIPE", help="every field of one recipe (its network's included), its "
                   "value, the stage that last set it, and the constants of training")

    p = sub.add_parser("bench", help="run recipes interleaved over seeds (the claims range) and compare")
    p.add_argument("recipes", nargs="+", metavar="RECIPE",
                   help="a built-in name (fastmnist recipes), fastest, NAME[key=value,...] or FILE.py:NAME")
    add_seed_args(p, 10, "per recipe", CLAIM_FIRST_SEED, "claims")
    p.add_argument("--out", metavar="FILE.json", help="write every run and the summary as JSON")
    add_store_args(p, "default: none, everything runs in this process")
    p.add_argument("--report", action="store_true", help="run nothing: summarise what the --storage holds")
    add_common(p)

    p = sub.add_parser("ladder", help="run the ladder's stages and write ladder.json/.md/.png")
    p.add_argument("--stages", default="all", help="e.g. 0-8, 3,5,9-12 or all (default: all)")
    add_seed_args(p, 5, "per stage", CLAIM_FIRST_SEED, "claims")
    p.add_argument("--out", default="ladder", metavar="DIR", help="output folder; stages already in its "
                   "ladder.json and not selected are kept (default: ./ladder)")
    add_common(p, overrides=False)

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
    p.add_argument("--feasible", choices=("p", "replicates"), default="p",
                   help="p: feasible at p < --alpha; replicates: and only where its mean and SD would pass a fresh "
                        "25-seed bench >= 95%% of the time, as a claim must, the verified candidates too "
                        "(default: p)")
    p.add_argument("--verify-seeds", type=bounded_nonnegative, default=25, metavar="N",
                   help="fresh seeds the fastest feasible trials are benched on at the end, more while the best "
                        "and the runner-up overlap (default: 25; 0: no verification, no best.py)")
    p.add_argument("--verify-top", type=positive_int, default=3, metavar="N",
                   help="how many of the fastest feasible trials are verified (default: 3)")
    add_store_args(p, "default: sqlite:///OUT/search.db")
    p.add_argument("--out", default="search", metavar="DIR", help="where search.json/.md, front.png and best.py "
                   "go (default: ./search)")
    add_common(p, overrides=False)

    p = sub.add_parser("report", help="a bench's JSON summarised again from its runs (today's statistics, "
                       "e.g. the p-value and replication), as a table; several files: each recipe's runs pooled")
    p.add_argument("files", nargs="+", metavar="FILE.json", help="written by `fastmnist bench --out`; with more "
                   "than one, the runs of each recipe definition are pooled over them")
    p.add_argument("--out", metavar="FILE.json", help="write the report with its new summary (or the pooled one)")

    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a saved model")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("--errors", metavar="PATH.png", help="save a grid of the misclassified test digits")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_data_args(p)

    p = sub.add_parser("predict", help="predict the digit in image files (PNG, JPEG, ...)")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="an image file of one digit, or a folder of them")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")

    p = sub.add_parser("export", help="write an ONNX model, checked against PyTorch with onnxruntime")
    p.add_argument("model", metavar="MODEL", help="weights written by `train --save`")
    p.add_argument("--onnx", required=True, metavar="PATH", help="where to write the .onnx file")
    add_data_args(p)

    p = sub.add_parser("data", help="find, verify (and download) MNIST, build the cache")
    add_data_args(p)
    return parser
