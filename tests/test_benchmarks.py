"""Every tool under benchmarks/ runs: each is started here as a user would, on a slice of the images."""

import json
import os
import subprocess
import sys
from pathlib import Path

import fastmnist
from fastmnist.recipes.recipe import Recipe
from fastmnist.recipes.userfile import load_object

ROOT = Path(__file__).resolve().parents[1]
LEVERS = ROOT / "benchmarks" / "fewer_flops_levers.py"


def test_profile_run_splits_a_run_into_its_phases(data_env, tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_run.py"), "stage14[train_fraction=0.03]",
                           "--runs", "1", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, **data_env}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())["summary"]["stage14[train_fraction=0.03]"]
    shares = [summary[f"{phase}_share"] for phase in ("forward", "backward", "optimizer", "evaluation", "other")]
    assert all(0 <= share <= 1 for share in shares) and 0.9 < sum(shares) < 1.1


def test_test_views_probe_counts_the_runs_own_test_pass_as_its_plain_view(data_env, tmp_path):
    """The probe's one-view accuracy is exactly the run's own (its test pass and the module's forward agree), so
    what the other views add is measured against the figure a bench reports."""
    out = tmp_path / "views.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "test_views.py"), "stage27[train_fraction=0.05]",
                           "--seeds", "0-1", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, **data_env}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["kind"] == "test-views" and [r["seed"] for r in report["runs"]] == [0, 1]
    assert all(r["plain"] == r["run_accuracy"] for r in report["runs"])
    assert set(report["summary"]) == set(report["views"]) and report["summary"]["plain"]["mean_gain_over_plain"] == 0


def test_every_lever_recipe_trains(small_mnist):
    names = [line.split(" = ")[0] for line in LEVERS.read_text().splitlines()
             if " = fastmnist.derive(" in line and not line.startswith(" ")]
    recipes = [load_object(f"{LEVERS}:{name}") for name in names]
    assert len(recipes) >= 10 and all(isinstance(r, Recipe) for r in recipes)
    report = fastmnist.bench([f"{LEVERS}:{name}[train_fraction=0.3]" for name in names], runs=1,
                             mnist=small_mnist, device="cpu")
    assert all(row["accuracy_mean"] > 30 and not row["diverged"] for row in report["summary"])


def test_gpu_script_runs_end_to_end_on_a_cpu(real_mnist, tmp_path):
    bring = tmp_path / "bring"
    (bring / "wheels").mkdir(parents=True)
    (bring / "mnist").symlink_to(real_mnist.source)
    out = tmp_path / "gpu"
    env = {**os.environ, "SKIP_INSTALL": "1", "DEVICE": "cpu", "RUNS": "1", "LADDER_STAGES": "18",
           "LADDER_RUNS": "1", "OUT": str(out), "BRING": str(bring), "PYTHON": sys.executable,
           "SET": "train_fraction=0.05",
           "TESTS": "tests/test_engine.py::test_learning_rate_table_is_pytorchs_own_schedule"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 passed" in (out / "tests.txt").read_text()
    assert json.loads((out / "bench-stage14-vs-fastest-1.json").read_text())["kind"] == "bench"
    assert "| stage18 |" in (out / "ladder" / "ladder.md").read_text()


def test_before_after_runs_a_commit_beside_this_checkout(data_env, tmp_path):
    out = tmp_path / "before-after.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "before_after.py"), "HEAD",
                           "stage14[train_fraction=0.03]", "--seeds", "0-1", "--out", str(out)], capture_output=True,
                          text=True, env={**os.environ, **data_env}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    compared = json.loads(out.read_text())["comparison"]["stage14[train_fraction=0.03]"]
    assert compared["same_accuracy_every_seed"] is True  # the model and data order a seed gives have not moved
    assert compared["time_ratio_after_over_before"]["median"] > 0
