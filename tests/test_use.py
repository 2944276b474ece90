"""Using a trained model: save/load, evaluate, predict from image files, ONNX export, bad model files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fastmnist.use.checkpoint import load_model, save_model
from fastmnist.errors import FastMnistError
from fastmnist.training.nets import NETS, ConvNet
from fastmnist.recipes.overrides import get_recipe
from fastmnist.use.evaluate import error_grid
from fastmnist.training.layout import prepare
from fastmnist.use.evaluate import evaluate_model
from fastmnist.use.export import export_onnx
from fastmnist.use.predict import predict_files, to_mnist_format
from tests.conftest import in_process, one_run, run_cli


@pytest.fixture(scope="module")
def trained(small_mnist, tmp_path_factory):
    recipe = get_recipe("stage8")
    result = one_run(recipe, prepare(small_mnist, recipe, torch.device("cpu")), seed=0)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save_model(path, result.model, {"recipe": recipe.name, "accuracy": result.accuracy})
    return path, result


def test_save_load_evaluate_matches_training(trained, small_mnist):
    path, result = trained
    model, info = load_model(path)
    assert info["recipe"] == "stage8"
    report = evaluate_model(model, small_mnist)
    assert report["accuracy"] == pytest.approx(result.accuracy)
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 2000 and confusion.trace() == round(result.accuracy * 20)
    assert len(report["per_class"]) == 10 and all(0 <= a <= 100 for a in report["per_class"])


def test_a_whitened_model_keeps_its_filters_through_save_and_load(small_mnist, tmp_path):
    recipe = get_recipe("stage16")
    result = one_run(recipe, prepare(small_mnist, recipe, torch.device("cpu")), seed=0)
    save_model(tmp_path / "w.safetensors", result.model, {"recipe": recipe.name})
    model, _ = load_model(tmp_path / "w.safetensors")
    assert torch.equal(model.conv1.weight, result.model.conv1.weight) and not model.conv1.weight.requires_grad
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(model(x), result.model.eval().float()(x.contiguous()), atol=1e-5)


def test_error_grid(trained, small_mnist, tmp_path):
    model, _ = load_model(trained[0])
    report = evaluate_model(model, small_mnist)
    count = error_grid(small_mnist.test_images, small_mnist.test_labels, report["predicted"], tmp_path / "errors.png")
    assert count == int((report["predicted"] != small_mnist.test_labels).sum()) > 0
    with Image.open(tmp_path / "errors.png") as picture:
        assert picture.size[0] > 100


def render(digit: np.ndarray, size, shift=(0, 0), invert=False) -> Image.Image:
    """The digit drawn larger on a bigger canvas, moved off-centre, optionally dark on light."""
    canvas = np.zeros((size[1], size[0]), np.uint8)
    big = np.asarray(Image.fromarray(digit).resize((size[0] // 2, size[1] // 2), Image.BICUBIC))
    top, left = size[1] // 4 + shift[0], size[0] // 4 + shift[1]
    canvas[top:top + big.shape[0], left:left + big.shape[1]] = big
    return Image.fromarray(255 - canvas if invert else canvas)


def test_predict_is_invariant_to_shift_scale_and_polarity(trained, small_mnist, tmp_path):
    model, _ = load_model(trained[0])
    reference = evaluate_model(model, small_mnist)["predicted"]
    agree = 0
    for index in range(20):
        digit = small_mnist.test_images[index]
        paths = []
        for k, (size, shift, invert) in enumerate([((28, 28), (0, 0), False), ((200, 140), (10, -20), True),
                                                   ((90, 120), (-8, 5), False)]):
            path = tmp_path / f"{index}-{k}.png"
            (Image.fromarray(digit) if k == 0 else render(digit, size, shift, invert)).save(path)
            paths.append(str(path))
        digits = [r["digit"] for r in predict_files(model, paths)]
        agree += len(set(digits)) == 1 and digits[0] == reference[index]
    assert agree >= 16  # resampling may flip a borderline digit (this small model: 17-20 agree); a broken
    # pipeline agrees by chance, about 2 in 20


def test_mnist_format_recentres_a_shifted_digit(small_mnist, tmp_path):
    digit = small_mnist.test_images[0]
    for name, (top, left) in (("centred", (6, 6)), ("corner", (12, 1))):
        canvas = np.zeros((40, 40), np.uint8)
        canvas[top:top + 28, left:left + 28] = digit
        Image.fromarray(canvas).save(tmp_path / f"{name}.png")
    (a, _), (b, _) = to_mnist_format(tmp_path / "corner.png"), to_mnist_format(tmp_path / "centred.png")
    assert np.array_equal(a, b)  # same ink, same crop: where it sat on the page does not matter
    ys, xs = np.indices(a.shape)
    assert abs((ys * a).sum() / a.sum() - 14) < 1 and abs((xs * a).sum() / a.sum() - 14) < 1


def test_predict_reports_bad_files_and_continues(trained, small_mnist, tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    Image.fromarray(small_mnist.test_images[1]).save(tmp_path / "ok.png")
    proc = run_cli("predict", str(trained[0]), str(tmp_path / "text.png"), str(tmp_path / "blank.png"),
                     str(tmp_path / "ok.png"), "--json", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    records = json.loads(proc.stdout)
    assert "not a readable image" in records[0]["error"] and "empty image" in records[1]["error"]
    assert records[2]["digit"] == small_mnist.test_labels[1] and 0 < records[2]["probability"] <= 1


def test_bad_model_files_are_refused(trained, tmp_path):
    """Truncated, of another architecture, not fastmnist's, missing, with broken metadata or a wrong shape."""
    blob = trained[0].read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FastMnistError, match="truncated or corrupt"):
        load_model(tmp_path / "truncated.safetensors")
    model, _ = load_model(trained[0])
    tensors = {k: v for k, v in model.state_dict().items()}
    save_file(tensors, tmp_path / "other.safetensors",
              metadata={"format": "fastmnist", "net": NETS["A"].to_json(), "info": "{}"})
    with pytest.raises(FastMnistError, match="do not match the architecture"):
        load_model(tmp_path / "other.safetensors")
    save_file(tensors, tmp_path / "plain.safetensors")
    with pytest.raises(FastMnistError, match="not a fastmnist model"):
        load_model(tmp_path / "plain.safetensors")
    with pytest.raises(FastMnistError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")
    proc = run_cli("evaluate", str(tmp_path / "truncated.safetensors"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("fastmnist: error:") and "Traceback" not in proc.stderr
    model = ConvNet(NETS["D"])
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, tmp_path / "info.safetensors",
              metadata={"format": "fastmnist", "net": NETS["D"].to_json(), "info": "{not json"})
    with pytest.raises(FastMnistError, match="metadata is not valid fastmnist JSON"):
        load_model(tmp_path / "info.safetensors")
    tensors["fc1.weight"] = torch.zeros(128, 800)
    save_file(tensors, tmp_path / "shape.safetensors",
              metadata={"format": "fastmnist", "net": NETS["D"].to_json(), "info": "{}"})
    with pytest.raises(FastMnistError, match=r"fc1.weight is \(128, 800\), expected \(256, 800\)"):
        load_model(tmp_path / "shape.safetensors")


def test_onnx_round_trip(trained, small_mnist, tmp_path):
    model, _ = load_model(trained[0])
    blob, check = export_onnx(model, small_mnist)
    assert check["same_predictions"] == check["images"] == 2000
    assert check["max_abs_diff"] < 1e-3
    import onnx

    graph = onnx.load_from_string(blob).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["log_probs"]


def test_export_command_writes_a_checked_onnx_file(trained, real_mnist, tmp_path):
    out = tmp_path / "m.onnx"
    proc = run_cli("export", str(trained[0]), "--onnx", str(out), "--data-dir", real_mnist.source,
                     env={"FASTMNIST_CACHE": str(tmp_path / "cache")})
    assert "10000 same predictions" in proc.stdout
    assert out.stat().st_size > 1000 and not list(tmp_path.glob("*.tmp"))


def test_predict_large_and_transparent_images(monkeypatch, small_mnist, tmp_path):
    model = ConvNet(NETS["D"]).eval()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above this and refuses above twice it
    Image.new("L", (100, 100)).save(tmp_path / "huge.png")  # 10x the limit: PIL's DecompressionBombError
    Image.new("L", (40, 40)).save(tmp_path / "big.png")  # 1.6x: PIL's DecompressionBombWarning
    Image.fromarray(small_mnist.test_images[0]).save(tmp_path / "ok.png")
    records = predict_files(model, [str(tmp_path / n) for n in ("huge.png", "big.png", "ok.png")])
    assert "image too large" in records[0]["error"] and "image too large" in records[1]["error"]
    assert "digit" in records[2]  # the other files are still predicted
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    rgba = np.zeros((28, 28, 4), np.uint8)  # black ink, transparent everywhere else
    rgba[..., 3] = small_mnist.test_images[0]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    grey = Image.fromarray(255 - small_mnist.test_images[0])  # the same digit, dark on white
    grey.save(tmp_path / "paper.png")
    a, b = predict_files(model, [str(tmp_path / "transparent.png"), str(tmp_path / "paper.png")])
    assert "error" not in a and a["digit"] == b["digit"]


def test_non_finite_weights_are_never_saved_or_used(tmp_path):
    model = ConvNet(NETS["D"])
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(FastMnistError, match="NaN/inf .*fc2.weight"):
        save_model(tmp_path / "nan.safetensors", model, {})
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, tmp_path / "nan.safetensors",
              metadata={"format": "fastmnist", "net": NETS["D"].to_json(), "info": "{}"})
    with pytest.raises(FastMnistError, match="NaN/inf"):
        load_model(tmp_path / "nan.safetensors")


def test_evaluate_json_rounds_accuracy(data_env, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m.safetensors"
    in_process(["train", "--set", "train_fraction=0.03", "--no-warmup", "--save", str(model)], data_env, monkeypatch,
               capsys)
    record = json.loads(in_process(["evaluate", str(model), "--json"], data_env, monkeypatch, capsys).stdout)
    assert record["accuracy"] == round(record["accuracy"], 4)
    assert len(repr(record["accuracy"])) <= 8


def digit_seven(small_mnist) -> np.ndarray:
    return small_mnist.test_images[0]  # the first test digit is a 7


def images_in_every_mode(seven: np.ndarray, folder) -> dict[str, str]:
    ink = seven.astype(np.float64) / 255
    paper = 1 - ink  # dark digit on white, as people draw them
    made = {
        "I;16": Image.fromarray((paper * 65535).astype(np.uint16)),  # 16-bit greyscale PNG
        "I": Image.fromarray((paper * 65535).astype(np.int32), mode="I"),
        "F": Image.fromarray(paper.astype(np.float32), mode="F"),
        "LA": Image.fromarray(np.stack([np.zeros_like(seven), seven], -1), mode="LA"),  # black ink, alpha
        "P": Image.fromarray((paper * 255).astype(np.uint8)).convert("P"),
        "1": Image.fromarray(paper > 0.5),
        "CMYK": Image.fromarray((paper * 255).astype(np.uint8)).convert("CMYK"),
        "RGB": Image.fromarray((paper * 255).astype(np.uint8)).convert("RGB"),
    }
    paths = {}
    for mode, image in made.items():
        path = folder / f"seven-{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'tiff' if mode in ('F', 'I') else 'png'}"
        image.resize((84, 84), Image.NEAREST).save(path)
        paths[mode] = str(path)
    transparent = Image.fromarray((paper * 255).astype(np.uint8)).convert("P")
    transparent.info["transparency"] = 255
    transparent.resize((84, 84)).save(folder / "seven-Ptransparent.png", transparency=255)
    paths["P+transparency"] = str(folder / "seven-Ptransparent.png")
    return paths


def test_predict_reads_a_digit_in_every_pillow_mode(trained, small_mnist, tmp_path):
    paths = images_in_every_mode(digit_seven(small_mnist), tmp_path)
    assert Image.open(paths["I;16"]).mode.startswith("I")  # Pillow reads the 16-bit PNG as I;16 (or I)
    records = predict_files(trained[1].model, list(paths.values()))
    assert {mode: r.get("digit", r.get("error")) for mode, r in zip(paths, records)} == {m: 7 for m in paths}


def test_a_multi_page_tiff_says_which_page_was_used(trained, small_mnist, tmp_path):
    pages = [Image.fromarray(255 - digit_seven(small_mnist)), Image.fromarray(255 - small_mnist.test_images[1])]
    pages[0].save(tmp_path / "two.tiff", save_all=True, append_images=pages[1:])
    [record] = predict_files(trained[1].model, [str(tmp_path / "two.tiff")])
    assert record["digit"] == 7 and record["note"] == "2 pages: used the first"


def test_export_without_onnx_says_how_to_install_it_from_a_checkout(monkeypatch, small_mnist, trained):
    import builtins

    from fastmnist.errors import FastMnistError
    from fastmnist.use.export import export_onnx

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnxruntime" else real_import(name, *a, **k))
    with pytest.raises(FastMnistError, match=r"pip install -e '\.\[onnx\]' in a checkout"):
        export_onnx(trained[1].model, small_mnist)


def test_predict_takes_a_folder_and_reduces_a_large_image_while_decoding(trained, small_mnist, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(small_mnist.test_images[index]).save(folder / f"{index}.png")
    Image.fromarray(small_mnist.test_images[0]).resize((4000, 3000)).save(folder / "large.png")
    (tmp_path / "empty").mkdir()
    records = predict_files(trained[1].model, [str(folder), str(tmp_path / "empty")])
    assert [Path(r["file"]).name for r in records] == ["0.png", "1.png", "large.png", "empty"]
    assert all("digit" in r for r in records[:3]) and records[2]["digit"] == records[0]["digit"]
    assert records[2]["note"] == "4000x3000 pixels: reduced to 1024x768 first"
    assert records[3]["error"].endswith("an empty folder, no images in it")


def test_predict_from_the_command_line_reads_a_folder(trained, small_mnist, tmp_path, monkeypatch, capsys):
    Image.fromarray(small_mnist.test_images[0]).save(tmp_path / "a.png")
    result = in_process(["predict", str(trained[0]), str(tmp_path)], {}, monkeypatch, capsys)
    assert result.returncode == 0 and result.stdout.startswith(f"{tmp_path / 'a.png'}: ")
