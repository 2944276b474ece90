"""Records say what the runs did: precision, engine and machine from the runs and the machine that ran them,
the floor in the precision a stage ran, a claim's p-value, and no password from a storage URL anywhere."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

import fastmnist
from fastmnist.benchmark import shared_benchmark, stored_bench_report
from fastmnist.machine import machine_info
from fastmnist.provenance import redact
from fastmnist.recipes import get_recipe
from fastmnist.report import bench_table, ladder_markdown
from fastmnist.runner import Runner
from fastmnist.stats import p_reaches, summarize
from fastmnist.store import job_key, open_store

SLICE = "stage18[train_fraction=0.05]"


def test_p_value_is_the_one_sided_t_test_against_the_target():
    accuracies = [99.1, 99.0, 99.2, 98.95, 99.15]
    expected = stats.ttest_1samp(accuracies, 99.0, alternative="greater").pvalue
    assert p_reaches(accuracies, 99.0) == pytest.approx(expected)
    assert summarize(accuracies, [1.0] * 5, 99.0)["p_value"] == pytest.approx(expected)
    assert p_reaches([98.9, 98.95, 99.0], 99.0) > 0.5  # below the line: no claim
    assert p_reaches([99.5], 99.0) is None and p_reaches([99.2, 99.2], 99.0) is None  # undefined


def test_a_report_of_stored_runs_says_what_the_workers_did(small_mnist):
    """A worker's seed on this CPU, and one stored as a GPU worker would store it: the report made here
    takes precision, engine and machine from the runs, not from the machine that prints it."""
    recipe = get_recipe(SLICE)
    store = open_store(None, "records")
    report = shared_benchmark([recipe], [0], store, Runner(small_mnist, torch.device("cpu")))
    here = report["machine"]
    assert here["hostname"] == machine_info(torch.device("cpu"))["hostname"] and "matmul_gflops_fp32" in here
    gpu = {**here, "device": "cuda", "gpu": "NVIDIA H200", "hostname": "gpu-box", "matmul_gflops_bf16": 7.9e5}
    run = {**report["runs"][0], "seed": 1, "precision": "bf16", "engine": "cuda-graph", "seconds": 0.05}
    trial = store.claim(job_key(seed=1))
    store.finish(trial, {}, 1, {"accuracy": run["accuracy"], "recipes": [recipe.name], "runs": [run],
                                "machine": gpu, "worker": "gpu-box:1", "excluded_seconds": {}})
    both = stored_bench_report([recipe], store)
    assert both["summary"][0]["engine"] == "cuda-graph+eager"  # runs that differed say so
    assert {m["machine"]["hostname"] for m in both["machines"]} == {here["hostname"], "gpu-box"}
    assert "NVIDIA H200" in bench_table(both) and "bf16 790000" in bench_table(both)


def stage(precision, seconds, tflop, **machine):
    return {"summary": {"seconds_mean": seconds, "seconds_std": 0.0, "tflop_per_run": tflop, "gflop_per_s": 1.0,
                        "epochs_mean": 1.0, "accuracy_mean": 99.1, "accuracy_std": 0.1, "share_reaching_target": 1.0,
                        "runs": 2, "target": 99.0, "precision": precision},
            "machine": {"cpu_model": "x", "vector_isa": "AVX512", "cpu_count": 2, "torch_threads": 2,
                        "device": "cpu", "torch_version": "2", **machine},
            "recipe": {}, "what_changed": "?"}


def test_the_floor_is_in_the_precision_the_stage_ran():
    peaks = {"matmul_gflops_fp32": 100.0, "matmul_gflops_bf16": 400.0}
    report = {"kind": "ladder", "stages": {"mine-fp32": stage("fp32", 2.0, 0.1, **peaks),
                                           "mine-bf16": stage("bf16", 2.0, 0.1, **peaks)}}
    rows = {line.split("|")[1].strip(): line.split("|")[12].strip()
            for line in ladder_markdown(report).splitlines() if line.startswith("| mine")}
    assert rows == {"mine-fp32": "2.0", "mine-bf16": "8.0"}  # 0.1 TFLOP takes 1 s at 100, 0.25 s at 400
    older = {"kind": "ladder", "stages": {"old-bf16": stage("bf16", 2.0, 0.1, matmul_gflops_fp32=100.0)}}
    assert "| - |" in ladder_markdown(older)  # no bf16 peak was measured: no floor, rather than the wrong one


def test_passwords_are_hidden_in_urls_and_command_lines():
    assert redact("--storage postgresql+psycopg://me:s3cr3t@db:5432/x") == "--storage postgresql+psycopg://me:***@db:5432/x"
    assert redact("sqlite:///a/b.db and http://host/path") == "sqlite:///a/b.db and http://host/path"
    code = ("import sys; sys.argv = ['fastmnist', 'bench', '--storage', 'postgresql://u:hunter2@h/db']; "
            "from fastmnist.provenance import provenance; print(provenance()['command'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "hunter2" not in out and "postgresql://u:***@h/db" in out


def test_importing_the_records_side_runs_no_git_and_no_api():
    code = ("import subprocess, sys\n"
            "def refuse(*a, **k): raise AssertionError('git ran at import')\n"
            "subprocess.run = refuse\n"
            "import fastmnist.machine, fastmnist.provenance, fastmnist.checkpoint, fastmnist.records\n"
            "print('fastmnist.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_the_api_and_the_cli_write_the_same_bench_record(small_mnist, tmp_path):
    report = fastmnist.bench([SLICE], runs=1, mnist=small_mnist, device="cpu")
    assert report["kind"] == "bench" and report["summary"][0]["p_value"] is None  # one run: no claim
    assert report["summary"][0]["engine"] == "eager" and "matmul_gflops_fp32" in report["machine"]
    assert set(json.loads(report.to_json())) >= {"provenance", "machine", "recipes", "timing", "summary", "runs"}
    assert np.isfinite(report["summary"][0]["accuracy_mean"])


def test_report_summarises_an_old_bench_file_again(small_mnist, tmp_path, monkeypatch, capsys):
    from tests.test_cli import assert_one_line_error, in_process

    report = dict(fastmnist.bench([SLICE, f"stage14[{SLICE.split('[')[1]}"], runs=2, mnist=small_mnist, device="cpu"))
    for row in report["summary"]:  # as a file written before these existed
        del row["p_value"], row["engine"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(report))
    result = in_process(["report", str(old), "--out", str(tmp_path / "new.json")], {}, monkeypatch, capsys)
    assert result.returncode == 0 and " p " in result.stdout.splitlines()[0]
    new = json.loads((tmp_path / "new.json").read_text())
    assert [row["engine"] for row in new["summary"]] == ["eager", "eager"] and "p_value" in new["summary"][0]
    assert new["runs"] == report["runs"] and new["summary_provenance"]["command"]
    assert [row["accuracy_mean"] for row in new["summary"]] == [row["accuracy_mean"] for row in report["summary"]]
    bad = in_process(["report", str(tmp_path / "missing.json")], {}, monkeypatch, capsys)
    assert bad.returncode == 2 and "not a readable JSON results file" in bad.stderr
    for text, fragment in (("[1, 2]", "a 'list' file"), ('{"kind": "ladder"}', "only bench reports"),
                           ('{"kind": "bench", "summary": []}', "not a complete bench report")):
        (tmp_path / "odd.json").write_text(text)
        odd = in_process(["report", str(tmp_path / "odd.json")], {}, monkeypatch, capsys)
        assert_one_line_error(odd, fragment)
