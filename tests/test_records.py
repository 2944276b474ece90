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
from fastmnist.experiments.bench import seed_job, shared_benchmark, stored_bench_report
from fastmnist.results.machine import machine_info
from fastmnist.results.provenance import redact
from fastmnist.recipes.overrides import get_recipe
from fastmnist.experiments.ladder import ladder_markdown, ladder_plot
from fastmnist.experiments.sweep import sweep_table
from fastmnist.results.report import bench_table
from fastmnist.training.runner import Runner
from fastmnist.experiments.stats import p_reaches, summarize
from fastmnist.experiments.store import open_store
from tests.conftest import assert_one_line_error, in_process

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
    run = {**report["runs"][0], "seed": 1, "precision": "bf16", "engine": "graph", "seconds": 0.05}
    trial = store.claim(seed_job([recipe], 1))
    store.finish(trial, {}, 1, {"accuracy": run["accuracy"], "recipes": [recipe.name], "runs": [run],
                                "machine": gpu, "worker": "gpu-box:1", "excluded_seconds": {}})
    both = stored_bench_report([recipe], store, [0, 1])
    assert both["summary"][0]["engine"] == "eager+graph"  # runs that differed say so
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
    rows = {line.split("|")[1].strip(): line.split("|")[13].strip()
            for line in ladder_markdown(report).splitlines() if line.startswith("| mine")}
    assert rows == {"mine-fp32": "2.0", "mine-bf16": "8.0"}  # 0.1 TFLOP takes 1 s at 100, 0.25 s at 400
    older = {"kind": "ladder", "stages": {"old-bf16": stage("bf16", 2.0, 0.1, matmul_gflops_fp32=100.0)}}
    assert "| - |" in ladder_markdown(older)  # no bf16 peak was measured: no floor, rather than the wrong one


def test_passwords_are_hidden_in_urls_and_command_lines():
    assert redact("--storage postgresql+psycopg://me:s3cr3t@db:5432/x") == "--storage postgresql+psycopg://me:***@db:5432/x"
    assert redact("sqlite:///a/b.db and http://host/path") == "sqlite:///a/b.db and http://host/path"
    for form, shown in [("postgresql+psycopg://me@db/x?sslmode=require&password=s3cr3t&x=1",
                         "postgresql+psycopg://me@db/x?sslmode=require&password=***&x=1"),
                        ("postgresql://me:s3@cr3t@db/x", "postgresql://me:***@db/x"),  # an @ in the password
                        ("host=db user=me password=s3cr3t dbname=x", "host=db user=me password=*** dbname=x"),
                        ("host=db password='s3 cr3t' dbname=x", "host=db password=*** dbname=x"),
                        ("postgresql://db/x?PASSWORD=s3cr3t", "postgresql://db/x?PASSWORD=***")]:
        assert redact(f"--storage {form} --study y") == f"--storage {shown} --study y"
    code = ("import sys; sys.argv = ['fastmnist', 'bench', '--storage', 'postgresql://u:hunter2@h/db']; "
            "from fastmnist.results.provenance import provenance; print(provenance()['command'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "hunter2" not in out and "postgresql://u:***@h/db" in out


def test_importing_the_records_side_runs_no_git_and_no_api():
    code = ("import subprocess, sys\n"
            "def refuse(*a, **k): raise AssertionError('git ran at import')\n"
            "subprocess.run = refuse\n"
            "import fastmnist.results.machine, fastmnist.results.provenance, fastmnist.use.checkpoint, fastmnist.results.records\n"
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


def test_single_run_sweep_shows_na_not_zero():
    point = {"value": 0.01, "runs": 1, "accuracy_mean": 99.1, "accuracy_std": None, "accuracy_se": None,
             "share_reaching_target": 1.0, "seconds_mean": 1.0, "p_vs_incumbent": None}
    table = sweep_table({"target": 99.0, "best": {"lr": 0.01},
                         "phases": [{"round": 1, "param": "lr", "chosen": 0.01, "points": [point]}]})
    assert "99.100 +- n/a" in table and " n/a " in table and "0.000" not in table


def test_ladder_picture_draws_points_on_a_log_axis(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr("fastmnist.experiments.ladder.save_figure", lambda fig, path: figures.append(fig))
    row = {"seconds_mean": 41.5, "seconds_std": 1.0, "accuracy_mean": 99.1, "accuracy_std": 0.1, "target": 99.0}
    ladder_plot({"stages": {"stage13": {"summary": row}, "stage14": {"summary": {**row, "seconds_mean": 27.5}}}},
                tmp_path / "x.png")
    top = figures[0].axes[0]
    assert top.get_yscale() == "log"
    assert not top.patches  # no bars: a bar on a log axis has no true zero and exaggerates ratios


@pytest.fixture(scope="module")
def bench_file(small_mnist) -> dict:
    """A real bench report of two recipes over three seeds."""
    return json.loads(fastmnist.bench([SLICE, f"stage14[{SLICE.split('[')[1]}"], runs=3, mnist=small_mnist,
                                      device="cpu").to_json())


def damaged(report: dict, change) -> dict:
    copy = json.loads(json.dumps(report))
    change(copy)
    return copy


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r["runs"][0].update(accuracy=250), "runs[0].accuracy = 250: out of range (0 to 100)"),
    (lambda r: r["runs"][1].update(accuracy="99.1"), "runs[1].accuracy = '99.1': expected a number"),
    (lambda r: r["runs"][2].update(seconds=-1.0), "runs[2].seconds = -1.0: out of range (above 0)"),
    (lambda r: r["runs"][0].update(seed=True), "runs[0].seed = True: expected an integer"),
    (lambda r: r["runs"][3].pop("seconds"), "runs[3] has no 'seconds'"),
    (lambda r: r.update(runs=[]), "the file holds no runs"),
    (lambda r: r["runs"].append(dict(r["runs"][0])), "appears twice"),
    (lambda r: r["summary"][1].update(recipe="nope"), "summary[1] names recipe 'nope'"),
])
def test_report_refuses_a_file_whose_runs_cannot_be_true(change, fragment, bench_file, tmp_path, monkeypatch,
                                                        capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(damaged(bench_file, change)))
    result = in_process(["report", str(path)], {}, monkeypatch, capsys)
    assert_one_line_error(result, fragment)


def test_report_pairs_seeds_and_says_what_it_left_out(bench_file, tmp_path, monkeypatch, capsys):
    first, second = (row["recipe"] for row in bench_file["summary"])

    def change(report):
        report["runs"] = [r for r in report["runs"] if not (r["recipe"] == second and r["seed"] == 101)]
        report["runs"].append({**report["runs"][0], "recipe": "someone-else", "seed": 7})
    path = tmp_path / "gaps.json"
    path.write_text(json.dumps(damaged(bench_file, change)))
    result = in_process(["report", str(path), "--out", str(tmp_path / "new.json")], {}, monkeypatch, capsys)
    assert result.returncode == 0 and not result.stderr
    assert f"note: unpaired: seeds 101 ran for only one of {first} and {second}" in result.stdout
    assert "note: left out: runs of someone-else" in result.stdout
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["summary"][1]["paired_seeds_vs_first"] == 2 and new["summary"][1]["runs"] == 2
    times = {(r["recipe"], r["seed"]): r["seconds"] for r in bench_file["runs"]}
    assert new["summary"][1]["median_time_ratio_vs_first"] == pytest.approx(
        np.median([times[second, s] / times[first, s] for s in (100, 102)]))


def test_the_bench_table_marks_a_diverged_recipe(bench_file):
    report = damaged(bench_file, lambda r: r["summary"][1].update(diverged=2))
    line = [row for row in bench_table(report).splitlines() if row.startswith(report["summary"][1]["recipe"])][0]
    assert line.endswith("DIVERGED 2 of 3")
