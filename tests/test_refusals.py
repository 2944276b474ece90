"""Refusals: every bad input is one line and the right exit code, from the CLI and the Python API alike,
checked before anything runs (or warms up, or warns about a busy machine)."""

import dataclasses
import json
import os
import subprocess

import pytest

import fastmnist
from fastmnist.cli.main import main as cli_main
from fastmnist.errors import FastMnistError
from fastmnist.recipes.overrides import get_recipe
from fastmnist.recipes.recipe import derive
from tests.conftest import assert_one_line_error, in_process

FASTEST = get_recipe("fastest")


@pytest.mark.parametrize("change, fragment", [
    (dict(batch_size=0), "batch_size=0: out of range"), (dict(lr=-1.0), "lr=-1.0: out of range"),
    (dict(epochs=0), "epochs=0: out of range"), (dict(lr="fast"), "lr='fast': expected a number"),
    (dict(train_fraction=1.5), "train_fraction=1.5: out of range"), (dict(name=""), "needs a name"),
    (dict(optimizer="lion"), "choose from"), (dict(batch_size=64.5), "expected an integer")])
def test_the_api_refuses_what_the_cli_refuses_before_loading_anything(change, fragment, monkeypatch):
    monkeypatch.setattr("fastmnist.api.setup", lambda *a, **k: pytest.fail("data loaded for a bad recipe"))
    bad = dataclasses.replace(FASTEST, **change)
    for call in (lambda: fastmnist.bench([bad], runs=1), lambda: fastmnist.train(bad)):
        with pytest.raises(fastmnist.FastMnistError, match=fragment):
            call()
    assert fastmnist.FastMnistError is FastMnistError


def test_derive_checks_every_field():
    with pytest.raises(FastMnistError, match="batch_size=0: out of range"):
        derive(FASTEST, "mine", "x", batch_size=0)
    with pytest.raises(FastMnistError, match="whiten1 needs an even conv1"):
        derive(FASTEST, "mine", "x", conv1=23)


def test_a_busy_machine_never_comes_between_a_bad_recipe_and_its_one_line(data_env, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 40.0, 40.0))
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef make():\n    return torch.nn.Linear(3, 3)\n")
    result = in_process(["bench", "stage14[train_fraction=0.02]", f"{bad}:make", "--runs", "1", "--quiet"], data_env,
                        monkeypatch, capsys)
    assert_one_line_error(result, "bad.py")
    assert "warning" not in result.stderr  # checked before the first warm-up, which is where the warning comes


def test_a_file_that_exits_while_loading_is_one_line_not_its_exit_code(tmp_path, data_env, monkeypatch, capsys):
    quits = tmp_path / "quits.py"
    quits.write_text("raise SystemExit(3)\n")
    result = in_process(["bench", f"{quits}:r", "--runs", "1"], data_env, monkeypatch, capsys)
    assert_one_line_error(result, "SystemExit")


@pytest.mark.parametrize("args, fragment", [
    (["bench", "stage14", "--seeds", "-5-3"], "-5 is negative"),
    (["bench", "stage14", "--runs", "3", "--seeds", "100-101"], "not both"),
    (["bench", "stage14", "--seeds", "0-999999,1000000-1999999"], "more than 1,000,000 runs in all"),
    (["sweep", "--param", "lr=0.01,0.02", "--seeds", "5-1"], "reversed"),
    (["sweep", "--param", "lr=fast"], "expected a number")])
def test_seed_options_are_checked_as_a_whole(args, fragment, data_env, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(in_process(args, data_env, monkeypatch, capsys), fragment)
    assert not (tmp_path / "sweep").exists()  # a refused command leaves nothing behind


def test_a_file_name_that_starts_with_a_dash_gets_a_hint(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["predict", "model.safetensors", "-x.png"])
    assert exit_.value.code == 2 and "write ./-x.png, or put -- before the file names" in capsys.readouterr().err


def test_report_on_deeply_nested_json_is_one_line(tmp_path, monkeypatch, capsys):
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    result = in_process(["report", str(nested)], {}, monkeypatch, capsys)
    assert_one_line_error(result, "nested too deep")


def test_fastmnist_data_naming_a_file_is_one_line_even_with_a_cache(real_mnist, tmp_path, monkeypatch, capsys):
    cache = {"FASTMNIST_CACHE": str(tmp_path / "cache"), "FASTMNIST_DATA": real_mnist.source}
    assert in_process(["data"], cache, monkeypatch, capsys).returncode == 0  # the cache now exists
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    result = in_process(["data"], {**cache, "FASTMNIST_DATA": str(a_file)}, monkeypatch, capsys)
    assert_one_line_error(result, "is a file, not a folder")


def test_a_folder_this_user_cannot_read_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder))
    monkeypatch.setattr("fastmnist.data.locate", refuse)  # root reads any folder: the refusal is simulated
    result = in_process(["data", "--offline"], {"FASTMNIST_DATA": str(folder), "FASTMNIST_CACHE": str(tmp_path / "c")},
                        monkeypatch, capsys)
    assert_one_line_error(result, f"{folder}: permission denied")


def test_recipes_show_names_fields_as_set_takes_them(capsys):
    assert cli_main(["recipes", "--show", "fastest"]) == 0
    shown = capsys.readouterr().out
    assert "\nconv2 " in shown and "net.conv2" not in shown
    assert get_recipe("fastest[conv2=20]").net.conv2 == 20


def test_no_progress_bar_or_carriage_return_in_a_log(env, tmp_path):
    proc = subprocess.run([*[os.sys.executable, "-m", "fastmnist.cli"], "bench", "stage14[train_fraction=0.02]",
                           "--runs", "2", "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "\r" not in proc.stderr  # stderr is a pipe here, not a terminal


def test_plots_keep_matplotlibs_cache_in_ours(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.setenv("FASTMNIST_CACHE", str(tmp_path / "cache"))
    from fastmnist.results.output import pyplot

    pyplot()
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "cache" / "matplotlib")
    monkeypatch.delenv("MPLCONFIGDIR")


def test_search_space_errors_create_nothing(data_env, monkeypatch, capsys, tmp_path):
    out = tmp_path / "s"
    for space, fragment in [("lr=0.01:0.03:0.05", "larger than the range"), ("lr=0.01:0.02:0", "STEP must be > 0")]:
        result = in_process(["search", "--space", space, "--out", str(out)], data_env, monkeypatch, capsys)
        assert_one_line_error(result, fragment)
        assert not out.exists()
    space_file = tmp_path / "space.toml"
    space_file.write_text("[space]\nlr = \"0.01:0.02:log\"\nbatchnorm = [true, false]\nfc = 5\n")
    result = in_process(["search", "--space-file", str(space_file), "--out", str(out)], data_env, monkeypatch, capsys)
    assert_one_line_error(result, "fc = 5: expected a text")
    assert json.loads(json.dumps(fastmnist.api.__all__)).count("FastMnistError") == 1


def test_a_network_file_edited_since_the_model_was_saved_is_named(real_mnist, data_env, tmp_path):
    import torch

    from fastmnist.training.train import train
    from fastmnist.recipes.userfile import load_object
    from tests.conftest import run_cli

    net_file = tmp_path / "mynet.py"
    net_file.write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), "
                        "torch.nn.Linear(784, 10))\n")
    recipe = derive(get_recipe("stage14"), "mine", "a linear model", net=load_object(f"{net_file}:make"),
                    train_fraction=0.02, threads=1)
    model = tmp_path / "mine.safetensors"
    result, _ = train(recipe, 0, lambda: (torch.device("cpu"), real_mnist), warmup=False, save=model)
    assert not result.diverged and model.is_file()
    net_file.write_text(net_file.read_text().replace("torch.nn.Linear(784, 10)", "torch.nn.Linear(784, 16), "
                                                     "torch.nn.ReLU(), torch.nn.Linear(16, 10)"))  # the user edits it
    refused = run_cli("evaluate", str(model), env=data_env, check=False)
    assert_one_line_error(refused, f"its network file {net_file} no longer builds the network")
