"""The model zoo against the papers' numbers and torchvision's state_dict layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dtrain import models

# torchvision's keys and shapes (written with torchvision 0.29, which cannot be installed here).
GOLDEN = Path(__file__).parents[1] / "golden" / "torchvision_resnet_state_dicts.json"
if not GOLDEN.exists():
    GOLDEN = Path("/work/shared/golden/torchvision_resnet_state_dicts.json")

# The deepest nets take seconds to build and run on one CPU core; the default suite skips them.
HEAVY = {"resnet1202", "plain1202", "resnet1001", "resnet1001_preact", "resnet200", "resnet200_preact"}
# Same graphs as resnet101/152 with the stride moved or the units pre-activated; the default suite
# runs those variants at depth 50.
HEAVY_TWINS = {"resnet101_v1_5", "resnet152_v1_5", "resnet101_preact", "resnet152_preact"}


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in model.state_dict().items()}


# ---- the registry contract ---------------------------------------------------------------------


def test_names_cover_both_papers() -> None:
    expected = {
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152, 200)),
        "plain18", "plain34", "plain50",
        "resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5",
        *(f"resnet{d}_preact" for d in (18, 34, 50, 101, 152, 200)),
        *(f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)),
        *(f"plain{d}" for d in (20, 32, 44, 56, 110, 1202)),
        "resnet110_preact", "resnet164_preact", "resnet1001_preact", "resnet164", "resnet1001",
        "resnet110_1layer", "resnet110_1layer_preact",
    }  # fmt: skip
    assert set(models.names()) == expected
    assert len(models.names()) == len(expected)


@pytest.mark.parametrize(
    "name, family, depth, native_input, paper, classes",
    [
        ("resnet50", "imagenet", 50, 224, "R1", 1000),
        ("resnet200_preact", "imagenet", 200, 224, "R2", 1000),
        ("resnet110", "cifar", 110, 32, "R1", 10),
        ("resnet1001_preact", "cifar", 1001, 32, "R2", 10),
    ],
)
def test_info(name: str, family: str, depth: int, native_input: int, paper: str, classes: int) -> None:
    assert models.info(name) == models.ModelInfo(name, family, depth, native_input, paper, classes)


def test_unknown_model_names_the_closest_names() -> None:
    with pytest.raises(KeyError) as caught:
        models.build("resnet5O")
    assert "resnet50" in str(caught.value) and "resnet5O" in str(caught.value)
    with pytest.raises(ValueError, match="resnet110_preact"):
        models.info("resnet110_preac")


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match="gate_bais.*gate_bias"):
        models.build("resnet20", gate_bais=-6)
    with pytest.raises(ValueError, match="unknown unit 'preact'.*full_preact"):
        models.build("resnet20", unit="preact")
    with pytest.raises(ValueError, match="gate_bias needs shortcut_mode exclusive_gating or shortcut_only_gating"):
        models.build("resnet20", gate_bias=-6)
    with pytest.raises(TypeError, match="'depth' is fixed by the model name 'resnet20'"):
        models.build("resnet20", depth=56)


def test_generic_cifar_builder_takes_any_depth() -> None:
    net = models.build("cifar_resnet", depth=74)  # n = 12
    assert len(net.layer1) == len(net.layer2) == len(net.layer3) == 12
    assert len(models.build("cifar_resnet", depth=29, bottleneck=True).layer3) == 3
    with pytest.raises(ValueError, match=r"6n\+2 \(8, 14, 20"):
        models.cifar_resnet(75)
    with pytest.raises(ValueError, match=r"9n\+2"):
        models.build("cifar_resnet", depth=111, bottleneck=True)
    with pytest.raises(ValueError, match="ImageNet ResNets have depth 18, 34"):
        models.build("imagenet_resnet", depth=42)


def test_num_classes_sets_the_head() -> None:
    assert models.build("resnet164_preact", num_classes=100).fc.out_features == 100  # CIFAR-100
    assert models.build("resnet20").fc.out_features == 10
    assert models.build("resnet18").fc.out_features == 1000


# ---- R1 Table 6 / R2: parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, millions",
    [
        ("resnet20", 0.27),
        ("resnet32", 0.46),
        ("resnet44", 0.66),
        ("resnet56", 0.85),
        ("resnet110", 1.7),
        ("resnet164_preact", 1.7),
        pytest.param("resnet1202", 19.4, marks=pytest.mark.slow),
        pytest.param("resnet1001_preact", 10.2, marks=pytest.mark.slow),
    ],
)
def test_cifar_parameters_match_the_papers(name: str, millions: float) -> None:
    params = models.parameter_count(models.build(name))
    assert params == pytest.approx(millions * 1e6, rel=0.02)


# ---- R1 Table 1: multiply-adds at 224x224 ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, giga",
    [("resnet18", 1.8), ("resnet34", 3.6), ("resnet50", 3.8), ("resnet101", 7.6), ("resnet152", 11.3)],
)
def test_imagenet_multiply_adds_match_r1_table1(name: str, giga: float) -> None:
    _, multiply_adds = models.named_complexity(name)
    assert multiply_adds == pytest.approx(giga * 1e9, rel=0.05)


def test_r1_counts_need_the_stride_on_the_1x1() -> None:
    # Measured: resnet50 3.86e9 (paper 3.8e9), resnet50_v1_5 4.09e9: v1.5 is 7.6% over the paper.
    _, paper_placement = models.named_complexity("resnet50")
    _, v1_5 = models.named_complexity("resnet50_v1_5")
    assert paper_placement == pytest.approx(3.8e9, rel=0.02)
    assert v1_5 > 1.05 * 3.8e9


def test_complexity_counts_the_module_graph_and_leaves_the_model_alone() -> None:
    net = models.build("resnet20")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params, multiply_adds = models.complexity(net, 32)
    assert params == 269722  # the well-known 0.27M of R1 Table 6
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats untouched
    # Counted from shapes, so a 64x64 input costs 4x the convs (the fc stays 64x10).
    assert models.multiply_adds(net, 64) - 640 == 4 * (multiply_adds - 640)


@pytest.mark.parametrize("name, options", [("resnet18", {}), ("resnet110", {"shortcut_mode": "exclusive_gating"})])
def test_multiply_adds_agree_with_torch_flop_counter(name: str, options: dict) -> None:
    # An independent count: torch's dispatcher-level FLOP counter (2 FLOPs per multiply-add).
    from torch.utils.flop_counter import FlopCounterMode

    net = models.build(name, **options).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 48, 48))
    assert models.multiply_adds(net, 48) == counter.get_total_flops() // 2


# ---- shortcut option A is parameter-free ---------------------------------------------------------


def test_option_a_adds_no_parameters() -> None:
    assert models.parameter_count(models.build("resnet20")) == models.parameter_count(models.build("plain20"))
    resnet34_a = models.parameter_count(models.build("resnet34", shortcut="A"))
    plain34 = models.parameter_count(models.build("plain34"))
    assert resnet34_a == plain34
    # Option B adds three 1x1 projections with BN (64->128, 128->256, 256->512).
    projections = 64 * 128 + 128 * 256 + 256 * 512 + 2 * (128 + 256 + 512)
    assert models.parameter_count(models.build("resnet34")) == plain34 + projections


def test_option_c_projects_every_shortcut() -> None:
    net = models.build("resnet34", shortcut="C")
    units = [unit for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for unit in stage]
    assert len(units) == 16
    assert all(isinstance(unit.downsample, torch.nn.Sequential) for unit in units)


# ---- torchvision state_dict compatibility -------------------------------------------------------


@pytest.mark.parametrize(
    "name, golden_name",
    [
        ("resnet18", "resnet18"),
        ("resnet34", "resnet34"),
        ("resnet50", "resnet50"),
        ("resnet101", "resnet101"),
        ("resnet152", "resnet152"),
        ("resnet50_v1_5", "resnet50"),
        ("resnet101_v1_5", "resnet101"),
        ("resnet152_v1_5", "resnet152"),
    ],
)
def test_state_dict_matches_torchvision(name: str, golden_name: str) -> None:
    golden = json.loads(GOLDEN.read_text())["models"][golden_name]
    with torch.device("meta"):  # shapes only
        net = models.build(name)
    assert _shapes(net) == golden["state_dict"]
    assert list(net.state_dict()) == list(golden["state_dict"])  # same order too
    assert models.parameter_count(net) == golden["num_params"]


def test_v1_5_moves_only_the_stride() -> None:
    paper, v1_5 = models.build("resnet50").layer2[0], models.build("resnet50_v1_5").layer2[0]
    assert (paper.conv1.stride, paper.conv2.stride) == ((2, 2), (1, 1))
    assert (v1_5.conv1.stride, v1_5.conv2.stride) == ((1, 1), (2, 2))
    assert models.build("resnet50", stride_in_1x1=False).layer3[0].conv2.stride == (2, 2)


# ---- forward passes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY | HEAVY_TWINS else n for n in models.names()],
)
def test_every_net_outputs_logits(name: str) -> None:
    torch.manual_seed(0)
    size = 64 if models.info(name).family == "imagenet" else 32
    net = models.build(name, num_classes=7)
    with torch.no_grad():
        logits = net(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnet18_preact", 48), ("resnet50", 40)])
def test_forward_backward_reaches_every_parameter(name: str, size: int) -> None:
    torch.manual_seed(0)
    net = models.build(name, num_classes=5)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 3, size, size)), torch.tensor([1, 3]))
    loss.backward()
    for key, parameter in net.named_parameters():
        assert parameter.grad is not None, key
        assert torch.isfinite(parameter.grad).all(), key


def test_any_input_size_works() -> None:
    net = models.build("resnet18").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 97, 131)).shape == (1, 1000)  # odd sizes, fully convolutional


# ---- initialisation -------------------------------------------------------------------------------


def test_he_initialisation() -> None:
    torch.manual_seed(0)
    net = models.build("resnet50")
    conv = net.layer4[0].conv2  # 512 x 512 x 3 x 3: fan_out = 512 * 9
    assert conv.weight.std().item() == pytest.approx((2.0 / (512 * 9)) ** 0.5, rel=0.02)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    bound = 1 / 2048**0.5  # nn.Linear's default, as torchvision keeps it
    assert net.fc.weight.abs().max().item() <= bound
    assert net.fc.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)


def test_zero_init_residual_makes_units_identities() -> None:
    net = models.build("resnet50", zero_init_residual=True).eval()
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for unit in stage:
            assert torch.all(unit.bn3.weight == 0) and torch.all(unit.bn2.weight == 1)
    unit = net.layer1[1]  # identity shortcut: relu(x + 0) = x for an activated input
    x = torch.rand(1, 256, 8, 8)
    with torch.no_grad():
        assert torch.equal(unit(x), x)
    assert torch.all(models.build("resnet50").layer1[0].bn3.weight == 1)  # opt-in only
