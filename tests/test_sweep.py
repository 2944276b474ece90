"""Sweep: parameter parsing, the coordinate ascent on a cheap fake objective, resume, two workers."""

import json
import multiprocessing
from collections import Counter

import pytest
from optuna.trial import TrialState

from fastmnist.errors import FastMnistError
from fastmnist.recipes.overrides import get_recipe
from fastmnist.experiments.store import open_store
from fastmnist.experiments.sweep import SweepSpec, coordinate_ascent
from fastmnist.recipes.overrides import parse_fields

RECIPE = get_recipe("stage8")
PARAMS = (("lr", (0.005, 0.02)), ("batch_size", (128, 512)))


def fake_job(point, seed):
    """Accuracy peaks at lr 0.02 and batch 128, plus seed noise; time grows as batches shrink."""
    lr, batch_size = point.get("lr", 0.01), point.get("batch_size", 256)
    accuracy = 99.0 + (0.2 if lr == 0.02 else 0.0) + (0.1 if batch_size == 128 else 0.0) - 0.05 * (lr == 0.005)
    return {"accuracy": accuracy + 0.01 * (seed % 3), "seconds": 1000 / batch_size,
            "diverged": False, "epochs": 1}


def store_at(tmp_path, name="s"):
    return open_store(f"sqlite:///{tmp_path / 'sweep.db'}", name, stale_after=600)


def params(recipe, texts):
    return tuple((d.name, d.choices) for d in parse_fields(recipe, texts, "--param", ranges=False))


def test_parse_params_and_errors():
    assert params(RECIPE, ["lr=0.005,0.01", "optimizer=adam,sgd"]) == (
        ("lr", (0.005, 0.01)), ("optimizer", ("adam", "sgd")))
    for bad, fragment in [(["nope=1"], "unknown parameter 'nope'; valid: "), (["lr=abc"], "expected a number"),
                          (["batch_size=0,64"], "out of range"), (["optimizer=lion"], "choose from"),
                          (["lr"], "expected KEY=VALUE"), (["lr=,"], "no values"), ([], "at least one"),
                          (["lr=0.1", "lr=0.2"], "given twice")]:
        with pytest.raises(FastMnistError, match=fragment):
            params(RECIPE, bad)


def test_coordinate_ascent_finds_the_peak(tmp_path):
    spec = SweepSpec(RECIPE, PARAMS, seeds=tuple(range(3)), rounds=3)
    record = coordinate_ascent(spec, store_at(tmp_path), fake_job)
    assert record["best"] == {"lr": 0.02, "batch_size": 128}
    first = record["phases"][0]
    assert first["param"] == "lr" and first["incumbent"] == 0.01
    assert [p["value"] for p in first["points"]] == [0.01, 0.005, 0.02]  # incumbent, then the listed values
    assert all(p["runs"] == 3 for p in first["points"])
    # round 2 changes nothing, so the ascent stops there rather than running round 3
    assert max(p["round"] for p in record["phases"]) == 2


def test_objective_time_takes_fastest_reaching_target(tmp_path):
    spec = SweepSpec(RECIPE, (("batch_size", (128, 512)),), seeds=tuple(range(2)), objective="time", target=99.0)
    assert coordinate_ascent(spec, store_at(tmp_path), fake_job)["best"]["batch_size"] == 512


def test_runs_are_reused_not_repeated(tmp_path):
    calls = Counter()

    def counting(point, seed):
        calls[json.dumps(point, sort_keys=True), seed] += 1
        return fake_job(point, seed)
    spec = SweepSpec(RECIPE, PARAMS, seeds=tuple(range(2)), rounds=2)
    coordinate_ascent(spec, store_at(tmp_path), counting)
    assert max(calls.values()) == 1  # the incumbent point is shared by both parameters' phases
    coordinate_ascent(spec, store_at(tmp_path), counting)  # same command again: all from the store
    assert max(calls.values()) == 1


def test_resume_after_interrupt_loses_only_the_run_in_flight(tmp_path):
    spec = SweepSpec(RECIPE, PARAMS, seeds=tuple(range(3)))
    done = []

    def interrupted(point, seed):
        if len(done) == 4:
            raise KeyboardInterrupt
        done.append((point, seed))
        return fake_job(point, seed)
    with pytest.raises(KeyboardInterrupt):
        coordinate_ascent(spec, store_at(tmp_path), interrupted)
    study = store_at(tmp_path).study
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 0  # the in-flight run was released
    rerun = []
    record = coordinate_ascent(spec, store_at(tmp_path), lambda p, s: rerun.append((p, s)) or fake_job(p, s))
    assert not any(job in rerun for job in done)
    assert (record["runs_reused"], record["runs_run_here"]) == (4, 11)  # the resumed sweep says what it reused
    again = coordinate_ascent(spec, store_at(tmp_path), fake_job)
    assert (again["runs_reused"], again["runs_run_here"]) == (15, 0)
    assert (record["best"], record["phases"]) == (again["best"], again["phases"])  # as if uninterrupted


def worker(path, results):
    import time

    def slow(point, seed):
        time.sleep(0.05)
        return fake_job(point, seed)
    store = open_store(f"sqlite:///{path}", "shared", stale_after=600)
    results.put(coordinate_ascent(SweepSpec(RECIPE, PARAMS, seeds=tuple(range(4))), store, slow)["best"])


def test_two_workers_share_one_sqlite_study(tmp_path):
    path = tmp_path / "sweep.db"
    open_store(f"sqlite:///{path}", "shared")  # create the schema once, as the first worker would
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(path, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs)
    bests = [results.get(timeout=5) for _ in procs]
    assert bests[0] == bests[1] == {"lr": 0.02, "batch_size": 128}
    study = store_at(tmp_path, "shared").study
    jobs = Counter(t.user_attrs["job"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    # lr: 3 points, batch_size: 2 new points (the incumbent is shared) -> 5 points x 4 seeds, each once
    assert len(jobs) == 20 and set(jobs.values()) == {1}
