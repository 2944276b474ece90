"""`fastmnist search`: Optuna's samplers over recipe fields, the time ratio against a reference on the same
seeds, the accuracy constraint, pruning, resuming, shared workers, the front and the recipe it writes, and
the study as optuna-dashboard shows it."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState

from fastmnist.errors import FastMnistError
from fastmnist.frontier import Dimension, cannot_reach, pareto, parse_space
from fastmnist.recipes import get_recipe
from fastmnist.store import open_study
from tests.conftest import assert_one_line_error, in_process

SLICE = "stage14[train_fraction=0.05]"


def search_args(out, *extra) -> list[str]:
    return ["search", "--recipe", SLICE, "--reference", SLICE, "--space", "lr=0.01:0.04:log",
            "--space", "batch_size=256,512", "--trials", "4", "--runs", "2", "--extra-runs", "1",
            "--target", "80", "--alpha", "0.05", "--threads", "1", "--out", str(out), *extra]


def test_a_space_is_ranges_and_lists_checked_before_anything_runs():
    recipe = get_recipe("stage14")
    assert parse_space(recipe, ["lr=0.005:0.05:log", "batch_size=256:1024:64", "train_fraction=0.8,0.9",
                                "conv2=16:32"]) == (
        Dimension("lr", 0.005, 0.05, None, True), Dimension("batch_size", 256, 1024, 64),
        Dimension("train_fraction", choices=(0.8, 0.9)), Dimension("conv2", 16, 32))
    for bad, fragment in [(["lr=0.05:0.005"], "LOW must be below HIGH"), (["nope=1:2"], "unknown parameter"),
                          (["weight_decay=0:0.1:log"], "needs LOW above 0"), (["optimizer=adam:sgd"], "list of values"),
                          (["batch_size=0:512"], "out of range"), ([], "at least one --space"),
                          (["lr=1:2", "lr=3:4"], "given twice")]:
        with pytest.raises(FastMnistError, match=fragment):
            parse_space(recipe, bad)


def test_pruning_and_the_front_are_what_they_say():
    assert cannot_reach([90.0, 91.0, 90.5], 99.0) and not cannot_reach([99.1, 98.9, 99.2], 99.0)
    assert not cannot_reach([90.0, 91.0], 99.0)  # two runs decide nothing
    rows = [{"trial": 0, "time_ratio": 0.9, "accuracy_mean": 99.1}, {"trial": 1, "time_ratio": 0.8,
            "accuracy_mean": 99.0}, {"trial": 2, "time_ratio": 1.0, "accuracy_mean": 99.0}]
    assert pareto(rows) == {0, 1}  # trial 2 is slower than 1 at the same accuracy


def test_a_small_search_writes_its_front_and_a_recipe_bench_runs_and_resumes(data_env, tmp_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "search"
    first = in_process(search_args(out), data_env, monkeypatch, capsys)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("search: trial") == 4
    record = json.loads((out / "search.json").read_text())
    assert len(record["trials"]) == 4 and record["seed_use"] == "tuning" and record["seeds"] == "1000000-1000001"
    trial = record["trials"][0]
    assert set(trial["point"]) == {"lr", "batch_size"} and 0.01 <= trial["point"]["lr"] <= 0.04
    assert trial["time_ratio"] > 0 and trial["p_value"] is not None and len(trial["seeds"]) in (2, 3)
    assert (out / "front.png").stat().st_size > 10000 and "ratio" in (out / "search.md").read_text()
    best = record["best"]
    assert best is not None and best["feasible"] and best["time_ratio"] == min(
        t["time_ratio"] for t in record["trials"] if t["feasible"] and t["state"] == "complete")
    assert "search_best" in (out / "best.py").read_text() and record["study"] in (out / "best.py").read_text()
    bench = in_process(["bench", f"{out / 'best.py'}:best", "--runs", "1", "--quiet"], data_env, monkeypatch, capsys)
    assert bench.returncode == 0 and "search_best" in bench.stdout
    again = in_process(search_args(out), data_env, monkeypatch, capsys)  # the same command: nothing reruns
    assert again.returncode == 0 and "search: trial" not in again.stderr
    assert json.loads((out / "search.json").read_text())["trials"] == record["trials"]


def test_bad_search_values_are_one_line(data_env, tmp_path, monkeypatch, capsys):
    for args, fragment in [(["--space", "lr=abc:1"], "expected a number"),
                           (["--space", "lr=0.01:0.02", "--alpha", "1.5"], "alpha=1.5: expected a level between 0 and 1"),
                           (["--space", "lr=0.01:0.02", "--reference", "nope"], "unknown recipe 'nope'")]:
        result = in_process(["search", "--out", str(tmp_path / "s"), *args], data_env, monkeypatch, capsys)
        assert_one_line_error(result, fragment)


def test_two_workers_share_one_study_without_running_a_trial_twice(store_url, env, tmp_path):
    study = f"search-{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen([sys.executable, "-m", "fastmnist.cli", *search_args(
        tmp_path / f"w{i}", "--storage", store_url, "--study", study, "--quiet")], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    optuna_study, _ = open_study(store_url, study, directions=("minimize",))
    trials = optuna_study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    numbers = [t.number for t in trials]
    assert 4 <= len(trials) <= 5 and len(set(numbers)) == len(numbers)  # each worker stops at 4 it has seen
    assert not optuna_study.get_trials(states=(TrialState.RUNNING,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_shows_the_trials_with_their_names_values_and_seeds(data_env, tmp_path, monkeypatch,
                                                                           capsys):
    out = tmp_path / "search"
    assert in_process(search_args(out, "--quiet"), data_env, monkeypatch, capsys).returncode == 0
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    port = free_port()
    server = subprocess.Popen([str(dashboard), f"sqlite:///{out / 'search.db'}", "--host", "127.0.0.1", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = None
        for _ in range(100):  # at most 10 s for it to start
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as reply:
                    studies = json.loads(reply.read())["study_summaries"]
                break
            except OSError:
                time.sleep(0.1)
        assert studies and studies[0]["study_name"].startswith("search|")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}",
                                    timeout=10) as reply:
            detail = json.loads(reply.read())
    finally:
        server.terminate()
        server.wait(timeout=10)
    trials = detail["trials"]
    assert len(trials) == 4
    assert {p["name"] for p in trials[0]["params"]} == {"lr", "batch_size"}
    attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
    assert {"seeds", "accuracy_mean", "p_value", "time_ratio"} <= set(attrs)
    assert any(t["values"] for t in trials if t["state"] == "Complete")
    assert detail.get("objective_names") == [f"time ratio vs {SLICE}"]  # the dashboard's name for them
