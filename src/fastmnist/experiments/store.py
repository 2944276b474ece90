"""The shared store: jobs kept as Optuna trials in an RDB storage (SQLite for one machine, PostgreSQL for
many), claimed by workers, watched by heartbeats. Sweeps and benches run through it.

A worker claims a job by creating a trial tagged with it, then checks the store; of several trials for
one job, only the lowest-numbered one runs, the others are pruned. While it runs a job the worker records
a heartbeat; a job whose worker stopped beating (kill -9, a lost machine) is failed after the grace
period and run again by whoever comes next. A result that arrives after its job was taken over is
dropped quietly. Everything is in Optuna's own schema: `optuna.load_study` reads it without fastmnist.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import threading
import time
import warnings

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from fastmnist.errors import FastMnistError, StoreError
from fastmnist.results.provenance import redact

ALIVE = (TrialState.RUNNING, TrialState.COMPLETE)
POLL_SECONDS = 0.5  # how often a worker with nothing to claim looks for others' results (a cheap query)
CREATE_TRIES = 8  # workers started together race to create the schema; the losers retry
TAG_WAIT_SECONDS = 10.0  # how long a claim waits for an earlier trial to say which job it is for

# heartbeats outside Study.optimize are what this module is for: Optuna's notes about them are noise here
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def job_key(**fields) -> str:
    """The text that names a job in the store (a bench's seed, a sweep's point and seed): sorted JSON, so
    the same job always has the same key."""
    return json.dumps(fields, sort_keys=True)


def heartbeat_interval(stale_after: float) -> int:
    """Beat a few times within the grace period, at most every 10 s: cheap, and a dead worker shows soon."""
    return max(1, min(10, int(stale_after // 3)))


def open_store(url: str | None, name: str, stale_after: float = 60.0) -> JobStore:
    """The study `name` at `url` (in memory, for one process, when None) as a job store, created if new."""
    study, storage = open_study(url, name, stale_after)
    return JobStore(study, storage, url)


def open_study(url: str | None, name: str, stale_after: float = 60.0, directions=("maximize",), sampler=None,
               retry_failed: bool = False) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """The study and its storage, created if new; heartbeats every few seconds (a trial whose worker stops
    beating is failed after `stale_after`, and with `retry_failed` run again). Creation is retried: workers
    started together race to create the tables, and the losers find them made on the next try."""
    if url is None:
        storage = optuna.storages.InMemoryStorage()
        return optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                                   sampler=sampler), storage
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)} \
        if retry_failed else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(CREATE_TRIES):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=heartbeat_interval(stale_after),
                                                 grace_period=max(1, int(stale_after)), **retry)
            study = optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                                        sampler=sampler, load_if_exists=True)
            gc.collect()  # the schema check defines ORM classes in Alembic's scripts, garbage at once: collected
            return study, storage  # now, not mid-run, where their weakref callbacks would swallow a Ctrl-C
        except Exception as exc:  # bad URLs, missing drivers, unreachable servers, creation races
            if attempt + 1 < CREATE_TRIES and creation_race(exc):
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                continue
            raise FastMnistError(redact(f"cannot open the store {url}: {why(exc)}")) from None
    raise AssertionError("unreachable")


def why(exc: BaseException) -> str:
    """One line for a store failure (its root cause: Optuna wraps the driver's errors), with the fix
    where one is known."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ImportError):
        return (f"the database driver for this URL is not installed ({exc}); for PostgreSQL install "
                f"'fastmnist[postgres]' and write the URL as postgresql+psycopg://USER:PASSWORD@HOST/DB")
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    text = text.split("(Background on this error")[0].strip()
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}: {text[:300]}"


def creation_race(exc: Exception) -> bool:
    """True for the errors two processes creating one schema at once give each other."""
    text = str(exc)
    return any(sign in text for sign in ("already exists", "UNIQUE constraint failed", "duplicate key",
                                         "database is locked"))


def this_worker() -> str:
    """host:pid, the name a worker's claims carry."""
    return f"{platform.node()}:{os.getpid()}"


def gone(worker: str | None) -> bool | None:
    """Whether the worker that holds a job is a process of this host that no longer exists (True), one
    that still does, however busy (False), or another host's, known only by its heartbeats (None)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != platform.node() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it exists
        return False
    return False


def beats(storage) -> bool:
    """Whether the storage keeps heartbeats (an RDB storage opened here does; one in memory, shared by
    no one, needs none)."""
    return bool(getattr(storage, "get_heartbeat_interval", lambda: None)())


class Heartbeat:
    """Records a trial's heartbeat in the store every few seconds while its job runs."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.enabled = beats(storage)
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self):
        while not self.stop.wait(self.storage.get_heartbeat_interval()):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a store that went away: the job's own write will report it
                return

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()


def stale_trial_ids(storage, study_id: int) -> set[int]:
    """The trials whose heartbeat stopped longer ago than the grace period. The one private call into
    Optuna: its public `fail_stale_trials` fails every such trial, and a live worker of this host must keep
    its job however late its heartbeat (see JobStore.fail_stale). Tested with Optuna 5.0, the range
    pyproject.toml admits."""
    return set(storage._get_stale_trial_ids(study_id)) if beats(storage) else set()


class JobStore:
    """The study seen as jobs: which are done, which are claimed, and claiming one. It keeps the storage it
    was opened with and calls only that storage's public methods (but in `stale_trial_ids`)."""

    def __init__(self, study: optuna.Study, storage, url: str | None = None):
        self.study, self.storage, self.url = study, storage, url
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.trial_ids: dict[int, int] = {}

    def trial_id(self, trial) -> int:
        """The storage's id of a trial, asked once (claim asks it for its own trial before the run is
        announced, so no query stands between a run's start and the handler that releases it)."""
        if trial.number not in self.trial_ids:
            self.trial_ids[trial.number] = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, trial.number)
        return self.trial_ids[trial.number]

    def trials(self, states=ALIVE) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    def finished(self) -> list:
        return self.trials((TrialState.COMPLETE,))

    def finished_count(self) -> int:
        return len(self.finished())

    def fail_stale(self) -> None:
        """Take back the jobs of workers that are gone: at once when the worker was a process of this host
        that no longer exists (kill -9, a crash); after the grace period without a heartbeat when it ran
        elsewhere (a lost machine). A live process of this host keeps its job however late its heartbeat:
        on a saturated machine a heartbeat can be starved, and taking the job over would run it twice."""
        stale = stale_trial_ids(self.storage, self.study_id)
        for trial in self.trials((TrialState.RUNNING,)):
            holder = gone(trial.user_attrs.get("worker"))
            trial_id = self.trial_id(trial) if holder is not False else None
            if holder or (holder is None and trial_id in stale):
                try:
                    self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
                except UpdateFinishedTrialError:
                    pass  # finished or failed by someone else meanwhile

    def claim(self, key: str):
        """A trial that owns `key`, or None if another worker's trial has it. Of several trials for one key
        the lowest-numbered runs it; a trial created before this one but not yet tagged with its key may
        be one of them, so the decision waits until every lower-numbered running trial says its key (a
        moment: the tag is the next write after the trial's creation; at most TAG_WAIT_SECONDS for a worker
        that died in between)."""
        trial = self.study.ask()
        trial_id = self.trial_id(trial)
        if beats(self.storage):
            self.storage.record_heartbeat(trial_id)  # from its first moment, or never stale
        trial.set_user_attr("job", key)
        trial.set_user_attr("worker", this_worker())
        deadline = time.monotonic() + TAG_WAIT_SECONDS
        while True:
            alive = self.trials()
            untagged = [t for t in alive if t.number < trial.number and t.state == TrialState.RUNNING
                        and "job" not in t.user_attrs]
            if not untagged or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        owners = [t.number for t in alive if t.user_attrs.get("job") == key]
        if min(owners) != trial.number:
            self.study.tell(trial, state=TrialState.PRUNED)  # a duplicate claim: the lower number runs it
            return None
        return trial

    def finish(self, trial, point: dict, seed: int, result: dict) -> bool:
        """Store a result (every key a user attribute, the accuracy as the trial's value); False when the
        trial was meanwhile failed as stale and taken over (a lost race: the other worker's run counts,
        this one is dropped quietly)."""
        try:
            for name, value in {**result, "point": point, "seed": seed}.items():
                trial.set_user_attr(name, value)
            self.study.tell(trial, result["accuracy"])
        except UpdateFinishedTrialError:
            return False
        return True


def run_jobs(store: JobStore, jobs: dict[str, tuple[dict, int]], run_job, on_start=None, on_result=None,
             on_wait=None) -> tuple[dict[str, dict], int]:
    """Run (or wait for other workers to run) every job; returns each job's stored result and how many
    this worker ran. A store that stops answering ends the work with StoreError: what it holds is kept,
    and the same command resumes once it is back."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return claim_and_run(store, jobs, run_job, on_start, on_result, on_wait)
    except (SQLAlchemyError, StorageInternalError) as exc:
        where = redact(store.url) if store.url else "(in memory)"
        raise StoreError(redact(f"the store {where} stopped answering ({why(exc)}); the runs it holds are kept: "
                                f"run the same command again when it is back")) from None


def claim_and_run(store: JobStore, jobs, run_job, on_start, on_result, on_wait) -> tuple[dict[str, dict], int]:
    keys, ran, waiting = set(jobs), 0, False
    while True:
        store.fail_stale()
        alive = store.trials()  # one read of the store a turn: what is done, and what is taken
        done = {t.user_attrs["job"]: t.user_attrs for t in alive
                if t.state == TrialState.COMPLETE and t.user_attrs.get("job") in keys}
        if len(done) == len(keys):
            return done, ran
        taken = {t.user_attrs.get("job") for t in alive}
        free = [k for k in jobs if k not in taken]
        if not free:
            if on_wait and not waiting:
                on_wait(len(keys) - len(done))
            waiting = True
            time.sleep(POLL_SECONDS)  # the rest are in flight in other workers
            continue
        waiting = False
        trial = store.claim(free[0])
        if trial is None:
            continue
        point, seed = jobs[free[0]]
        try:  # a signal that comes as the run is announced, what a user reacts to, releases it too
            if on_start:
                on_start(point, seed)
            with Heartbeat(store.storage, store.trial_id(trial)):
                result = run_job(point, seed)
        except BaseException:
            try:  # Ctrl-C, SIGTERM or a crash: release the job so it runs again
                store.study.tell(trial, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass
            raise
        if store.finish(trial, point, seed, result):
            ran += 1
            if on_result:
                on_result(point, seed, result)


def retry_lost_trials(study: optuna.Study, storage) -> list[int]:
    """A search's trials whose worker is gone (a process of this host that no longer exists: at once; a
    worker elsewhere: once its heartbeat has stopped for the grace period) are failed and queued again with
    the same point, so the study still gets them. Of several workers doing this at once, the one whose
    FAIL lands queues the retry. Returns the trial numbers retried."""
    store = JobStore(study, storage)
    stale = stale_trial_ids(storage, store.study_id)
    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        holder = gone(trial.user_attrs.get("worker"))
        if holder is False or (holder is None and store.trial_id(trial) not in stale):
            continue
        try:
            storage.set_trial_state_values(store.trial_id(trial), state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker took it back first, and queued it
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        retried.append(trial.number)
    return retried
