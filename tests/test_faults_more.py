"""Nothing lost, round two: full disks at the end of a ladder or a sweep, every image mode predict may be
handed, busy machines, stdout that carries only JSON, and the smaller frictions a newcomer meets."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastmnist.layout import prepare
from fastmnist.recipes import get_recipe
from fastmnist.trainer import train_run
from fastmnist.use import predict_files
from tests.test_cli import assert_one_line_error, in_process

SLICE = "train_fraction=0.02"


def disk_full_for(monkeypatch, *names):
    """os.replace fails, as on a full disk, for the files named (the last step of every atomic write)."""
    real_replace = os.replace

    def failing(src, dst):
        if os.path.basename(str(dst)) in names:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing)


def fallback_of(err: str, what: str) -> str:
    part = err.split(f"could not write {what} to ", 1)[1]
    return part.split("saved it to ", 1)[1].split(" instead")[0]


@pytest.mark.parametrize("full", [("ladder.json",), ("ladder.md", "ladder.png")])
def test_a_full_disk_at_the_end_of_a_ladder_keeps_its_result(full, data_env, tmp_path, monkeypatch, capsys):
    disk_full_for(monkeypatch, *full)
    result = in_process(["ladder", "--stages", "18", "--runs", "1", "--quiet", "--out", str(tmp_path / "out")],
                        data_env, monkeypatch, capsys)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    if full == ("ladder.json",):
        spare = fallback_of(result.stderr, "the ladder's runs")
        assert json.loads(open(spare).read())["stages"]["stage18"]["runs"]  # hours of runs, kept
        os.unlink(spare)
        return
    assert "| stage18 |" in result.stdout  # the table printed before any file
    for what in ("the ladder table", "the ladder picture"):  # each file tried and kept, one line naming both
        spare = fallback_of(result.stderr, what)
        assert os.path.getsize(spare) > 0
        os.unlink(spare)
    assert (tmp_path / "out" / "ladder.json").is_file()


def test_a_full_disk_at_the_end_of_a_sweep_keeps_its_result(data_env, tmp_path, monkeypatch, capsys):
    disk_full_for(monkeypatch, "sweep.json", "sweep-lr.png")
    result = in_process(["sweep", "--recipe", f"stage14[{SLICE}]", "--param", "lr=0.02", "--runs", "1", "--quiet",
                         "--out", str(tmp_path / "s")], data_env, monkeypatch, capsys)
    assert result.returncode == 1 and "p vs kept" in result.stdout
    record = json.loads(open(fallback_of(result.stderr, "the sweep's record")).read())
    assert record["kind"] == "sweep" and record["runs_total"] == 1
    assert os.path.getsize(fallback_of(result.stderr, "the lr picture")) > 0
    assert (tmp_path / "s" / "sweep.md").is_file()  # what could be written was


def digit_seven(small_mnist) -> np.ndarray:
    return small_mnist.test_images[0]  # the first test digit is a 7


@pytest.fixture(scope="module")
def trained(small_mnist):
    recipe = get_recipe("stage18")
    return train_run(recipe, prepare(small_mnist, recipe, torch.device("cpu")), seed=0).model.cpu().eval()


def images_in_every_mode(seven: np.ndarray, folder) -> dict[str, str]:
    ink = seven.astype(np.float64) / 255
    paper = 1 - ink  # dark digit on white, as people draw them
    made = {
        "I;16": Image.fromarray((paper * 65535).astype(np.uint16)),  # 16-bit greyscale PNG
        "I": Image.fromarray((paper * 65535).astype(np.int32), mode="I"),
        "F": Image.fromarray(paper.astype(np.float32), mode="F"),
        "LA": Image.fromarray(np.stack([np.zeros_like(seven), seven], -1), mode="LA"),  # black ink, alpha
        "P": Image.fromarray((paper * 255).astype(np.uint8)).convert("P"),
        "1": Image.fromarray(paper > 0.5),
        "CMYK": Image.fromarray((paper * 255).astype(np.uint8)).convert("CMYK"),
        "RGB": Image.fromarray((paper * 255).astype(np.uint8)).convert("RGB"),
    }
    paths = {}
    for mode, image in made.items():
        path = folder / f"seven-{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'tiff' if mode in ('F', 'I') else 'png'}"
        image.resize((84, 84), Image.NEAREST).save(path)
        paths[mode] = str(path)
    transparent = Image.fromarray((paper * 255).astype(np.uint8)).convert("P")
    transparent.info["transparency"] = 255
    transparent.resize((84, 84)).save(folder / "seven-Ptransparent.png", transparency=255)
    paths["P+transparency"] = str(folder / "seven-Ptransparent.png")
    return paths


def test_predict_reads_a_digit_in_every_pillow_mode(trained, small_mnist, tmp_path):
    paths = images_in_every_mode(digit_seven(small_mnist), tmp_path)
    assert Image.open(paths["I;16"]).mode.startswith("I")  # Pillow reads the 16-bit PNG as I;16 (or I)
    records = predict_files(trained, list(paths.values()))
    assert {mode: r.get("digit", r.get("error")) for mode, r in zip(paths, records)} == {m: 7 for m in paths}


def test_a_multi_page_tiff_says_which_page_was_used(trained, small_mnist, tmp_path):
    pages = [Image.fromarray(255 - digit_seven(small_mnist)), Image.fromarray(255 - small_mnist.test_images[1])]
    pages[0].save(tmp_path / "two.tiff", save_all=True, append_images=pages[1:])
    [record] = predict_files(trained, [str(tmp_path / "two.tiff")])
    assert record["digit"] == 7 and record["note"] == "2 pages: used the first"


def test_too_many_threads_and_too_large_seeds_are_refused(data_env):
    threads = subprocess.run([sys.executable, "-m", "fastmnist.cli", "train", "--threads", "999"],
                             capture_output=True, text=True, env={**os.environ, **data_env})
    assert threads.returncode == 2 and "more threads than this machine's" in threads.stderr
    assert "--threads 1" in threads.stderr and "Traceback" not in threads.stderr
    seed = subprocess.run([sys.executable, "-m", "fastmnist.cli", "train", "--seed", "99999999999999999999"],
                          capture_output=True, text=True, env={**os.environ, **data_env})
    assert seed.returncode == 2 and "is too large (at most 9223372036854775807)" in seed.stderr
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
    from fastmnist.recipes import FASTEST

    assert f"fastest[{SLICE}] ({FASTEST}[{SLICE}])" in result.stdout


def test_export_without_onnx_says_how_to_install_it_from_a_checkout(monkeypatch, small_mnist, trained):
    import builtins

    from fastmnist.errors import FastMnistError
    from fastmnist.use import export_onnx

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnxruntime" else real_import(name, *a, **k))
    with pytest.raises(FastMnistError, match=r"pip install -e '\.\[onnx\]' in a checkout"):
        export_onnx(trained, small_mnist)


def test_a_ladder_says_how_long_it_will_take_and_ctrl_c_leaves_no_empty_folder(data_env, tmp_path):
    out = tmp_path / "new-ladder"
    proc = subprocess.Popen([sys.executable, "-m", "fastmnist.cli", "ladder", "--stages", "0", "--runs", "1",
                             "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **data_env})
    estimate = proc.stderr.readline()
    assert estimate.startswith("ladder: 1 stage(s) x 1 run(s): about ") and "as recorded on" in estimate
    proc.send_signal(signal.SIGINT)  # during stage 0's warm-up: no stage has finished
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "fastmnist: interrupted"
    assert not out.exists()


def test_a_job_is_taken_back_at_once_from_a_dead_local_worker_and_never_from_a_live_one(tmp_path):
    import time

    from optuna.trial import TrialState

    from fastmnist.store import open_store, this_worker

    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}", "load", stale_after=1)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()  # a process of this host that has exited
    host = this_worker().rsplit(":", 1)[0]
    holders = {"dead": f"{host}:{dead_pid}", "alive": this_worker(), "remote": "elsewhere:1"}
    trials = {}
    for name, worker in holders.items():
        trials[name] = store.claim(name)
        trials[name].set_user_attr("worker", worker)
    store.fail_stale()  # at once: no heartbeat is stale yet
    state = {t.user_attrs["job"]: t.state for t in store.trials((TrialState.RUNNING, TrialState.FAIL))}
    assert state == {"dead": TrialState.FAIL, "alive": TrialState.RUNNING, "remote": TrialState.RUNNING}
    time.sleep(2.5)  # every heartbeat is now past the 1 s grace, as a starved worker's would be
    store.fail_stale()
    state = {t.user_attrs["job"]: t.state for t in store.trials((TrialState.RUNNING, TrialState.FAIL))}
    assert state == {"dead": TrialState.FAIL, "alive": TrialState.RUNNING, "remote": TrialState.FAIL}


def test_a_claim_waits_for_an_earlier_trial_to_say_its_job(tmp_path):
    """The race behind a job run twice: worker A creates its trial, worker B creates a later one and tags
    it with job K before A has tagged its own. B must not take K until A's trial says what it is for."""
    import threading
    import time

    from fastmnist.store import open_store

    url = f"sqlite:///{tmp_path / 'race.db'}"
    worker_a, worker_b = open_store(url, "race"), open_store(url, "race")
    earlier = worker_a.study.ask()  # A's trial, created, not yet tagged
    claimed = {}
    b = threading.Thread(target=lambda: claimed.update(b=worker_b.claim("K")))
    b.start()
    time.sleep(0.5)
    assert b.is_alive()  # B waits for A's trial to say its job
    earlier.set_user_attr("job", "K")
    b.join(timeout=10)
    assert claimed["b"] is None  # A's lower-numbered trial owns K: B stands down, K runs once
