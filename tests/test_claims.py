"""Claims that replicate: the replication probability and claim status every summary carries, ratio
intervals that cover at any number of pairs, the seed ledger (tuning seeds never labelled a claim, a shared
bench reporting exactly its own seeds and definitions), stages 0-2 under the same seed rules, and a long
bench that keeps its finished seeds when interrupted."""

import dataclasses
import json
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from scipy import stats

from fastmnist.experiments.bench import bench
from fastmnist.experiments.bench import resumable_runs
from fastmnist.training.layout import prepare
from fastmnist.experiments.ledger import Ledger, definition
from fastmnist.recipes.overrides import get_recipe
from fastmnist.experiments.stats import (block_p_values, claim_status, median_interval, paired_ratio_interval,
                             replication_probability, summarize)
from tests.conftest import in_process, one_run, run_cli, sigint_default

CPU = torch.device("cpu")
SLICE = "stage14[train_fraction=0.03,threads=1]"


def test_replication_is_the_power_of_a_fresh_25_seed_bench():
    # the arithmetic of ../shared/DESIGN.md: at SD 0.066 a mean of 99.045 passes ~4 times in 5, 99.07 ~always
    assert replication_probability(99.045, 0.066, 99.0) == pytest.approx(0.81, abs=0.02)
    assert replication_probability(99.07, 0.066, 99.0) > 0.99
    assert replication_probability(99.0, 0.066, 99.0) == pytest.approx(0.01, abs=0.002)  # the test's own level
    rng = np.random.default_rng(1)  # by simulation: fresh 25-seed benches of a recipe at 99.05, SD 0.07
    passes = np.mean([stats.ttest_1samp(rng.normal(99.05, 0.07, 25), 99.0, alternative="greater").pvalue < 0.01
                      for _ in range(3000)])
    assert replication_probability(99.05, 0.07, 99.0) == pytest.approx(passes, abs=0.03)
    assert replication_probability(99.1, None, 99.0) is None


def test_a_claim_needs_100_unused_seeds_p_below_001_and_95_percent_replication():
    rng = np.random.default_rng(0)
    strong = summarize(list(rng.normal(99.08, 0.06, 100)), [1.0] * 100, 99.0)
    assert strong["replication_probability"] > 0.95 and claim_status(strong, "claim") == "claimed"
    assert claim_status(strong, "tuning").startswith("not claimed: tuning seeds")
    few = summarize(list(rng.normal(99.08, 0.06, 25)), [1.0] * 25, 99.0)
    assert "25 seeds" in claim_status(few, "claim")
    marginal = summarize(list(99.045 + 0.066 * stats.norm.ppf((np.arange(100) + 0.5) / 100)), [1.0] * 100, 99.0)
    assert marginal["p_value"] < 0.01 and "replicates" in claim_status(marginal, "claim")  # p alone is not enough
    assert len(strong["block_p_values"]) == 4 and block_p_values([99.1] * 24, 99.0) == []


def test_the_ratio_interval_covers_at_any_number_of_pairs_and_never_has_zero_width():
    rng = np.random.default_rng(0)
    for n in (6, 7, 10, 25):  # A/A: the true median ratio is 1
        covered = np.mean([(ci := median_interval(np.exp(rng.normal(0, 0.03, n)))[0])[0] <= 1 <= ci[1]
                           for _ in range(2000)])
        assert covered >= median_interval(np.arange(n, dtype=float))[1] - 0.02 >= 0.93
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (None, None)  # 5 pairs: no interval covers
    tied = paired_ratio_interval([1.0] * 25, [0.9] * 24 + [1.1])
    assert tied["ci95"][0] < tied["ci95"][1]  # ties widen the interval instead of collapsing it
    assert paired_ratio_interval([1.0] * 10, [1.0] * 10)["ci95"] is None  # every pair the same: no interval


def test_a_tuning_seed_is_never_labelled_a_claim(data_env, monkeypatch, tmp_path, capsys):
    for key, value in data_env.items():
        monkeypatch.setenv(key, value)
    recipe = get_recipe(SLICE)
    sweep = in_process(["sweep", "--recipe", SLICE, "--param", "lr=0.01,0.02", "--seeds", "100-101", "--quiet",
                        "--out", str(tmp_path / "sweep")], data_env, monkeypatch, capsys)
    assert sweep.returncode == 0, sweep.stderr
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["seed_use"] == "tuning" and {e["use"] for e in record["seed_ledger"]} == {"tuning"}
    swept = [e for e in Ledger().entries() if e["definition"] == definition(recipe)]
    assert swept and swept[0]["seeds"] == "100-101"
    bench = in_process(["bench", SLICE, "--seeds", "100-101", "--quiet", "--out", str(tmp_path / "b.json")],
                       data_env, monkeypatch, capsys)
    assert "seeds 100-101 (tuning)" in bench.stdout and "used for tuning by sweep" in bench.stdout
    row = json.loads((tmp_path / "b.json").read_text())["summary"][0]
    assert row["seed_use"] == "tuning" and row["claim"].startswith("not claimed: tuning seeds")
    other = in_process(["bench", f"{SLICE[:-1]},lr=0.03]", "--seeds", "100-101", "--quiet"], data_env, monkeypatch,
                       capsys)  # another definition: these seeds are fresh for it
    assert "seeds 100-101 (claim)" in other.stdout
    high = in_process(["bench", SLICE, "--first-seed", "1000000", "--runs", "1", "--quiet"], data_env, monkeypatch,
                      capsys)
    assert "(tuning)" in high.stdout


def test_a_definition_is_what_runs_not_what_it_is_called(tmp_path):
    stage14 = get_recipe("stage14")
    assert definition(stage14) == definition(dataclasses.replace(stage14, name="other", summary="same fields"))
    assert definition(stage14) != definition(dataclasses.replace(stage14, lr=0.03))
    net_file = tmp_path / "mynet.py"
    net_file.write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), "
                        "torch.nn.Linear(784, 10))\n")
    from fastmnist.recipes.userfile import load_object

    user = dataclasses.replace(stage14, net=load_object(f"{net_file}:make"))
    before = definition(user)
    net_file.write_text(net_file.read_text() + "# edited\n")
    assert definition(user) != before  # the file's content is part of the definition


def test_a_field_added_since_keeps_every_earlier_definition():
    """Seeds are recorded by definition: a new field at its neutral value must not rename the recipes defined
    before it (their committed benches and the ledger name them), and where it is set it makes a new one."""
    from pathlib import Path

    recorded = json.loads((Path(__file__).parents[1] / "results" / "claims" /
                           "bench-stage18-fastest-margin-best-seeds4000-4099.json").read_text())["definitions"]
    assert {name: definition(get_recipe(name)) for name in ("stage18", "stage21")} == \
        {name: recorded[name] for name in ("stage18", "stage21")}
    stage24 = get_recipe("stage24")
    assert definition(stage24) != definition(dataclasses.replace(stage24, bf16_images=False))
    assert definition(stage24) != definition(dataclasses.replace(
        stage24, net=dataclasses.replace(stage24.net, space_to_depth=False)))


def test_a_shared_bench_reports_its_own_seeds_and_reruns_an_edited_recipe(data_env, tmp_path):
    url, study = f"sqlite:///{tmp_path / 'shared.db'}", f"b-{uuid.uuid4().hex[:6]}"
    recipe_file = tmp_path / "mine.py"
    recipe_file.write_text("import fastmnist\n\nmine = fastmnist.derive(fastmnist.recipe('stage14'), 'mine', 'x', "
                           "train_fraction=0.03, threads=1)\n")

    def bench(seeds: str) -> dict:  # a new process each time, as a user reruns it (and re-reads the file)
        out = tmp_path / f"{uuid.uuid4().hex[:6]}.json"
        run_cli("bench", f"{recipe_file}:mine", "--seeds", seeds, "--storage", url, "--study", study, "--quiet",
                "--out", str(out), env=data_env)
        return json.loads(out.read_text())
    first, second = bench("100"), bench("300")
    assert first["seeds"] == "100" and second["seeds"] == "300" and second["seed_use"] == "claim"
    assert [r["seed"] for r in second["runs"]] == [300] and second["seeds_run_here"] == 1
    both = bench("100,300")
    assert both["seeds_run_here"] == 0 and both["summary"][0]["runs"] == 2  # stored runs reused, none other shown
    recipe_file.write_text(recipe_file.read_text().replace("0.03", "0.04"))  # the user edits the recipe
    edited = bench("100")
    assert edited["seeds_run_here"] == 1  # the old definition's run is not reused
    assert edited["runs"][0]["images_seen"] == int(60000 * 0.04) != first["runs"][0]["images_seen"]


def test_stages_0_to_2_walk_the_seeds_order_and_subset_drawn_before_the_clock(small_mnist):
    recipe = dataclasses.replace(get_recipe("stage2"), train_fraction=0.02, epochs=2, threads=1)
    data = prepare(small_mnist, recipe, CPU)
    a, b, again = (one_run(recipe, data, seed=s) for s in (1, 2, 1))
    assert a.images_seen == 2 * int(len(small_mnist.train_labels) * 0.02)
    assert a.data_order != b.data_order and a.data_order == again.data_order and a.order_seconds > 0
    assert a.accuracy == again.accuracy
    data.lay_out(recipe, 1)
    first, second = data.epoch_orders
    assert sorted(first) == sorted(second) and list(first) != list(second)  # one subset, reshuffled each epoch


def test_an_interrupted_bench_keeps_its_seeds_and_the_same_command_continues(data_env, monkeypatch, tmp_path,
                                                                            small_mnist):
    out = tmp_path / "bench.json"
    recipes = [get_recipe(SLICE), get_recipe(f"{SLICE[:-1]},lr=0.03]")]
    runs = []

    def stop_after_three(result):
        runs.append(result)
        if len(runs) == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        bench(recipes, [100, 101, 102], lambda: (CPU, small_mnist), out=out, on_run=stop_after_three)
    kept = json.loads(out.read_text())
    assert kept["partial"] and kept["seeds"] == "100" and len(kept["runs"]) == 2
    assert set(resumable_runs(kept, recipes, [100, 101, 102])) == {100}
    assert resumable_runs(kept, recipes[:1] + [get_recipe("stage14")], [100]) == {}  # another bench: nothing
    resumed = []
    report = bench(recipes, [100, 101, 102], lambda: (CPU, small_mnist), out=out, on_resume=resumed.append)
    assert resumed == [1] and report["seeds"] == "100-102" and len(report["runs"]) == 6
    assert [r["accuracy"] for r in report["runs"] if r["seed"] == 100] == [r["accuracy"] for r in kept["runs"]]


def test_ctrl_c_on_a_long_bench_says_where_its_seeds_are(env, tmp_path):
    out = tmp_path / "long.json"
    proc = subprocess.Popen([sys.executable, "-m", "fastmnist.cli", "bench", SLICE, "--runs", "500", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_default)
    try:
        while "bench: about" not in (line := proc.stderr.readline()) and line:
            pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a failed check must not leave 500 seeds running
    assert "500 seed(s)" in line and "Ctrl-C keeps the finished seeds" in line
    assert proc.returncode == 130 and "kept in" in err and "Traceback" not in err
    kept = json.loads(out.read_text())
    assert kept["partial"] and len(kept["runs"]) >= 1
