"""Each ladder stage against docs/ladder.md, and the recipe machinery (derive, diff, overrides)."""

import dataclasses

import pytest
import torch

from fastmnist.errors import FastMnistError
from fastmnist.experiments.ladder import parse_stages
from fastmnist.training.nets import NETS, ConvNet, NetSpec, check_net, flops_per_image, net_name, whitening_filters
from fastmnist.recipes.overrides import get_recipe, parse_param, with_overrides
from fastmnist.recipes.recipe import derive, describe_changes
from fastmnist.recipes.stages import FASTEST_BY_PRECISION, LADDER, RECIPES, fastest_name

# docs/ladder.md, one row a stage: net, data path, batch, optimiser, lr, schedule, epochs, early stop,
# floor batches (drop_last), test batch
SPEC = {
    "stage0": ("A", "dataloader", 64, "adadelta", 1.0, "step", 14, False, False, 1000),
    "stage1": ("A", "dataloader", 64, "adadelta", 1.0, "step", 14, True, False, 1000),
    "stage2": ("B", "dataloader", 64, "adadelta", 1.0, "step", 14, True, False, 1000),
    "stage3": ("B", "memory", 64, "adadelta", 1.0, "step", 14, True, True, 1000),
    "stage4": ("B", "memory", 128, "adadelta", 1.0, "step", 14, True, True, 1000),
    "stage5": ("B", "memory", 128, "adadelta", 4.0, "onecycle", 2, False, False, 1000),
    "stage6": ("B", "memory", 256, "adadelta", 4.0, "onecycle", 2, False, False, 1000),
    "stage7": ("C", "memory", 256, "adadelta", 4.0, "onecycle", 2, False, False, 1000),
    "stage8": ("D", "memory", 256, "adam", 0.01, "onecycle", 1, False, False, 2000),
}
# parameter counts from the layer shapes in docs/ladder.md (weights + biases)
PARAMS = {"A": 320 + 18496 + 1179776 + 1290, "B": 320 + 18496 + 204928 + 1290,
          "C": 240 + 6944 + 102528 + 1290, "D": 624 + 6944 + 205056 + 2570}


@pytest.mark.parametrize("name", SPEC)
def test_stage_matches_ladder(name):
    r = RECIPES[name]
    net, path, batch, optimizer, lr, schedule, epochs, early, floor, test_batch = SPEC[name]
    assert r.net == NETS[net]
    assert (r.data_path, r.batch_size, r.optimizer, r.lr, r.schedule, r.epochs, r.early_stop, r.drop_last,
            r.test_batch_size) == (path, batch, optimizer, lr, schedule, epochs, early, floor, test_batch)
    assert r.eval_every_epoch and r.train_fraction == 1.0 and r.label_smoothing == 0.0
    assert r.precision == "fp32" and not r.channels_last and not r.compile
    assert r.gamma == 0.7 and r.pct_start == 0.3
    if optimizer == "adam":
        assert (r.beta1, r.beta2) == (0.7, 0.9)


@pytest.mark.parametrize("net", PARAMS)
def test_network_parameter_counts_and_shapes(net):
    model = ConvNet(NETS[net])
    assert sum(p.numel() for p in model.parameters()) == PARAMS[net]
    out = model(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(3))  # log-probabilities


def test_net_layers_as_ladder_says():
    a, d = ConvNet(NETS["A"]), ConvNet(NETS["D"])
    assert isinstance(a.dropout1, torch.nn.Dropout2d) and isinstance(a.dropout2, torch.nn.Dropout)
    assert d.conv1.kernel_size == (5, 5) and d.fc1.in_features == 800 and d.fc1.out_features == 256
    assert isinstance(ConvNet(NETS["C"]).dropout2, torch.nn.Identity)


def test_net_a_has_no_relu_after_conv2():
    """The original's net A: conv2 -> max_pool2d -> dropout, so negative pooled values reach fc1."""
    torch.manual_seed(0)
    net = ConvNet(NETS["A"]).eval()
    x = torch.randn(2, 1, 28, 28)
    conv2 = torch.nn.functional.max_pool2d(net.conv2(torch.relu(net.conv1(x))), 2)
    expected = net.fc2(torch.relu(net.fc1(torch.flatten(conv2, 1)))).log_softmax(1)
    assert (conv2 < 0).any()  # so a ReLU there would change the function
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_pool_before_relu_is_the_same_function():
    torch.manual_seed(0)
    before = ConvNet(NETS["D"])
    after = ConvNet(NETS["D"].__class__(**{**NETS["D"].__dict__, "pool_before_relu": False}))
    after.load_state_dict(before.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(before(x), after(x), atol=1e-6)


def test_hwc_features_is_fc1_with_its_columns_permuted():
    """Stage 21 reads the pooled maps in (row, column, channel) order: the network stage 20 would be with
    fc1's input columns reordered, so the same family, and the same function once the weights are moved."""
    torch.manual_seed(0)
    chw = ConvNet(RECIPES["stage20"].net).eval()
    hwc = ConvNet(dataclasses.replace(RECIPES["stage20"].net, hwc_features=True)).eval()
    state = chw.state_dict()
    channels, side = chw.spec.conv2, chw.spec.sides()[1] // 2
    state["fc1.weight"] = state["fc1.weight"].view(-1, channels, side, side).permute(0, 2, 3, 1).flatten(1)
    hwc.load_state_dict(state)
    x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(chw(x), hwc(x), atol=1e-5)
    assert not torch.allclose(chw(x), ConvNet(hwc.spec).eval().requires_grad_(False)(x))  # weights matter
    maps = torch.randn(2, channels, side, side).contiguous(memory_format=torch.channels_last)
    assert hwc.features(maps).data_ptr() == maps.data_ptr()  # a view of the maps: no copy


def test_inplace_relu_changes_no_output_and_no_gradient():
    torch.manual_seed(0)
    spec = dataclasses.replace(RECIPES["stage20"].net, hwc_features=True)
    plain, inplace = ConvNet(spec), ConvNet(dataclasses.replace(spec, inplace_relu=True))
    inplace.load_state_dict(plain.state_dict())
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for net in (plain, inplace):
        torch.nn.functional.nll_loss(net(x), y).backward()
    assert torch.equal(plain(x), inplace(x))
    for (name, a), b in zip(plain.named_parameters(), inplace.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or torch.equal(a.grad, b.grad), name


def hand_counted_flops(spec) -> tuple[int, int]:
    """The formula fastmnist used before counting with PyTorch: multiply-adds of each conv and linear
    layer from the shapes; training = forward + twice the forward for the backward, less conv1's input
    gradient, which no one needs. Element-wise layers (ReLU, pooling, BatchNorm) count zero in both."""
    side1 = (28 - spec.kernel1) // spec.stride1 + 1
    side2 = ((side1 // 2 if spec.pool1 else side1) - spec.kernel2) // spec.stride2 + 1
    macs = {"conv1": side1 ** 2 * spec.conv1 * spec.kernel1 ** 2,
            "conv2": side2 ** 2 * spec.conv2 * spec.conv1 * spec.kernel2 ** 2,
            "fc1": spec.feature_size() * spec.fc, "fc2": spec.fc * 10}
    forward = 2 * sum(macs.values())
    if spec.whiten1:  # conv1 is not learned: no gradient for its weights, nor for conv2's input
        return 3 * forward - 4 * macs["conv1"] - 2 * macs["conv2"], forward
    return 3 * forward - 2 * macs["conv1"], forward


@pytest.mark.parametrize("name", ["stage0", "stage2", "stage7", "stage8", "stage12", "stage14", "stage16"])
def test_pytorch_flop_count_agrees_with_the_hand_formula(name):
    assert flops_per_image(RECIPES[name].net) == hand_counted_flops(RECIPES[name].net)


def test_a_stride_2_conv2_without_its_pool_computes_the_pooled_grid():
    """conv2 4x4 stride 2 over 12 x 12 maps: the 5 x 5 grid conv2 3x3 and its 2x2 pool give, a quarter of the
    positions computed and no pool (probed on AMX: no faster, results in docs/speedrun.md)."""
    spec = dataclasses.replace(RECIPES["stage18"].net, conv2=32, kernel2=4, stride2=2, pool2=False)
    assert spec.sides() == (12, 5) and spec.feature_size() == 32 * 25 and not spec.problems()
    model = ConvNet(spec)
    assert model.conv2.stride == (2, 2) and tuple(model(torch.zeros(3, 1, 28, 28)).shape) == (3, 10)
    assert flops_per_image(spec) == hand_counted_flops(spec)
    assert get_recipe("stage18[conv2=32,kernel2=4,stride2=2,pool2=false]").net == spec
    assert net_name(spec) == "24k5s2w/32k4s2n/fc128+BN"  # reports tell it from stage 18's 24k5s2w/16k3/fc128+BN


def test_ladder_is_data_each_stage_one_named_change():
    assert describe_changes(RECIPES["stage3"], RECIPES["stage4"]) == ["batch_size 64 -> 128"]
    assert any(line.startswith("net B -> C") for line in describe_changes(RECIPES["stage6"], RECIPES["stage7"]))
    for parent, child in zip(LADDER, LADDER[1:]):
        assert child.parent == parent.name  # each stage builds on the one before it
        assert describe_changes(parent, child), child.name  # and changes something


def test_derive_records_only_real_changes():
    child = derive(RECIPES["stage8"], "x", "same lr, new batch", lr=0.01, batch_size=512)
    assert child.changes == ("batch_size",) and child.batch_size == 512
    assert describe_changes(RECIPES["stage8"], child) == ["batch_size 256 -> 512"]


@pytest.mark.parametrize("precision, claims_folder", [("bf16", "claims"), ("fp32", "claims-avx2")])
def test_fastest_is_a_stage_the_committed_evidence_claims(precision, claims_folder):
    """`fastest` moves only under the replication rule, for each precision a step runs in: its definition is
    claimed in the pooled claims of a CPU of that class (>= 100 unused seeds, p < 0.01, >= 95% replication),
    and no later stage that is claimed there is left out."""
    import json
    from pathlib import Path

    from fastmnist.experiments.ledger import definition

    name = FASTEST_BY_PRECISION[precision]
    pooled = json.loads((Path(__file__).parents[1] / "results" / claims_folder / "pooled.json").read_text())
    claims = {row["definition"]: row["claim"] for row in pooled["rows"]}
    assert claims[definition(get_recipe(name))] == "claimed"
    later = [r for r in LADDER[[s.name for s in LADDER].index(name) + 1:] if definition(r) in claims]
    assert all(claims[definition(r)] != "claimed" for r in later)
    measured_unclaimed = {"bf16": ["stage22", "stage24", "stage26"], "fp32": []}[precision]
    assert all(claims[definition(get_recipe(n))] != "claimed" for n in measured_unclaimed)


def test_fastest_names_the_stage_of_the_precision_a_step_runs_in_here():
    from fastmnist.recipes.recipes import listing
    from fastmnist.training.device import native_bf16, pick_device

    assert fastest_name() == FASTEST_BY_PRECISION["bf16" if native_bf16(pick_device()) else "fp32"]
    assert get_recipe("fastest") is get_recipe(fastest_name())
    assert "(= fastest)" in "\n".join(line for line in listing() if line.startswith(f"{fastest_name()} "))
    with pytest.raises(FastMnistError, match="unknown recipe"):
        get_recipe("stage99")


def test_overrides_parse_and_validate():
    r = with_overrides(get_recipe("stage8"), ["lr=0.02", "conv1=16", "channels_last=true", "optimizer=sgd"])
    assert (r.lr, r.net.conv1, r.channels_last, r.optimizer) == (0.02, 16, True, "sgd")
    assert r.name == "stage8[lr=0.02,conv1=16,channels_last=True,optimizer=sgd]"
    for bad, message in [("lr", "x"), ("batch_size", "0"), ("optimizer", "lion"), ("nope", "1"),
                         ("channels_last", "maybe"), ("train_fraction", "1.5")]:
        with pytest.raises(FastMnistError):
            parse_param(get_recipe("stage8"), bad, message)
    assert parse_param(get_recipe("stage8"), "weight_decay", "0") == 0.0


def test_recipe_names_with_overrides_round_trip():
    r = get_recipe("stage8[lr=0.02,conv1=16]")
    assert (r.lr, r.net.conv1, r.parent) == (0.02, 16, "stage8")
    assert get_recipe(r.name) == r
    assert get_recipe("fastest[epochs=2]").epochs == 2
    with pytest.raises(FastMnistError, match="unknown parameter"):
        get_recipe("stage8[nope=1]")


def test_parse_stages():
    assert [r.name for r in parse_stages("0-2,8")] == ["stage0", "stage1", "stage2", "stage8"]
    assert parse_stages("all") == LADDER
    for bad, fragment in (("x", "unknown recipe 'x'"), ("0-99", f"no stage {len(LADDER)}"), ("9-3", "reversed"),
                          ("", "expected e.g."), ("3,", "expected e.g.")):
        with pytest.raises(FastMnistError, match=fragment):
            parse_stages(bad)


def smooth_images(count: int, seed: int = 0) -> torch.Tensor:
    """Random images with correlated neighbouring pixels, as digits have: patches far from white."""
    noise = torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1) * 4 + 0.5


def test_whitening_filters_decorrelate_the_patches():
    images = smooth_images(300)
    filters = whitening_filters(images, pairs=8, kernel=5, stride=2)
    assert filters.shape == (16, 1, 5, 5) and torch.equal(filters[8:], -filters[:8])
    responses = torch.nn.functional.conv2d(images, filters[:8], stride=2).transpose(0, 1).reshape(8, -1)
    covariance = torch.cov(responses)
    assert torch.allclose(covariance, torch.eye(8), atol=0.02)  # unit variance, uncorrelated
    raw = torch.nn.functional.conv2d(images, filters[:8] / filters[:8].flatten(1).norm(dim=1).view(8, 1, 1, 1),
                                     stride=2).transpose(0, 1).reshape(8, -1).var(dim=1)
    assert torch.all(raw[:-1] >= raw[1:])  # strongest direction first


def test_whitened_first_layer_is_not_learned_and_has_no_batchnorm():
    model = ConvNet(RECIPES["stage16"].net)
    assert not model.conv1.weight.requires_grad and model.conv1.bias is None
    assert isinstance(model.bn1, torch.nn.Identity) and isinstance(model.bn2, torch.nn.BatchNorm2d)
    before = model.conv1.weight.clone()
    model.init_from_data(smooth_images(50))
    assert not torch.equal(model.conv1.weight, before) and not model.conv1.weight.requires_grad
    model(smooth_images(4)).sum().backward()
    assert model.conv1.weight.grad is None and model.conv2.weight.grad is not None


def test_init_from_data_leaves_learned_first_layers_alone():
    model = ConvNet(RECIPES["stage15"].net)
    before = model.conv1.weight.clone()
    model.init_from_data(smooth_images(50))
    assert torch.equal(model.conv1.weight, before)


@pytest.mark.parametrize("spec, fragment", [
    (NetSpec(whiten1=True, conv1=23, kernel1=5), "even conv1"),
    (NetSpec(whiten1=True, conv1=60, kernel1=5), "30 whitening directions, and a 5x5 patch has 25"),
    (NetSpec(kernel1=7, stride1=2, pool1=True, kernel2=5), "too small for its 2x2 pool"),
])
def test_impossible_networks_are_refused_before_any_run(spec, fragment):
    assert spec.problems()
    with pytest.raises(FastMnistError, match=fragment):
        check_net(spec)


def test_show_prints_the_fields_that_apply_as_they_run_here_and_the_stage_that_set_them():
    import dataclasses as dc

    import torch

    from fastmnist.recipes.recipes import show_recipe
    from fastmnist.training.nets import NetSpec
    from fastmnist.recipes.recipe import BOOKKEEPING, Recipe, applies

    recipe = get_recipe("stage27")
    text = show_recipe(recipe, torch.device("cpu"))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[4:] if line and not line[0].isspace()}
    for f in [*dc.fields(Recipe), *dc.fields(NetSpec)]:
        if f.name not in BOOKKEEPING | {"net"}:
            assert (f.name in rows) == applies(recipe, f.name), f.name  # named as --set takes it
    assert "momentum" in text.split("not shown, as they change nothing in this recipe: ")[1]  # Adam: no momentum
    assert rows["train_fraction"] == ["1.0", "stage27"] and rows["optimizer"] == ["adam", "stage8"]
    assert rows["backward"] == ["explicit", "stage26"] and rows["conv2"] == ["16", "stage14"]
    assert rows["whiten1"] == ["True", "stage16"] and rows["engine"] == ["explicit", "stage19", "(asked:", "graph)"]
    assert rows["threads"][0] == str(torch.get_num_threads())  # 0 asks for PyTorch's own count: shown as it runs
    assert rows["lr"] == [str(recipe.lr), "stage27"]  # a value longer than the header stays apart from its setter
    assert text.startswith("stage27: ") and "nets.INIT_IMAGES" in text and "layout.ORDER_STREAM" in text
    assert show_recipe(get_recipe("fastest")).startswith(f"{fastest_name()}: ")
    mine = show_recipe(get_recipe("stage14[lr=0.05]"))  # an override is the last setter of what it changes
    assert [line.split() for line in mine.splitlines() if line.startswith("lr ")] == [["lr", "0.05", "stage14[lr=0.05]"]]
