"""Faults a new user meets: outputs that cannot be written, bad values, odd images and model files,
signals, sweeps under concurrency and lost workers. Each ends in one line and a clear exit code, and no
finished work is lost."""

import json
import multiprocessing
import os
import subprocess

import numpy as np
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image
from safetensors.torch import save_file

from fastmnist import cli
from fastmnist.checkpoint import load_model, save_model
from fastmnist.errors import FastMnistError
from fastmnist.models import NETS, ConvNet
from fastmnist.output import atomic_write, write_text
from fastmnist.recipes import FASTEST
from fastmnist.report import ladder_plot, sweep_table
from fastmnist.store import JobStore, open_study
from fastmnist.use import predict_files
from tests.store_worker import worker_opens
from tests.test_cli import assert_one_line_error, in_process

UNWRITABLE = "/proc/fastmnist-test"  # nothing can be created under /proc, even as root


@pytest.mark.parametrize("args, fragment", [
    (["train", "--save", UNWRITABLE + "/m.safetensors"], "cannot write into /proc/fastmnist-test"),
    (["train", "--save", "/etc/passwd/m.safetensors"], "cannot write into /etc/passwd"),
    (["train", "--save", "/tmp"], "is a directory"),
    (["bench", "stage14", "--out", UNWRITABLE + "/b.json"], "cannot write into"),
    (["ladder", "--stages", "14", "--out", UNWRITABLE], "cannot write into"),
    (["sweep", "--param", "lr=0.01", "--out", UNWRITABLE], "cannot write into"),
    (["evaluate", "missing.safetensors", "--errors", "e.txt"], "expected a .png file name"),
    (["export", "missing.safetensors", "--onnx", UNWRITABLE + "/m.onnx"], "cannot write into"),
])
def test_unwritable_outputs_are_refused_before_any_run(args, fragment, tmp_path, capsys):
    code = cli.main([*args, "--offline", "--data-dir", str(tmp_path / "nowhere")])
    # refused before the data is even looked for (there is none at --data-dir)
    assert_one_line_error(subprocess.CompletedProcess(args, code, "", capsys.readouterr().err), fragment)


def test_a_write_failing_after_the_work_keeps_the_result(data_env, monkeypatch, capsys, tmp_path):
    """The run finishes, the save fails (disk full, permission changed): result printed, weights kept in a
    fallback file named in the message, exit 1."""
    for key, value in data_env.items():
        monkeypatch.setenv(key, value)
    target = tmp_path / "m.safetensors"
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst) == str(target):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
    code = cli.main(["train", "--set", "train_fraction=0.03", "--no-warmup", "--save", str(target), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1 and "test accuracy" in out
    line = err.strip().splitlines()[-1]
    assert line.startswith("fastmnist: error: could not write the model to") and "saved it to" in line
    spare = line.rsplit("saved it to ", 1)[1].split(" instead")[0]
    model, info = load_model(spare)
    assert info["recipe"] == f"{FASTEST}[train_fraction=0.03]"
    os.unlink(spare)


def test_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "r.json", "{}")
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "half.json", lambda f: (f.write(b"half"), (_ for _ in ()).throw(KeyboardInterrupt)))
    assert not (tmp_path / "half.json").exists() and not list(tmp_path.glob("*.tmp"))


def test_predict_large_and_transparent_images(monkeypatch, small_mnist, tmp_path):
    model = ConvNet(NETS["D"]).eval()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above this and refuses above twice it
    Image.new("L", (100, 100)).save(tmp_path / "huge.png")  # 10x the limit: PIL's DecompressionBombError
    Image.new("L", (40, 40)).save(tmp_path / "big.png")  # 1.6x: PIL's DecompressionBombWarning
    Image.fromarray(small_mnist.test_images[0]).save(tmp_path / "ok.png")
    records = predict_files(model, [str(tmp_path / n) for n in ("huge.png", "big.png", "ok.png")])
    assert "image too large" in records[0]["error"] and "image too large" in records[1]["error"]
    assert "digit" in records[2]  # the other files are still predicted
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    rgba = np.zeros((28, 28, 4), np.uint8)  # black ink, transparent everywhere else
    rgba[..., 3] = small_mnist.test_images[0]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    grey = Image.fromarray(255 - small_mnist.test_images[0])  # the same digit, dark on white
    grey.save(tmp_path / "paper.png")
    a, b = predict_files(model, [str(tmp_path / "transparent.png"), str(tmp_path / "paper.png")])
    assert "error" not in a and a["digit"] == b["digit"]


def test_bad_model_metadata_and_shapes_say_what(tmp_path):
    model = ConvNet(NETS["D"])
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, tmp_path / "info.safetensors",
              metadata={"format": "fastmnist", "net": NETS["D"].to_json(), "info": "{not json"})
    with pytest.raises(FastMnistError, match="metadata is not valid fastmnist JSON"):
        load_model(tmp_path / "info.safetensors")
    tensors["fc1.weight"] = torch.zeros(128, 800)
    save_file(tensors, tmp_path / "shape.safetensors",
              metadata={"format": "fastmnist", "net": NETS["D"].to_json(), "info": "{}"})
    with pytest.raises(FastMnistError, match=r"fc1.weight is \(128, 800\), expected \(256, 800\)"):
        load_model(tmp_path / "shape.safetensors")


def test_non_finite_weights_are_never_saved_or_used(tmp_path):
    model = ConvNet(NETS["D"])
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(FastMnistError, match="NaN/inf .*fc2.weight"):
        save_model(tmp_path / "nan.safetensors", model, {})
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, tmp_path / "nan.safetensors",
              metadata={"format": "fastmnist", "net": NETS["D"].to_json(), "info": "{}"})
    with pytest.raises(FastMnistError, match="NaN/inf"):
        load_model(tmp_path / "nan.safetensors")


def test_diverged_train_exits_3_and_saves_nothing(data_env, tmp_path, monkeypatch, capsys):
    target = tmp_path / "m.safetensors"
    proc = in_process(["train", "--recipe", "stage8[train_fraction=0.05]", "--set", "optimizer=sgd", "--set", "lr=100",
                       "--no-warmup", "--save", str(target)], data_env, monkeypatch, capsys)
    assert proc.returncode == 3 and "DIVERGED" in proc.stdout and "Traceback" not in proc.stderr
    assert not target.exists()


def test_evaluate_json_rounds_accuracy(data_env, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m.safetensors"
    in_process(["train", "--set", "train_fraction=0.03", "--no-warmup", "--save", str(model)], data_env, monkeypatch,
               capsys)
    record = json.loads(in_process(["evaluate", str(model), "--json"], data_env, monkeypatch, capsys).stdout)
    assert record["accuracy"] == round(record["accuracy"], 4)
    assert len(repr(record["accuracy"])) <= 8


def test_single_run_sweep_shows_na_not_zero():
    point = {"value": 0.01, "runs": 1, "accuracy_mean": 99.1, "accuracy_std": None, "accuracy_se": None,
             "share_reaching_target": 1.0, "seconds_mean": 1.0, "p_vs_incumbent": None}
    table = sweep_table({"target": 99.0, "best": {"lr": 0.01},
                         "phases": [{"round": 1, "param": "lr", "chosen": 0.01, "points": [point]}]})
    assert "99.100 +- n/a" in table and " n/a " in table and "0.000" not in table


def test_ladder_picture_draws_points_on_a_log_axis(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr("fastmnist.report.save_figure", lambda fig, path: figures.append(fig))
    row = {"seconds_mean": 41.5, "seconds_std": 1.0, "accuracy_mean": 99.1, "accuracy_std": 0.1, "target": 99.0}
    ladder_plot({"stages": {"stage13": {"summary": row}, "stage14": {"summary": {**row, "seconds_mean": 27.5}}}},
                tmp_path / "x.png")
    top = figures[0].axes[0]
    assert top.get_yscale() == "log"
    assert not top.patches  # no bars: a bar on a log axis has no true zero and exaggerates ratios


def test_workers_creating_one_new_store_together(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(2):
        path, results = tmp_path / f"new{attempt}.db", ctx.Queue()
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=worker_opens, args=(path, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] * 3


def test_a_lost_race_is_a_quiet_skip(tmp_path):
    store = JobStore(open_study(f"sqlite:///{tmp_path / 's.db'}", "s"))
    trial = store.claim("job")
    store.study.tell(trial.number, state=TrialState.FAIL)  # another worker took it as stale
    assert store.finish(trial, {"lr": 1}, 0, {"accuracy": 99.0, "seconds": 1.0, "diverged": False,
                                              "epochs": 1}) is False
