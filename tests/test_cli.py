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


def test_recipes_lists_and_diffs():
    out = fastmnist("recipes", "--diff").stdout
    assert "stage0" in out and "stage8" in out and "(= fastest)" in out
    assert "batch_size 64 -> 128" in out  # stage 4's one change, printed from the definitions


def test_train_json_small_budget(data_env, tmp_path):
    model = tmp_path / "m.safetensors"
    proc = fastmnist("train", "--recipe", "stage14", "--set", "train_fraction=0.1", "--json", "--threads", "2",
                     "--seed", "1", "--save", str(model), env=data_env)
    record = json.loads(proc.stdout)
    for key in ("recipe", "seed", "device", "accuracy", "seconds", "epochs", "excluded_seconds", "machine",
                "provenance"):
        assert key in record
    import torch

    assert record["seed"] == 1 and record["epochs"] == 1
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    assert 80.0 < record["accuracy"] <= 100.0 and record["engine"] == "eager"
    assert record["seconds"] > 0
    assert set(record["excluded_seconds"]) == {"data_load", "prepare", "warmup", "capture"}
    assert record["machine"]["vector_isa"] and record["machine"]["torch_threads"] == 2
    assert record["provenance"]["command"].startswith("fastmnist train --recipe stage14")
    assert model.is_file() and not list(tmp_path.glob("*.tmp"))


def test_train_text_output_names_the_machine(data_env, monkeypatch, capsys):
    import torch

    out = in_process(["train", "--set", "train_fraction=0.05", "--no-warmup"], data_env, monkeypatch, capsys).stdout
    assert "test accuracy" in out and "not timed: data load" in out
    assert torch.backends.cpu.get_cpu_capability() in out.splitlines()[0]  # the ISA tells machines apart


def test_train_prints_each_epoch_unless_quiet(data_env, monkeypatch, capsys):
    recipe = "stage14[epochs=2,train_fraction=0.02]"
    proc = in_process(["train", "--recipe", recipe, "--no-warmup"], data_env, monkeypatch, capsys)
    epochs = [line for line in proc.stderr.splitlines() if line.strip().startswith("epoch")]
    assert [line.split(":")[0].strip() for line in epochs] == ["epoch 1", "epoch 2"]
    assert "test accuracy" in epochs[0]
    quiet = in_process(["train", "--recipe", recipe, "--no-warmup", "--quiet"], data_env, monkeypatch, capsys)
    assert "epoch" not in quiet.stderr


def test_bench_two_runs_writes_json(data_env, tmp_path, monkeypatch, capsys):
    out_file = tmp_path / "bench.json"
    args = ["bench", "stage14", "stage13", "--runs", "2", "--set", "train_fraction=0.03", "--no-progress", "--out",
            str(out_file)]
    monkeypatch.setattr(sys, "argv", ["fastmnist", *args])  # what provenance records
    proc = in_process(args, data_env, monkeypatch, capsys)
    assert "ratio" in proc.stdout and "stage13" in proc.stdout
    report = json.loads(out_file.read_text())
    assert [row["runs"] for row in report["summary"]] == [2, 2]
    assert len(report["runs"]) == 4
    assert {"cpu_model", "cpu_count", "vector_isa", "torch_version", "torch_threads"} <= set(report["machine"])
    assert report["timing"]["excludes"]
    assert report["provenance"]["command"].startswith("fastmnist bench stage14 stage13")
    assert set(report["recipes"]) == {"stage14[train_fraction=0.03]", "stage13[train_fraction=0.03]"}


def test_missing_data_is_one_line(tmp_path):
    proc = fastmnist("train", "--data-dir", str(tmp_path), "--offline", check=False,
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
    (["train", "--set", "whiten1=true", "--set", "conv1=23"], "whiten1 needs an even conv1"),
    (["bench", "stage8[kernel1=7,stride1=2,kernel2=5]"], "too small for its 2x2 pool"),
    (["ladder", "--stages", "9-3", "--out", "unused"], "reversed"),
    (["ladder", "--stages", "0-99", "--out", "unused"], "stages are 0-"),
])
def test_bad_values_are_one_line(args, fragment, data_env, monkeypatch, capsys):
    assert_one_line_error(in_process(args, data_env, monkeypatch, capsys), fragment)


def in_process(args, env, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """The CLI's main() in this process (no interpreter and torch to start), as a finished process."""
    import torch

    from fastmnist.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    threads = torch.get_num_threads()  # --threads would otherwise stay set for the tests after this one
    try:
        code = main(list(args))
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_argparse_errors_exit_2():
    proc = fastmnist("bench", "stage8", "--runs", "0", check=False)
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr
    proc = fastmnist("train", "--seed", "-1", check=False)
    assert proc.returncode == 2 and "must be at least 0" in proc.stderr


def test_ladder_command_writes_table_json_and_picture(data_env, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ladder"
    proc = in_process(["ladder", "--stages", "17-18", "--runs", "1", "--out", str(out), "--quiet"], data_env,
                      monkeypatch, capsys)
    assert proc.returncode == 0, proc.stderr
    assert "| stage18 | batch_size 512 -> 448; lr 0.02 -> 0.0175 |" in proc.stdout
    stored = json.loads((out / "ladder.json").read_text())
    assert list(stored["stages"]) == ["stage17", "stage18"]
    assert (out / "ladder.png").stat().st_size > 10000 and (out / "ladder.md").is_file()


def test_data_command_reports_source_and_cache(data_env):
    out = fastmnist("data", env=data_env).stdout
    assert "MNIST OK: 60000 training and 10000 test images" in out
    assert "5923 6742 5958 6131 5842 5421 5918 6265 5851 5949" in out and ": written" in out
    again = fastmnist("data", env=data_env).stdout
    assert "from " + data_env["FASTMNIST_CACHE"] in again and ": read" in again
