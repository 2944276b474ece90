"""The command line end to end, as a user runs it: real processes, real exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_synthetic


def fastmnist(*args, env=None, check=True):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "fastmnist.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastmnist: error:"), proc.stderr
    assert fragment in lines[0]


@pytest.fixture()
def data_env(real_mnist, tmp_path):
    return {"FASTMNIST_DATA": real_mnist.source, "FASTMNIST_CACHE": str(tmp_path / "cache")}


def test_recipes_lists_and_diffs():
    out = fastmnist("recipes", "--diff").stdout
    assert "stage0" in out and "stage8" in out and "(= fastest)" in out
    assert "batch_size 64 -> 128" in out  # stage 4's one change, printed from the definitions


def test_train_json_small_budget(data_env, tmp_path):
    model = tmp_path / "m.safetensors"
    proc = fastmnist("train", "--recipe", "stage8", "--set", "train_fraction=0.1", "--json", "--threads", "2",
                     "--seed", "1", "--save", str(model), env=data_env)
    record = json.loads(proc.stdout)
    for key in ("recipe", "seed", "device", "accuracy", "seconds", "epochs", "torch_version", "cpu_model",
                "excluded_seconds"):
        assert key in record
    assert record["seed"] == 1 and record["device"] == "cpu" and record["epochs"] == 1
    assert 80.0 < record["accuracy"] <= 100.0
    assert record["seconds"] > 0 and set(record["excluded_seconds"]) == {"data_load", "prepare", "warmup"}
    assert model.is_file() and not list(tmp_path.glob("*.tmp"))


def test_train_text_output(data_env):
    out = fastmnist("train", "--set", "train_fraction=0.05", "--no-warmup", env=data_env).stdout
    assert "test accuracy" in out and "not timed: data load" in out


def test_bench_two_runs_writes_json(data_env, tmp_path):
    out_file = tmp_path / "bench.json"
    proc = fastmnist("bench", "stage8", "stage7", "--runs", "2", "--set", "train_fraction=0.05",
                     "--set", "epochs=1", "--no-progress", "--out", str(out_file), env=data_env)
    assert "ratio" in proc.stdout and "stage7" in proc.stdout
    report = json.loads(out_file.read_text())
    assert [row["runs"] for row in report["summary"]] == [2, 2]
    assert len(report["runs"]) == 4
    assert {"cpu_model", "cpu_count", "torch_version", "torch_threads"} <= set(report["machine"])
    assert report["timing"]["excludes"]


def test_missing_data_is_one_line(tmp_path):
    proc = fastmnist("train", "--data-dir", str(tmp_path), check=False,
                     env={"FASTMNIST_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(proc, "missing train-images-idx3-ubyte")
    assert str(tmp_path) in proc.stderr


def test_corrupt_data_is_one_line(tmp_path):
    write_synthetic(tmp_path)
    proc = fastmnist("data", "--data-dir", str(tmp_path), check=False,
                     env={"FASTMNIST_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(proc, "SHA-256")


@pytest.mark.parametrize("args, fragment", [
    (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["train", "--set", "lr=fast"], "expected a float"),
    (["train", "--set", "batch_size=0"], "out of range"),
    (["train", "--set", "optimizer=lion"], "choose from adadelta, adam, sgd"),
])
def test_bad_values_are_one_line(args, fragment, data_env):
    assert_one_line_error(fastmnist(*args, check=False, env=data_env), fragment)


def test_argparse_errors_exit_2():
    proc = fastmnist("bench", "stage8", "--runs", "0", check=False)
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr
