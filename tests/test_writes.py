"""Every file fastmnist writes: refused before any run when it cannot be written, written atomically, never
renamed over something that is not a file, and kept in a fallback file when the write fails after the work."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from fastmnist import cli
from fastmnist.use.checkpoint import load_model
from fastmnist.results.output import atomic_write, write_text
from fastmnist.recipes.stages import fastest_name
from tests.conftest import assert_one_line_error, in_process

UNWRITABLE = "/proc/fastmnist-test"  # nothing can be created under /proc, even as root
SLICE = "train_fraction=0.02"


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
    assert info["recipe"] == f"{fastest_name()}[train_fraction=0.03]"
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


@pytest.mark.parametrize("kind", ["device", "FIFO"])
def test_a_target_that_is_not_a_file_is_refused_and_left_as_it_is(kind, tmp_path, capsys):
    """As root, a rename would replace /dev/full (or a named pipe) with a regular file: refused in one line,
    before any run, and the node is still what it was."""
    if kind == "device":
        target = Path("/dev/full")
        if not target.is_char_device():
            pytest.skip("no /dev/full character device here")
    else:
        target = tmp_path / "pipe"
        os.mkfifo(target)
    for args in (["train", "--save", str(target)], ["bench", "stage14", "--out", str(target)]):
        code = cli.main([*args, "--offline", "--data-dir", str(tmp_path / "nowhere")])
        proc = subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)
        assert_one_line_error(proc, f"is a {kind}, expected a file name")
    assert target.is_char_device() if kind == "device" else target.is_fifo()
    with pytest.raises(OSError, match="not a file fastmnist may replace"):  # and below the CLI's check too
        write_text(target, "{}")
    assert (target.is_char_device() if kind == "device" else target.is_fifo())
    assert not list(target.parent.glob(f"{target.name}.*.tmp"))
