"""The Python API and users' own recipes and networks: the documented example, files, factories, FLOPs,
and the checks the API makes before it loads anything."""

import re
import subprocess
from pathlib import Path

import pytest
import torch

import fastmnist
from fastmnist.use.checkpoint import load_model, save_model
from fastmnist.cli.main import main as cli_main
from fastmnist.errors import FastMnistError
from fastmnist.training.nets import NETS, flops_per_image
from fastmnist.recipes.overrides import get_recipe
from fastmnist.training.layout import prepare
from tests.conftest import assert_one_line_error, in_process

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "residual.py"


def documented_python_example() -> str:
    text = (ROOT / "docs" / "python-api.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_documented_python_example_runs(real_mnist, monkeypatch, capsys):
    monkeypatch.setenv("FASTMNIST_DATA", real_mnist.source)
    namespace = {}
    exec(compile(documented_python_example(), "docs/python-api.md", "exec"), namespace)  # noqa: S102 - our docs
    result, report = namespace["result"], namespace["report"]
    assert 90.0 < result.accuracy <= 100.0 and result.seconds > 0
    assert isinstance(result.model, torch.nn.Module)
    assert [row["recipe"] for row in report["summary"]] == [fastmnist.recipe("fastest").name, "fastest-lr02"]
    assert "ratio" in capsys.readouterr().out  # it printed the table


def test_user_file_recipe_with_its_own_network(small_mnist, tmp_path):
    recipe = fastmnist.recipe(f"{EXAMPLE}:residual")
    assert recipe.parent == "stage14" and callable(recipe.net)
    longer = fastmnist.derive(recipe, "residual-3", "three epochs of the slice", epochs=3)
    result = fastmnist.train(longer, seed=0, mnist=small_mnist, warmup=False)
    assert result.accuracy > 75.0 and not result.diverged  # 36 steps of batch 512 on 6k images
    path = tmp_path / "residual.safetensors"
    save_model(path, result.model, {"recipe": recipe.name}, recipe.net)
    model, info = load_model(path)
    assert info["recipe"] == "residual" and type(model).__name__ == "ResidualNet"
    x = torch.zeros(3, 1, 28, 28)
    assert torch.allclose(model(x), result.model.eval().cpu().float()(x.contiguous()), atol=1e-5)


class MeanImageNet(torch.nn.Module):
    """A user's network with a data-dependent initialisation: its bias starts at the mean training image."""
    def __init__(self):
        super().__init__()
        self.mean_image = torch.nn.Parameter(torch.zeros(1, 1, 28, 28), requires_grad=False)
        self.linear = torch.nn.Linear(28 * 28, 10)
        self.seen = None

    def init_from_data(self, images):
        self.seen = tuple(images.shape)
        self.mean_image.copy_(images.mean(0, keepdim=True))

    def forward(self, x):
        return self.linear((x - self.mean_image).flatten(1))


def test_a_user_network_gets_init_from_data_inside_the_run(small_mnist):
    recipe = fastmnist.derive(fastmnist.recipe("stage14"), "mean-image", "a linear model", net=MeanImageNet,
                              train_fraction=0.5)
    result = fastmnist.train(recipe, seed=0, mnist=small_mnist, warmup=False)
    assert result.model.seen == (1000, 1, 28, 28)
    first_images = prepare(small_mnist, recipe, torch.device("cpu")).train[0][:1000]
    assert torch.allclose(result.model.mean_image.cpu(), first_images.mean(0, keepdim=True), atol=1e-6)
    assert not result.diverged and result.accuracy > 50.0


def test_flops_are_counted_by_pytorch_for_any_network():
    train, infer = flops_per_image(get_recipe(f"{EXAMPLE}:residual").net)
    # by hand: conv1 12*12*16*25, conv2 12*12*16*16*9, fc 576*128 + 128*10 multiply-adds, 2 FLOPs each
    assert infer == 2 * (12 * 12 * 16 * 25 + 12 * 12 * 16 * 16 * 9 + 576 * 128 + 128 * 10)
    assert train == 3 * infer - 2 * 12 * 12 * 16 * 25  # conv1's input gradient is not computed
    assert flops_per_image(NETS["D"])[1] == 2 * (345600 + 691200 + 204800 + 2560)  # today's stage 8 figure


def write(tmp_path, body: str) -> str:
    path = tmp_path / "mine.py"
    path.write_text("import fastmnist\nfrom torch import nn\n" + body)
    return str(path)


@pytest.mark.parametrize("body, name, fragment", [
    ("", "missing.py:x", "no such file"),
    ("x = 1\n", "mine.py:nope", "has no 'nope' (it defines: fastmnist, nn, x)"),
    ("x = 1\n", "mine.py:x", "is a int, not a fastmnist Recipe"),
    ("raise ValueError('boom')\n", "mine.py:x", "importing it failed: ValueError: boom"),
    ("def f():\n    raise RuntimeError('no')\nr = fastmnist.derive(fastmnist.recipe('stage14'), 'r', 's', net=f)\n",
     "mine.py:r", "network factory mine.py:f raised RuntimeError: no"),
    ("def f():\n    return 3\nr = fastmnist.derive(fastmnist.recipe('stage14'), 'r', 's', net=f)\n",
     "mine.py:r", "returned a int, not a torch.nn.Module"),
    ("def f():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))\n"
     "r = fastmnist.derive(fastmnist.recipe('stage14'), 'r', 's', net=f)\n", "mine.py:r", "to (2, 7), expected 2 x 10"),
])
def test_bad_user_files_are_one_line_before_any_run(body, name, fragment, tmp_path, real_mnist, monkeypatch,
                                                   capsys):
    write(tmp_path, body)
    monkeypatch.setenv("FASTMNIST_DATA", real_mnist.source)
    code = cli_main(["bench", "stage14", str(tmp_path / name), "--runs", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert_one_line_error(subprocess.CompletedProcess([], code, out, err), fragment)
    assert "runs" not in out  # nothing was run


def test_net_fields_cannot_be_set_on_a_user_network():
    recipe = get_recipe(f"{EXAMPLE}:residual")
    with pytest.raises(FastMnistError, match="field of fastmnist's own network"):
        get_recipe(f"{EXAMPLE}:residual[conv1=8]")
    assert get_recipe(f"{EXAMPLE}:residual[lr=0.03]").lr == 0.03 and recipe.lr == 0.02


def test_example_benches_from_the_command_line(real_mnist, tmp_path, monkeypatch, capsys):
    proc = in_process(["bench", "stage14", f"{EXAMPLE}:residual", "--runs", "1", "--set", "train_fraction=0.03",
                       "--quiet", "--data-dir", real_mnist.source], {"FASTMNIST_CACHE": str(tmp_path / "cache")},
                      monkeypatch, capsys)
    assert proc.returncode == 0 and "residual[train_fraction=0.03]" in proc.stdout


def test_python_sweep_returns_the_cli_report(small_mnist):
    report = fastmnist.sweep("stage14[train_fraction=0.5]", {"lr": [0.02, 0.04]}, runs=2, mnist=small_mnist)
    assert report["kind"] == "sweep" and report["best"]["lr"] in (0.02, 0.04)
    [phase] = report["phases"]
    assert [p["value"] for p in phase["points"]] == [0.02, 0.04] and all(p["runs"] == 2 for p in phase["points"])
    assert report["runs_run_here"] == 4 and "p vs kept" in report.table()


def test_python_ladder_writes_what_the_cli_writes(small_mnist, tmp_path):
    report = fastmnist.ladder("18", runs=1, out=tmp_path / "ladder", mnist=small_mnist, device="cpu")
    assert report["kind"] == "ladder" and list(report["stages"]) == ["stage18"]
    assert {p.name for p in (tmp_path / "ladder").iterdir()} == {"ladder.json", "ladder.md", "ladder.png"}
    assert "| stage18 |" in report.table()


@pytest.mark.parametrize("call, fragment", [
    (lambda: fastmnist.bench(["stage14"], runs=0), "runs=0: must be at least 1"),
    (lambda: fastmnist.bench(["stage14"], runs=-1), "runs=-1: must be at least 1"),
    (lambda: fastmnist.bench(["stage14"], runs=2.5), "runs=2.5: expected an integer"),
    (lambda: fastmnist.bench(["stage14"], seeds="5-1"), "range 5-1 is reversed"),
    (lambda: fastmnist.bench(["stage14"], seeds=[1, 1]), "listed twice"),
    (lambda: fastmnist.bench([3]), "3: not a recipe"),
    (lambda: fastmnist.train("stage14", seed="a"), "seed='a': expected an integer"),
    (lambda: fastmnist.train("stage14", seed=-1), "seed=-1: must be at least 0"),
    (lambda: fastmnist.train("stage14", seed=1.5), "seed=1.5: expected an integer"),
    (lambda: fastmnist.train("stage14", seed=2 ** 70), "too large (at most 9223372036854775807)"),
    (lambda: fastmnist.sweep("stage14", {"lr": [0.01]}, runs=0), "runs=0: must be at least 1"),
    (lambda: fastmnist.ladder("14", runs=1, first_seed=-3), "first_seed=-3: must be at least 0"),
])
def test_the_api_checks_what_the_cli_checks_before_loading_anything(call, fragment, monkeypatch):
    monkeypatch.setattr("fastmnist.data.load_mnist", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(FastMnistError) as raised:
        call()
    assert fragment in str(raised.value)


def test_one_recipe_name_is_one_recipe(small_mnist):
    report = fastmnist.bench("stage14[train_fraction=0.02]", runs=1, mnist=small_mnist, device="cpu")
    assert [row["recipe"] for row in report["summary"]] == ["stage14[train_fraction=0.02]"]
