"""Shared fixtures: synthetic IDX files for the data checks, and a slice of real MNIST for training tests."""

import dataclasses
import functools
import gzip
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastmnist.data import FILES, Mnist, load_mnist
from fastmnist.errors import DataError
from fastmnist.experiments.store import open_store

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "mnist"
# a PostgreSQL server for the many-machines tests: .ci/run starts one and sets this
POSTGRES = os.environ.get("FASTMNIST_TEST_POSTGRES", "postgresql+psycopg://fastmnist:pw-ci-4831@localhost/fastmnist")


def new_model(recipe, data, seed: int):
    """A model built from scratch with `seed`, as model creation must reproduce it: PyTorch's default init
    from the seed (on the CPU), moved to the device, its data-dependent init, then its memory layout."""
    import torch

    from fastmnist.training.nets import INIT_IMAGES, build_net

    torch.manual_seed(seed)
    model = build_net(recipe.net).to(data.device)
    if hasattr(model, "init_from_data"):
        model.init_from_data(data.first_train_images(INIT_IMAGES))
    return model.to(memory_format=torch.channels_last) if recipe.channels_last else model


def one_run(recipe, data, seed: int, warmup: bool = False):
    """One run of `recipe` on prepared `data`, through a new engine (`Runner` keeps one per recipe)."""
    from fastmnist.training.engines import make_engine
    from fastmnist.training.trainer import train_run

    engine = make_engine(recipe, data)
    engine.build()
    return train_run(engine, seed, warmup=warmup)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_synthetic(folder: Path, gz: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Four well-formed IDX files of the real shapes (random content, so checksums will not match)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in FILES:
        array = rng.integers(0, 10 if spec.magic == 2049 else 256, size=spec.shape, dtype=np.uint8)
        content = idx_bytes(array, spec.magic)
        path = folder / (spec.stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(content, compresslevel=1) if gz else content)
        arrays[spec.key] = array
    return arrays


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder, so none sees another's (or the user's) cache."""
    monkeypatch.setenv("FASTMNIST_CACHE", str(tmp_path / "cache"))


@functools.cache
def find_real_mnist() -> Mnist:
    """MNIST the way the CLI gets it: $FASTMNIST_DATA, ../shared/mnist, the user cache, else a download."""
    folder = os.environ.get("FASTMNIST_DATA") or (str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None)
    if folder:
        return load_mnist(folder, use_cache=False)
    saved = os.environ.pop("FASTMNIST_CACHE", None)  # the user's own cache, not a test's private one
    try:
        return load_mnist(allow_download=True)
    finally:
        if saved is not None:
            os.environ["FASTMNIST_CACHE"] = saved


def missing_mnist_reason() -> str | None:
    try:
        find_real_mnist()
    except DataError as exc:
        return (f"real MNIST is not available ({exc}). Set FASTMNIST_DATA to a folder with the four files, "
                f"or run once with network access so it is downloaded")
    return None


def pytest_report_header(config):
    """One loud line at the top when the training tests cannot run, so a green run is not mistaken."""
    import torch

    why = missing_mnist_reason()
    cuda = (f"CUDA: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else
            "*** NO CUDA: the CUDA tests (tests/test_engine.py) SKIP; benchmarks/gpu.sh runs them on a GPU machine")
    if why is None:
        return [f"MNIST: {find_real_mnist().source}", cuda]
    return [f"*** MNIST MISSING: the tests that train will {'FAIL (CI)' if os.environ.get('CI') else 'SKIP'}: {why}",
            cuda]


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory) -> Mnist:
    """The real, verified MNIST, whose `source` is a folder of the four files (what FASTMNIST_DATA and
    --data-dir take): found so, or, when it came from the user's cache (a newcomer's machine after the
    README's first line), written out from the verified arrays. In CI a missing copy fails the tests;
    elsewhere they skip, loudly."""
    why = missing_mnist_reason()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    mnist = find_real_mnist()
    if Path(mnist.source).is_dir():
        return mnist
    folder = tmp_path_factory.mktemp("mnist-files")
    for spec in FILES:
        (folder / spec.stem).write_bytes(idx_bytes(getattr(mnist, spec.key), spec.magic))
    return dataclasses.replace(mnist, source=str(folder))


@pytest.fixture(scope="session")
def small_mnist(real_mnist) -> Mnist:
    """6,000 training and 2,000 test images: enough to learn far above chance in seconds."""
    return Mnist(real_mnist.train_images[:6000], real_mnist.train_labels[:6000],
                 real_mnist.test_images[:2000], real_mnist.test_labels[:2000], real_mnist.source, 0.0)


@pytest.fixture()
def data_env(real_mnist, tmp_path) -> dict[str, str]:
    """The environment a CLI run needs: the real MNIST, and a cache of the test's own."""
    return {"FASTMNIST_DATA": real_mnist.source, "FASTMNIST_CACHE": str(tmp_path / "cache")}


def sigint_default() -> None:
    """For a child process the tests interrupt: a shell that starts a job in the background (`bash .ci/run &`)
    leaves SIGINT ignored, the child inherits that, and Python then never raises KeyboardInterrupt. The
    child gets the default disposition back, as it has under a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args, env=None, check=True):
    """`fastmnist ARGS` in a new process, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "fastmnist.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_one_line_error(proc, fragment):
    """Exit 2, no traceback, and one error line naming `fragment`. A warning line (a busy machine's, say) may
    come too: what a test asserts never depends on the load of the machine it runs on."""
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("fastmnist: warning:")]
    assert len(lines) == 1 and lines[0].startswith("fastmnist: error:"), proc.stderr
    assert fragment in lines[0]


def in_process(args, env, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """The CLI's main() in this process (no interpreter and torch to start), as a finished process."""
    import torch

    from fastmnist.cli.main import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    threads = torch.get_num_threads()  # --threads would otherwise stay set for the tests after this one
    try:
        code = main(list(args))
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def postgres_reason() -> str | None:
    try:
        open_store(POSTGRES, "fastmnist-test-probe")
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
        return f"no PostgreSQL at {POSTGRES} ({exc}); set FASTMNIST_TEST_POSTGRES"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    why = postgres_reason()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return POSTGRES


@pytest.fixture()
def env(real_mnist, tmp_path):
    return {**os.environ, "FASTMNIST_DATA": real_mnist.source, "FASTMNIST_CACHE": str(tmp_path / "cache")}
