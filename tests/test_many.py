"""Many workers on one store, SQLite and a real PostgreSQL server: every run exactly once, nothing lost
to a killed worker, a signal or a store that goes away, and one clear line for a bad URL.

PostgreSQL: $FASTMNIST_TEST_POSTGRES (CI starts a server and sets it). Without a reachable server the
PostgreSQL cases skip, with the reason, except under CI, where they fail."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import uuid

import pytest
import torch
from optuna.trial import TrialState

from fastmnist.cli.main import main as cli_main
from fastmnist.recipes.overrides import get_recipe
from fastmnist.recipes.stages import fastest_name
from fastmnist.experiments.bench import benchmark
from fastmnist.experiments.store import open_store
from tests.conftest import POSTGRES, assert_one_line_error, in_process, postgres_reason, sigint_default
from tests.store_worker import worker_opens

SLICE = "train_fraction=0.02"


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "fastmnist.cli", *args]


def bench_command(url, study, runs=4):
    return cli("bench", "stage14", fastest_name(), "--runs", str(runs), "--set", SLICE, "--threads", "1",
               "--storage", url, "--study", study, "--stale-after", "3")


def sweep_command(url, study, out):
    lr = get_recipe(fastest_name()).lr  # the recipe's own value and one other: two points
    return cli("sweep", "--recipe", f"{fastest_name()}[{SLICE}]", "--param", f"lr={lr},{2 * lr}", "--runs", "2",
               "--threads", "1", "--storage", url, "--study", study, "--out", str(out), "--stale-after", "3")


def run_together(commands, env, timeout=300):
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              preexec_fn=sigint_default)
             for c in commands]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return [out for out, _ in outs]


def finished_jobs(url, study):
    trials = open_store(url, study).study.get_trials(states=(TrialState.COMPLETE,))
    return [t.user_attrs["job"] for t in trials]


def bench_seeds(url, study):
    """The seeds of a bench's finished jobs (each job: one seed of the bench's definitions)."""
    return [json.loads(job)["seed"] for job in finished_jobs(url, study)]


def test_three_workers_share_a_bench_each_seed_once(store_url, env, tmp_path, real_mnist):
    study = f"bench-{uuid.uuid4().hex[:8]}"
    run_together([bench_command(store_url, study, runs=3)] * 3, env)
    jobs = bench_seeds(store_url, study)
    assert sorted(jobs) == list(range(100, 103))  # every seed once, none twice
    shared = tmp_path / "shared.json"
    assert cli_main(bench_command(store_url, study, runs=3)[3:] + ["--report", "--out", str(shared)]) == 0
    report = json.loads(shared.read_text())
    assert sum(len(m["seeds"]) for m in report["machines"]) == 3
    recipes = [get_recipe(f"{name}[{SLICE},threads=1]") for name in ("stage14", fastest_name())]
    alone = benchmark(recipes, [100, 101, 102], real_mnist, torch.device("cpu"), progress=False)  # one worker, here
    assert {(r["recipe"].split("[")[0], r["seed"]): r["accuracy"] for r in alone["runs"]} == {
        (r["recipe"].split("[")[0], r["seed"]): r["accuracy"] for r in report["runs"]}  # the same results


def test_three_workers_share_a_sweep_each_run_once(store_url, env, tmp_path):
    study = f"sweep-{uuid.uuid4().hex[:8]}"
    outs = run_together([sweep_command(store_url, study, tmp_path / f"w{i}") for i in range(3)], env)
    jobs = finished_jobs(store_url, study)
    assert len(jobs) == len(set(jobs)) == 2 * 2  # two lr values, two seeds each, each run once
    assert len({out.split("runs:")[0] for out in outs}) == 1  # every worker prints the same table


def start_and_wait_for_a_run(command, env, nth=1):
    """The worker, once it has started its nth run (so n-1 are finished)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_default)
    started = 0
    for line in proc.stderr:
        started += line.startswith(("sweep: running", "bench: running"))
        if started == nth:
            return proc
    raise AssertionError(f"the worker never started run {nth} (exit {proc.wait()})")


def test_a_killed_workers_seed_is_rerun_and_finished_runs_kept(store_url, env, monkeypatch, capsys):
    study = f"kill-{uuid.uuid4().hex[:8]}"
    proc = start_and_wait_for_a_run(bench_command(store_url, study, runs=3), env, nth=2)
    proc.kill()  # SIGKILL: no handler runs, its trial stays RUNNING
    proc.wait()
    store = open_store(store_url, study)
    assert len(store.study.get_trials(states=(TrialState.RUNNING,))) == 1
    kept = bench_seeds(store_url, study)
    assert kept == [100]  # the seed finished before the kill
    rerun = in_process(bench_command(store_url, study, runs=3)[3:], env, monkeypatch, capsys)  # no new interpreter
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(bench_seeds(store_url, study)) == list(range(100, 103))
    assert rerun.stderr.count("bench: running") == 2  # seed 100 kept, the killed seed 101 redone, seed 102 new
    assert "bench: 3 seed(s) in this bench, 2 run now by this worker, 1 reused from the store" in rerun.stderr
    assert len(store.study.get_trials(states=(TrialState.FAIL,))) == 1  # failed once its heartbeat stopped


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "fastmnist: interrupted"),
                                             (signal.SIGTERM, 143, "fastmnist: terminated (SIGTERM)")])
def test_a_signal_releases_the_run_in_flight_and_the_same_command_resumes(sig, code, line, env, tmp_path,
                                                                          monkeypatch, capsys):
    url, study = f"sqlite:///{tmp_path / 's.db'}", "signal"
    proc = start_and_wait_for_a_run(sweep_command(url, study, tmp_path), env, nth=2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and err.strip().splitlines()[-1] == line, err
    assert not open_store(url, study).study.get_trials(states=(TrialState.RUNNING,))
    rerun = in_process(sweep_command(url, study, tmp_path)[3:], env, monkeypatch, capsys)
    assert rerun.returncode == 0, rerun.stderr
    assert "reused from the store" in rerun.stdout and "already holds" in rerun.stderr


def test_sigint_on_postgresql_releases_the_run(env, tmp_path):
    if postgres_reason():
        pytest.fail(postgres_reason()) if os.environ.get("CI") else pytest.skip(postgres_reason())
    study = f"sigint-{uuid.uuid4().hex[:8]}"
    proc = start_and_wait_for_a_run(bench_command(POSTGRES, study, runs=4), env)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not open_store(POSTGRES, study).study.get_trials(states=(TrialState.RUNNING,))


def pg_ctl(action: str) -> None:
    version, cluster = os.environ["FASTMNIST_TEST_PG_CLUSTER"].split()
    subprocess.run(["pg_ctlcluster", version, cluster, action, *(["-m", "fast"] if action == "stop" else [])],
                   check=True, capture_output=True, timeout=120)


@pytest.mark.skipif(not os.environ.get("FASTMNIST_TEST_PG_CLUSTER"),
                    reason="needs FASTMNIST_TEST_PG_CLUSTER='VERSION CLUSTER' and root, to stop the server")
def test_the_database_stopping_mid_run_ends_with_one_line_and_resumes(env, monkeypatch, capsys):
    study = f"stop-{uuid.uuid4().hex[:8]}"
    proc = start_and_wait_for_a_run(bench_command(POSTGRES, study, runs=2), env)
    try:
        pg_ctl("stop")
        _, err = proc.communicate(timeout=180)
    finally:
        pg_ctl("start")
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("bench: running", "fastmnist: warning:"))]
    assert proc.returncode == 4 and len(lines) == 1 and "Traceback" not in err, err
    assert "stopped answering" in lines[0] and "run the same command again" in lines[0]
    rerun = in_process(bench_command(POSTGRES, study, runs=2)[3:], env, monkeypatch, capsys)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(bench_seeds(POSTGRES, study)) == list(range(100, 102))


@pytest.mark.parametrize("url, fragment", [
    ("postgresql+psycopg://fastmnist:wrong@localhost/fastmnist", "password authentication failed"),
    ("postgresql+psycopg://fastmnist:secret@localhost:1/fastmnist", "Connection refused"),
    ("postgresql+psycopg2://fastmnist:secret@localhost/fastmnist", "database driver for this URL is not installed"),
    ("mysql+nodriver://a@localhost/x", "cannot open the store"),
    ("not a url", "cannot open the store"),
    ("postgresql+psycopg://fastmnist@localhost/fastmnist?password=wrong", "cannot open the store"),
    ("host=localhost user=fastmnist password=secret dbname=fastmnist", "cannot open the store"),
])
def test_bad_store_urls_are_one_line_before_any_run(url, fragment, capsys):
    if "wrong" in url and postgres_reason():
        pytest.fail(postgres_reason()) if os.environ.get("CI") else pytest.skip(postgres_reason())
    code = cli_main(bench_command(url, "x")[3:])  # in this process: it must fail before loading anything
    err = capsys.readouterr().err
    assert_one_line_error(subprocess.CompletedProcess([], code, "", err), fragment)
    assert "wrong" not in err and "secret" not in err  # passwords are never printed, in any form


@pytest.mark.parametrize("form", ["user-info", "query"])
def test_no_password_reaches_a_record_a_file_or_a_printed_line(form, env, tmp_path, small_mnist, capsys,
                                                              monkeypatch):
    """Every command that takes a storage URL, from the CLI and from Python, with the password in the URL's
    user-info or as libpq's `?password=` query parameter: the password is in none of what they print or
    write, and the URL itself is recorded, its password hidden."""
    if postgres_reason():
        pytest.fail(postgres_reason()) if os.environ.get("CI") else pytest.skip(postgres_reason())
    from sqlalchemy.engine import make_url

    import fastmnist

    password = make_url(POSTGRES).password
    url = POSTGRES if form == "user-info" else \
        make_url(POSTGRES).set(password=None).render_as_string(hide_password=False) + f"?password={password}"
    tag = uuid.uuid4().hex[:8]
    texts = []
    monkeypatch.setenv("FASTMNIST_DATA", env["FASTMNIST_DATA"])
    for command in (bench_command(url, f"pw-bench-{tag}", runs=1) + ["--out", str(tmp_path / "b.json")],
                    bench_command(url, f"pw-bench-{tag}", runs=1) + ["--report", "--out", str(tmp_path / "r.json")],
                    sweep_command(url, f"pw-sweep-{tag}", tmp_path / "sweep")):
        monkeypatch.setattr(sys, "argv", ["fastmnist", *command[3:]])  # what provenance records
        assert cli_main(command[3:]) == 0  # the CLI in this process: no interpreter and torch to start
        texts += list(capsys.readouterr())
    recipe = f"stage14[{SLICE}]"
    texts += [fastmnist.bench([recipe], 1, mnist=small_mnist, storage=url, study=f"pw-api-{tag}").to_json(),
              fastmnist.sweep(recipe, {"lr": [0.02]}, 1, mnist=small_mnist, storage=url).to_json()]
    texts += [path.read_text() for path in tmp_path.rglob("*") if path.suffix in (".json", ".md")]
    texts += list(capsys.readouterr())
    assert not [t for t in texts if password in t]
    hidden = ":***@" if form == "user-info" else "password=***"
    assert sum(hidden in t for t in texts) >= 5  # the commands' provenance and the sweep/bench records


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
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", "s")
    trial = store.claim("job")
    store.study.tell(trial.number, state=TrialState.FAIL)  # another worker took it as stale
    assert store.finish(trial, {"lr": 1}, 0, {"accuracy": 99.0, "seconds": 1.0, "diverged": False,
                                              "epochs": 1}) is False


def test_a_job_is_taken_back_at_once_from_a_dead_local_worker_and_never_from_a_live_one(tmp_path):
    import time

    from optuna.trial import TrialState

    from fastmnist.experiments.store import this_worker

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
