"""The command line end to end, as a user runs it: real processes, real exit codes, one-line errors."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import assert_one_line_error, in_process, run_cli, sigint_default, write_synthetic

SLICE = "train_fraction=0.02"


def test_recipes_lists_and_diffs():
    out = run_cli("recipes", "--diff").stdout
    assert "stage0" in out and "stage8" in out and "(= fastest)" in out
    assert "batch_size 64 -> 128" in out  # stage 4's one change, printed from the definitions


def test_train_json_small_budget(data_env, tmp_path):
    model = tmp_path / "m.safetensors"
    proc = run_cli("train", "--recipe", "stage14", "--set", "train_fraction=0.1", "--json", "--threads", "2",
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
    proc = run_cli("train", "--data-dir", str(tmp_path), "--offline", check=False,
                     env={"FASTMNIST_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(proc, "missing train-images-idx3-ubyte")
    assert str(tmp_path) in proc.stderr


def test_corrupt_data_is_one_line(tmp_path):
    write_synthetic(tmp_path)
    proc = run_cli("data", "--data-dir", str(tmp_path), check=False,
                     env={"FASTMNIST_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(proc, "SHA-256")


@pytest.mark.parametrize("args, fragment", [
    (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["train", "--set", "lr=fast"], "expected a number"),
    (["train", "--set", "batch_size=0"], "out of range"),
    (["train", "--set", "optimizer=lion"], "choose from adadelta, adam, sgd"),
    (["train", "--set", "whiten1=true", "--set", "conv1=23"], "whiten1 needs an even conv1"),
    (["bench", "stage8[kernel1=7,stride1=2,kernel2=5]"], "too small for its 2x2 pool"),
    (["ladder", "--stages", "9-3", "--out", "unused"], "reversed"),
    (["ladder", "--stages", "0-99", "--out", "unused"], "stages are 0-"),
])
def test_bad_values_are_one_line(args, fragment, data_env, monkeypatch, capsys):
    assert_one_line_error(in_process(args, data_env, monkeypatch, capsys), fragment)


def test_argparse_errors_exit_2():
    proc = run_cli("bench", "stage8", "--runs", "0", check=False)
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr
    proc = run_cli("train", "--seed", "-1", check=False)
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
    out = run_cli("data", env=data_env).stdout
    assert "MNIST OK: 60000 training and 10000 test images" in out
    assert "5923 6742 5958 6131 5842 5421 5918 6265 5851 5949" in out and ": written" in out
    again = run_cli("data", env=data_env).stdout
    assert "from " + data_env["FASTMNIST_CACHE"] in again and ": read" in again


def test_diverged_train_exits_3_and_saves_nothing(data_env, tmp_path, monkeypatch, capsys):
    target = tmp_path / "m.safetensors"
    proc = in_process(["train", "--recipe", "stage8[train_fraction=0.05]", "--set", "optimizer=sgd", "--set", "lr=100",
                       "--no-warmup", "--save", str(target)], data_env, monkeypatch, capsys)
    assert proc.returncode == 3 and "DIVERGED" in proc.stdout and "Traceback" not in proc.stderr
    assert not target.exists()


def test_too_many_threads_and_too_large_seeds_are_refused(data_env):
    threads = subprocess.run([sys.executable, "-m", "fastmnist.cli", "train", "--threads", "999"],
                             capture_output=True, text=True, env={**os.environ, **data_env})
    assert threads.returncode == 2 and "more threads than this machine's" in threads.stderr
    assert "--threads 1" in threads.stderr and "Traceback" not in threads.stderr
    seed = subprocess.run([sys.executable, "-m", "fastmnist.cli", "train", "--seed", "99999999999999999999"],
                          capture_output=True, text=True, env={**os.environ, **data_env})
    assert seed.returncode == 2 and "too large (at most 9223372036854775807)" in seed.stderr
    assert "Traceback" not in seed.stderr


def test_json_stdout_carries_only_json_whatever_user_code_prints(data_env, tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine.py"
    mine.write_text("import fastmnist\nprint('hello from my recipe file')\n"
                    "r = fastmnist.derive(fastmnist.recipe('stage18'), 'r', 'mine', train_fraction=0.02)\n")
    result = in_process(["train", "--recipe", f"{mine}:r", "--json", "--no-warmup"], data_env, monkeypatch, capsys)
    assert result.returncode == 0 and "hello from my recipe file" in result.stderr
    record = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert record["recipe"] == "r" and set(record["load_average"]) == {"start", "end"}


def test_a_busy_machine_is_named_in_one_warning(data_env, monkeypatch, capsys):
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 5.0, 3.0))
    result = in_process(["train", "--set", SLICE, "--no-warmup", "--json"], data_env, monkeypatch, capsys)
    [warning] = [line for line in result.stderr.splitlines() if "warning" in line]
    assert f"load 7.5 on {os.cpu_count()} cores" in warning and "--threads" in warning
    assert json.loads(result.stdout)["load_average"]["start"] == [7.5, 5.0, 3.0]
    bad = in_process(["train", "--set", "conv1=23"], data_env, monkeypatch, capsys)  # refused before any run:
    assert_one_line_error(bad, "whiten1 needs an even conv1")  # still one line, however busy the machine


def test_the_bench_table_names_fastest_as_asked(data_env, monkeypatch, capsys):
    result = in_process(["bench", f"fastest[{SLICE}]", "--runs", "1", "--quiet"], data_env, monkeypatch, capsys)
    from fastmnist.recipes.stages import fastest_name

    assert f"fastest[{SLICE}] ({fastest_name()}[{SLICE}])" in result.stdout


def test_a_ladder_says_how_long_it_will_take_and_ctrl_c_leaves_no_empty_folder(data_env, tmp_path):
    out = tmp_path / "new-ladder"
    proc = subprocess.Popen([sys.executable, "-m", "fastmnist.cli", "ladder", "--stages", "0", "--runs", "1",
                             "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **data_env}, preexec_fn=sigint_default)
    try:
        estimate = proc.stderr.readline()
        proc.send_signal(signal.SIGINT)  # during stage 0's warm-up: no stage has finished
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # a failed check must not leave stage 0 training for minutes
    assert estimate.startswith("ladder: 1 stage(s) x 1 run(s): about ") and "as recorded on" in estimate
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "fastmnist: interrupted"
    assert not out.exists()


SIGNAL_IN_A_DESTRUCTOR = """
import os, signal, sys, time
from importlib import import_module
cli = import_module("fastmnist.cli.main")  # the module; the package exports its main() under the same name

class SendsTheSignalInItsDestructor:
    def __del__(self):
        os.kill(os.getpid(), signal.SIG{name})
        for _ in range(10_000):  # the handler runs here, inside the destructor, where Python swallows its raise
            pass

def a_long_command(args):
    SendsTheSignalInItsDestructor()
    time.sleep(3)
    print("ran to the end")
    return 0

cli.COMMANDS["recipes"] = a_long_command
sys.exit(cli.main(["recipes"]))
"""


@pytest.mark.parametrize("name, code, line", [("INT", 130, "fastmnist: interrupted"),
                                              ("TERM", 143, "fastmnist: terminated (SIGTERM)")])
def test_a_signal_raised_inside_a_destructor_still_stops_the_command(name, code, line):
    """Python swallows an exception raised in a destructor or weakref callback (SQLAlchemy's, as the store's
    objects are collected); the signal must not be lost with it."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_IN_A_DESTRUCTOR.format(name=name)], capture_output=True,
                          text=True, timeout=120, preexec_fn=sigint_default)
    assert proc.returncode == code and proc.stderr.strip().splitlines()[-1] == line, proc.stderr
    assert "ran to the end" not in proc.stdout and "Exception ignored" not in proc.stderr


def test_train_takes_its_recipe_as_bench_does(data_env, monkeypatch, capsys):
    recipe = f"stage14[{SLICE}]"
    result = in_process(["train", recipe, "--no-warmup", "--json"], data_env, monkeypatch, capsys)
    assert result.returncode == 0 and json.loads(result.stdout)["recipe"] == recipe
    both = in_process(["train", "stage14", "--recipe", "stage13"], data_env, monkeypatch, capsys)
    assert_one_line_error(both, "two recipes given (stage14 and --recipe stage13)")


@pytest.mark.parametrize("command, described", [("predict", ("MODEL ", "IMAGE ")), ("export", ("MODEL ",))])
def test_every_argument_says_what_it_is(command, described):
    out = run_cli(command, "--help").stdout
    positional = out.split("positional arguments:")[1].split("options:")[0]
    for name in described:
        line = next(line for line in positional.splitlines() if line.strip().startswith(name.strip()))
        assert len(line.split()) > 1, line  # a description follows the name
