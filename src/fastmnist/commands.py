"""Each command once, as a function that both the CLI and the Python API call, so every record and every
file has one author: setup, train, bench, sweep, ladder, report, evaluate, predict, export, data and the
recipe view. They take resolved inputs (recipes, the data, the device) and return what the command reports;
the CLI parses arguments and prints, the API resolves names and wraps reports. Where a command writes files
after its work, it first hands what it will write to `show`, so a full disk cannot take the result away.
A storage URL enters a record only with its password hidden; data is loaded (`load()`) only once a store
has opened and runs will happen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.ledger import entry as ledger_entry
from fastmnist.machine import load_average, load_span, machine_info
from fastmnist.provenance import redact
from fastmnist.recipes import Recipe
from fastmnist.records import envelope, resummarised
from fastmnist.runner import Runner
from fastmnist.seeds import describe_seeds, seed_use
from fastmnist.trainer import RunResult

Load = Callable[[], tuple[torch.device, Mnist]]  # threads, device and data, called only when runs will happen


def load_data(data_dir=None, offline: bool = False) -> Mnist:
    """Verified MNIST (data.load_mnist), downloading it unless `offline`."""
    from fastmnist.data import load_mnist

    return load_mnist(data_dir, allow_download=not offline)


def setup(device: str = "auto", threads: int | None = None, data_dir=None, offline: bool = False,
          mnist: Mnist | None = None) -> tuple[torch.device, Mnist]:
    """Threads, device and data, all before any clock starts (`mnist`: already loaded, used as it is)."""
    from fastmnist.device import pick_device

    if threads:
        torch.set_num_threads(threads)
    return pick_device(device), mnist if mnist is not None else load_data(data_dir, offline)


def train(recipe: Recipe, seed: int, mnist: Mnist, device: torch.device, warmup: bool = True,
          on_epoch=None, save: str | Path | None = None, show=None) -> tuple[RunResult, dict]:
    """One warm run, and its record: the run, what was excluded from its clock, the machine, provenance.
    `show(result, record)` sees them before the weights are saved to `save` (not when the run diverged)."""
    from fastmnist.checkpoint import save_model
    from fastmnist.output import write_or_fallback

    start = load_average()
    runner = Runner(mnist, device, warmup=warmup, on_epoch=on_epoch)
    result = runner.run(recipe, seed)
    record = with_load({**envelope("train", machine_info(device), [recipe]), **result.record(),
                        "device": device.type, "excluded_seconds": runner.excluded_seconds(recipe)}, start)
    if show:
        show(result, record)
    if save and not result.diverged:
        write_or_fallback(save, lambda path: save_model(path, result.model, {
            "recipe": recipe.name, "seed": seed, "accuracy": result.accuracy, "device": device.type,
            "data_order": result.data_order}, recipe.net), "the model")
    return result, record


def read_json_if_any(path: str | Path) -> dict | None:
    """A results file's JSON, or None when there is none (or it is not JSON: it will be replaced)."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None


def with_load(record: dict, start: list[float] | None) -> dict:
    """The record with the machine's load average when the command started and now: a busy machine
    explains slow figures."""
    return {**record, "load_average": load_span(start)}


def bench(recipes: list[Recipe], seeds: list[int], load: Load, storage: str | None = None, study: str | None = None,
          stale_after: float = 60.0, report_only: bool = False, progress: bool = False, on_run=None,
          on_start=None, on_wait=None, asked_as: list[str] | None = None, out: str | Path | None = None,
          on_plan=None, on_resume=None) -> dict:
    """The seeds (seeds.choose_seeds) with the recipes interleaved: in this process, or shared by every worker on
    `storage` (then `report_only` summarises what the store holds, running nothing: no data loaded). In this
    process, with `out`, the report so far is kept there after every seed (marked partial), and a partial
    file of the same recipes is continued: `on_resume(count)` hears how many seeds it held. `on_plan(seconds)`
    hears the expected duration once the first seed has run."""
    from fastmnist.benchmark import bench_study_name, benchmark, shared_benchmark

    if report_only and not storage:
        raise FastMnistError("--report reads a shared bench: give its --storage URL (and --study if named)")
    from fastmnist.ledger import Ledger

    start = load_average()
    asked = {r.name: name for r, name in zip(recipes, asked_as or []) if r.name != name and ".py:" not in name}
    ledger = Ledger(storage)  # a bad URL is one line before any data is loaded
    uses = {r.name: ledger.seed_use(r, seeds) for r in recipes}
    if not storage:
        from fastmnist.benchmark import resumable_runs
        from fastmnist.output import write_json

        resumed = resumable_runs(read_json_if_any(out), recipes, seeds) if out else {}
        if on_resume and resumed:
            on_resume(len(resumed))
        device, mnist = load()
        keep = (lambda partial: write_json(out, {**partial, "partial": True, "asked_as": asked})) if out else None
        report = benchmark(recipes, seeds, mnist, device, progress, on_run, uses, resumed, keep, on_plan)
        ledger.add([ledger_entry(r, seeds, uses[r.name][0], "bench", "") for r in recipes])
        return with_load({**report, "asked_as": asked}, start)
    from fastmnist.store import open_store

    study = study or bench_study_name(recipes)
    store = open_store(storage, study, stale_after)
    runner = None
    if not report_only:
        device, mnist = load()
        runner = Runner(mnist, device)
    report = shared_benchmark(recipes, seeds, store, runner, on_start, on_wait=on_wait, uses=uses)
    if not report_only:
        ledger.add([ledger_entry(r, seeds, uses[r.name][0], "bench", f"study {study!r}") for r in recipes])
    return with_load({**report, "study": study, "storage": redact(storage), "asked_as": asked}, start)


def sweep(recipe: Recipe, params: list[str], seeds: list[int], load: Load, rounds: int = 1,
          objective: str = "accuracy", target: float = 99.0, storage: str | None = None, study: str | None = None,
          stale_after: float = 60.0, on_resume=None, on_start=None, on_result=None, on_wait=None,
          out_dir: str | Path | None = None, show=None) -> tuple[dict, list[Path]]:
    """Coordinate ascent over `params` (['lr=0.01,0.02', ...]), every point run for each of `seeds` (the
    tuning range by default), every run kept in the store at `storage` (in memory when None).
    `on_resume(count)` is told how many runs the store held. With `out_dir`, OUT/sweep.json, sweep.md and a
    picture per parameter are written, after `show(table, record)`; returns the record and the files written."""
    from fastmnist.ledger import Ledger
    from fastmnist.search import (SweepSpec, coordinate_ascent, default_study_name, parse_params, real_job_runner,
                                  swept_recipes)
    from fastmnist.store import open_store

    start = load_average()
    spec = SweepSpec(recipe, parse_params(recipe, params), tuple(seeds), rounds, objective, target)
    study = study or default_study_name(spec)
    store = open_store(storage, study, stale_after)  # a bad URL is one line before any data is loaded
    device, mnist = load()
    if on_resume:
        on_resume(store.finished_count())
    record = coordinate_ascent(spec, store, real_job_runner(spec, Runner(mnist, device)), on_start, on_result,
                               on_wait)
    ledger_entries = [ledger_entry(r, list(seeds), "tuning", "sweep", f"study {study!r}")
                      for r in swept_recipes(spec, record)]
    Ledger(storage).add(ledger_entries)
    record = with_load({**envelope("sweep", machine_info(device), [recipe]), **record, "objective": objective,
                        "target": target, "runs_per_point": len(seeds), "seeds": describe_seeds(list(seeds)),
                        "seed_use": "tuning", "seed_ledger": ledger_entries, "study": study,
                        "storage": redact(storage) if storage else "(in memory)"}, start)
    if out_dir is None:
        return record, []
    from fastmnist.output import write_json, write_results, write_text
    from fastmnist.report import sweep_plots, sweep_table

    table = sweep_table(record)
    if show:
        show(table, record)
    out_dir = Path(out_dir)
    return record, write_results([
        (out_dir / "sweep.json", lambda path: write_json(path, record), "the sweep's record"),
        (out_dir / "sweep.md", lambda path: write_text(path, "```\n" + table + "\n```\n"), "the sweep's table"),
        *sweep_plots(record, out_dir)])


def ladder(stages: list[Recipe], seeds: list[int], load: Load, out_dir: str | Path, progress: bool = False,
           on_epoch=None, show=None, on_plan=None) -> tuple[dict, list[Path]]:
    """The stages interleaved over the seeds into OUT/ladder.json (kept after every seed), then OUT/ladder.md
    and .png. The folder and its files are checked before anything loads; `on_plan(line)` hears how long
    the ladder should take, `show(table)` sees the table before the files are written, so a full disk
    cannot take it away. Stopped before its first seed finished, it leaves no folder it made."""
    from fastmnist.output import check_folder, check_writable
    from fastmnist.report import ladder_markdown, write_ladder_report
    from fastmnist.stages import expected_duration, run_ladder

    made = not Path(out_dir).exists()
    out_dir = check_folder(Path(out_dir), "--out")
    try:
        for name in ("ladder.json", "ladder.md", "ladder.png"):
            check_writable(out_dir / name, "--out")
        if on_plan:
            on_plan(expected_duration(stages, len(seeds), out_dir))
        from fastmnist.ledger import Ledger

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


def training_constants() -> list[tuple[str, object, str]]:
    """The constants of a run that no recipe field sets: every module's RUN_CONSTANTS (name: why), read from
    the modules themselves, so a constant is listed where it is defined or not at all."""
    import importlib

    rows = []
    for module_name in ("models", "layout", "engine", "trainer"):
        module = importlib.import_module(f"fastmnist.{module_name}")
        rows += [(f"{module_name}.{name}", getattr(module, name), why) for name, why in module.RUN_CONSTANTS.items()]
    return rows


def show_recipe(recipe: Recipe, device: torch.device | None = None) -> str:
    """`fastmnist recipes --show`: every field that applies to the recipe, the value that runs on this machine
    (with the value asked for beside it where the machine changes it: bf16 without native bf16, a CUDA graph
    on a CPU, threads left to PyTorch) and the stage that last set it, then the constants of training."""
    from fastmnist.engine import effective_precision, engine_used
    from fastmnist.recipes import applies, lineage, resolved_fields

    device = device or torch.device("cpu")
    ran = {"precision": effective_precision(recipe, device), "engine": engine_used(recipe, device),
           "threads": recipe.threads or torch.get_num_threads()}
    rows = [(name, value, setter) for name, value, setter in resolved_fields(recipe) if applies(recipe, name)]
    hidden = [name for name, _, _ in resolved_fields(recipe) if not applies(recipe, name)]
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [f"{recipe.name}: {recipe.summary}",
             f"lineage: {' -> '.join(r.name for r in lineage(recipe))}",
             f"values as they run here ({device.type}); where this machine changes a value, the one asked for follows",
             f"{'field':<{width}}{'value':<14}set by"]
    for name, value, setter in rows:
        here = ran.get(name, value)
        asked = f"  (asked: {value})" if here != value else ""
        lines.append(f"{name:<{width}}{str(here):<14}{setter}{asked}")
    if hidden:
        lines.append(f"not shown, as they change nothing in this recipe: {', '.join(hidden)}")
    lines += ["", "constants of every run (not recipe fields):"]
    lines += [f"{name:<28}{str(value):<8}{why}" for name, value, why in training_constants()]
    return "\n".join(lines)


def report(path: str | Path) -> dict:
    """A bench's JSON summarised again from its own runs, every run checked (records.resummarised)."""
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


def pool(paths: list[str | Path]) -> dict:
    """The runs of each recipe definition pooled over several bench files (pooling.py): what a claim's
    replication probability rests on."""
    from fastmnist.pooling import pooled

    return {**pooled([(str(path), report(path)) for path in paths]), "provenance": provenance_now(),
            "files": [str(p) for p in paths]}


def provenance_now() -> dict:
    from fastmnist.provenance import provenance

    return provenance()


def evaluate(model_path: str | Path, load: Callable[[], Mnist], errors: str | Path | None = None,
             show=None) -> tuple[dict, dict, int | None]:
    """Test accuracy, per-class accuracy and confusion matrix of a saved model, and how it was trained;
    with `errors`, a grid of the misclassified digits, written after `show(result, info)`. The model is read
    before the data is (`load()`), so a bad model file costs nothing. Returns the evaluation, the model's
    info and how many digits the grid shows."""
    from fastmnist.checkpoint import load_model
    from fastmnist.output import write_or_fallback
    from fastmnist.report import error_grid
    from fastmnist.use import evaluate_model

    model, info = load_model(model_path)
    mnist = load()
    result = evaluate_model(model, mnist)
    if show:
        show(result, info)
    if not errors:
        return result, info, None
    counted = []
    write_or_fallback(errors, lambda path: counted.append(
        error_grid(mnist.test_images, mnist.test_labels, result["predicted"], path)), "the error grid")
    return result, info, counted[-1]


def predict(model_path: str | Path, images: list[str]) -> list[dict]:
    """The digit in each image file (a folder: each file in it), or that file's error."""
    from fastmnist.checkpoint import load_model
    from fastmnist.use import predict_files

    model, _ = load_model(model_path)
    return predict_files(model, images)


def export(model_path: str | Path, load: Callable[[], Mnist], onnx_path: str | Path) -> dict:
    """The model as ONNX at `onnx_path`, and onnxruntime's agreement with PyTorch on test images (the model
    read before the data is)."""
    from fastmnist.checkpoint import load_model
    from fastmnist.output import write_bytes, write_or_fallback
    from fastmnist.use import export_onnx

    model, _ = load_model(model_path)
    blob, check = export_onnx(model, load())
    write_or_fallback(onnx_path, lambda path: write_bytes(path, blob), "the ONNX model")
    return check


def data(data_dir=None, offline: bool = False) -> list[str]:
    """Where MNIST is looked for, then found, verified (downloaded if allowed) and cached: a few lines."""
    from fastmnist.data import cache_path, candidate_dirs

    looks = (f"looks in: {cache_path()} (verified cache), then {', '.join(map(str, candidate_dirs(data_dir)))}"
             if data_dir is None else f"looks in: {data_dir}")
    mnist = load_data(data_dir, offline)
    counts = " ".join(str(int((mnist.train_labels == d).sum())) for d in range(10))
    return [looks, f"MNIST OK: {len(mnist.train_labels)} training and {len(mnist.test_labels)} test images, "
                   f"verified by SHA-256, from {mnist.source}",
            f"training label counts 0-9: {counts}", f"cache: {cache_path()}: {mnist.cache}"]


def search(recipe: Recipe, reference: Recipe, space: list[str], seeds: list[int], load: Load, trials: int,
           sampler: str = "tpe", target: float = 99.0, plan=None, verify_seeds: int = 25, verify_top: int = 3,
           storage: str | None = None, study: str | None = None, stale_after: float = 60.0,
           out_dir: str | Path | None = None, on_trial=None, on_verify=None, show=None) -> tuple[dict, list[Path]]:
    """Optuna's sampler over `space` (['lr=0.005:0.05:log', ...]) until the study holds `trials` finished or
    pruned trials (a rerun resumes; workers on one storage share them), each trial interleaved with `reference`
    on `seeds` as its seed plan says (frontier.py); then the fastest feasible trials verified on fresh seeds.
    With `out_dir`: search.json, search.md, front.png and, when a candidate passed verification, best.py, all
    made from the store (the last worker to finish writes the whole study), after `show(table, record)`."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from fastmnist.frontier import (SearchSpec, SeedPlan, Surplus, best_line, check_identity, default_study_name,
                                    directions, front_plot, front_table, invalid_trials, make_sampler,
                                    new_sampler_seed, objective,
                                    parse_space, recipe_file, trials_table, verification_seeds, verify)
    from fastmnist.ledger import Ledger
    from fastmnist.output import write_json, write_results, write_text
    from fastmnist.store import open_study, retry_lost_trials

    plan = plan or SeedPlan()
    if not 0 < plan.alpha < 1:
        raise FastMnistError(f"alpha={plan.alpha:g}: expected a level between 0 and 1, e.g. 0.04")
    if not 0 < target <= 100:
        raise FastMnistError(f"target={target:g}: expected a test accuracy in (0, 100] %")
    if len(seeds) < plan.max_seeds:
        raise FastMnistError(f"{len(seeds)} tuning seeds for a plan of {plan.max_seeds} a trial: give as many")
    start = load_average()
    spec = SearchSpec(recipe, reference, parse_space(recipe, space), tuple(seeds), target, sampler, plan,
                      verify_seeds, verify_top, verify_max_seeds=2 * verify_seeds)
    if out_dir is not None:  # made only once every input is checked: a refused command leaves nothing behind
        from fastmnist.output import check_folder

        out_dir = check_folder(out_dir, "--out")
        storage = storage or f"sqlite:///{Path(out_dir) / 'search.db'}"
    name = study or default_study_name(spec)
    sampler_seed = new_sampler_seed()
    optuna_study, storage_object = open_study(storage, name, stale_after, directions(spec),
                                              make_sampler(spec, sampler_seed), retry_failed=True)
    check_identity(optuna_study, spec)
    optuna_study.set_metric_names([f"time ratio vs {reference.name}"] +
                                  ([] if sampler == "tpe" else [f"accuracy % ({target:g}% target)"]))
    retry_lost_trials(optuna_study, storage_object)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    device, mnist = load()
    runner = Runner(mnist, device)
    ledger = Ledger(storage)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Ctrl-C: our one line, not Optuna's traceback
    try:  # until the study is full; again while trials lost by killed workers wait to be retried
        while (left := trials - len(optuna_study.get_trials(deepcopy=False, states=finished))) > 0:
            optuna_study.optimize(objective(spec, runner, trials, storage_object, sampler_seed, on_trial),
                                  n_trials=left, catch=(Surplus,), callbacks=[MaxTrialsCallback(trials, states=finished)])
            retry_lost_trials(optuna_study, storage_object)
            if not optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                break  # what is left is running in other workers: the last of them writes the whole study
    finally:
        optuna.logging.set_verbosity(verbosity)
    rows = trials_table(optuna_study)
    ledger.add([ledger_entry(r, list(seeds[:plan.max_seeds]), "tuning", "search", f"study {name!r}")
                for r in [recipe, reference]] +
               [entry_of(row, seeds, name) for row in rows])
    verified = optuna_study.user_attrs.get("verification")
    if verified is None or [c["trial"] for c in verified["candidates"]] != \
            [r["trial"] for r in sorted((r for r in rows if r["feasible"]), key=lambda r: r["time_ratio"])[:verify_top]]:
        fresh = verification_seeds(verify_seeds, ledger) if verify_seeds else []
        verified = verify(spec, rows, runner, ledger, fresh, on_verify)
        optuna_study.set_user_attr("verification", verified)
    record = with_load({**envelope("search", machine_info(device), [recipe, reference]), "study": name,
                        "storage": redact(storage) if storage else "(in memory)", "sampler": sampler,
                        "sampler_seeds": sorted({r["sampler_seed"] for r in rows if r.get("sampler_seed") is not None}),
                        "space": list(space), "target": target, "plan": dataclasses.asdict(plan),
                        "seeds": describe_seeds(list(seeds[:plan.max_seeds])), "seed_use": "tuning",
                        "trials": rows, "invalid_trials": invalid_trials(optuna_study),
                        "verification": verified}, start)
    record["best"] = best_line(record)
    if out_dir is None:
        return record, []
    table = front_table(rows, spec, verified)
    if show:
        show(table, record)
    out_dir = Path(out_dir)
    writes = [(out_dir / "search.json", lambda path: write_json(path, record), "the search's record"),
              (out_dir / "search.md", lambda path: write_text(path, "```\n" + table + "\n" + record["best"] + "\n```\n"),
               "the search's table"),
              (out_dir / "front.png", lambda path: front_plot(rows, spec, path, verified), "the front's picture")]
    if verified["best"]:
        writes.append((out_dir / "best.py", lambda path: write_text(path, recipe_file(
            spec, verified["best"], name, len(rows), verified)), "the best recipe"))
    return record, write_results(writes)


def entry_of(row: dict, seeds: list[int], study: str) -> dict:
    """A trial's seeds in the seed ledger: its definition was tuned on them."""
    return {**ledger_entry(Recipe("", ""), row["seeds"], "tuning", "search", f"study {study!r}, trial {row['trial']}"),
            "definition": row["definition"], "recipe": row["recipe"]}
