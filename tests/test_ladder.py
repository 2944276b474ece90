"""`fastmnist ladder`: runs, merging into ladder.json, the Markdown table and the picture."""

import dataclasses
import json

import pytest
import torch
from PIL import Image

from fastmnist.errors import FastMnistError
from fastmnist.experiments.ladder import run_ladder
from fastmnist.recipes.stages import RECIPES
from fastmnist.experiments.ladder import ORIGINAL_GPU_SECONDS, ladder_markdown, write_ladder_report


def test_ladder_runs_merges_and_reports(small_mnist, tmp_path):
    cpu = torch.device("cpu")
    run_ladder([RECIPES["stage8"]], [0, 1], small_mnist, cpu, tmp_path, progress=False)
    report = run_ladder([RECIPES["stage7"]], [0, 1], small_mnist, cpu, tmp_path, progress=False)
    assert list(report["stages"]) == ["stage7", "stage8"]  # stage 8 kept, stages in ladder order
    stored = json.loads((tmp_path / "ladder.json").read_text())
    assert [len(stored["stages"][s]["runs"]) for s in ("stage7", "stage8")] == [2, 2]
    assert stored["stages"]["stage7"]["summary"]["epochs_mean"] == 2.0
    md, png = write_ladder_report(stored, tmp_path)
    table = md.read_text()
    assert "| stage7 | net B -> C" in table and "| stage8 | net C -> D" in table
    assert str(ORIGINAL_GPU_SECONDS["stage8"]) in table and "stale" not in table
    stage = stored["stages"]["stage8"]
    assert stage["provenance"]["fastmnist_version"] and stage["machine"]["vector_isa"]
    assert stage["recipe"]["name"] == "stage8" and stage["summary"]["target"] == 99.0
    with Image.open(png) as picture:
        assert picture.size[0] > 300


def test_changed_definition_is_flagged_stale(small_mnist, tmp_path):
    altered = dataclasses.replace(RECIPES["stage8"], batch_size=512)
    report = run_ladder([altered], [0, 1], small_mnist, torch.device("cpu"), tmp_path, progress=False)
    assert "stale: definition changed since" in ladder_markdown(report)


def test_foreign_ladder_json_is_refused(small_mnist, tmp_path):
    (tmp_path / "ladder.json").write_text("{\"kind\": \"bench\"}")
    with pytest.raises(FastMnistError, match="not a ladder.json"):
        run_ladder([RECIPES["stage8"]], [0], small_mnist, torch.device("cpu"), tmp_path, progress=False)


def test_fields_added_since_a_run_count_as_unchanged_only_at_their_default():
    from fastmnist.experiments.ladder import is_stale
    from fastmnist.results.records import recipe_record

    stored = recipe_record(RECIPES["stage8"])
    del stored["fused_optimizer"]  # a field added later, at its default: the runs still stand
    del stored["net"]["relu2"]
    assert not is_stale("stage8", {"recipe": stored})
    stored_a = recipe_record(RECIPES["stage0"])
    del stored_a["net"]["relu2"]  # net A's runs before relu2 existed had a ReLU there: not today's net A
    assert is_stale("stage0", {"recipe": stored_a})
    assert is_stale("stage8", {"recipe": {**recipe_record(RECIPES["stage8"]), "lr": 0.5}})
