"""R2's unit variants: full pre-activation structure and the ablations of Tables 1 and 2."""

from __future__ import annotations

import pytest
import torch

from dtrain import models


def _steps(unit: models.ResidualUnit) -> tuple[str, str, str]:
    return " ".join(unit.preactivation_steps), " ".join(unit.branch_steps), " ".join(unit.after_add_steps)


def _capture_input(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


# ---- Table 2 / Fig. 4: activation placements ------------------------------------------------------

# (pre-activation shared with a projection shortcut, residual branch F, after the addition)
BASIC_LAYOUTS = {
    "original": ("", "conv1 bn1 relu conv2 bn2", "relu"),  # (a)
    "bn_after_add": ("", "conv1 bn1 relu conv2", "bn_after_add relu"),  # (b)
    "relu_before_add": ("", "conv1 bn1 relu conv2 bn2 relu", ""),  # (c)
    "relu_preact": ("relu", "conv1 bn1 relu conv2 bn2", ""),  # (d)
    "full_preact": ("bn1 relu", "conv1 bn2 relu conv2", ""),  # (e)
}


@pytest.mark.parametrize("unit", list(BASIC_LAYOUTS))
def test_activation_placement_follows_r2_fig4(unit: str) -> None:
    net = models.build("resnet110", unit=unit)
    assert _steps(net.layer2[1]) == BASIC_LAYOUTS[unit]


def test_bottleneck_full_preact_order() -> None:
    unit = models.build("resnet164_preact").layer2[1]
    assert _steps(unit) == ("bn1 relu", "conv1 bn2 relu conv2 bn3 relu conv3", "")
    assert [unit.conv1.kernel_size, unit.conv2.kernel_size, unit.conv3.kernel_size] == [(1, 1), (3, 3), (1, 1)]
    assert (unit.conv1.in_channels, unit.conv1.out_channels, unit.conv3.out_channels) == (128, 32, 128)


@pytest.mark.parametrize("name", ["resnet110", "resnet164"])
@pytest.mark.parametrize("unit", list(BASIC_LAYOUTS))
def test_every_placement_trains_on_both_ablation_nets(name: str, unit: str) -> None:
    torch.manual_seed(0)
    net = models.build(name, unit=unit)
    logits = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_fig4_letters_name_the_placements() -> None:
    assert _steps(models.build("resnet110", unit="e").layer2[1]) == BASIC_LAYOUTS["full_preact"]
    assert _steps(models.build("resnet110", unit="b").layer2[1]) == BASIC_LAYOUTS["bn_after_add"]


# ---- full pre-activation: the first and the last unit (R2 Appendix) ------------------------------


def test_preact_first_unit_reuses_the_stem_activation() -> None:
    net = models.build("resnet110_preact")
    first, second = net.layer1[0], net.layer1[1]
    assert first.preactivation_steps == () and not hasattr(first, "bn1")
    assert second.preactivation_steps == ("bn1", "relu")


def test_preact_net_ends_with_bn_relu_after_the_last_addition() -> None:
    net = models.build("resnet110_preact").eval()
    assert net.final_bn.num_features == 64
    last_sum = []
    net.layer3.register_forward_hook(lambda m, args, out: last_sum.append(out.detach()))
    pooled_input = _capture_input(net.avgpool)
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert torch.allclose(pooled_input[0], torch.relu(net.final_bn(last_sum[0])))
    assert not hasattr(models.build("resnet110"), "final_bn")  # post-activation: the unit's ReLU ends it


def test_preact_projection_reads_the_preactivated_input() -> None:
    torch.manual_seed(0)
    net = models.build("resnet164_preact").eval()
    unit = net.layer2[0]  # 64 -> 128 channels, stride 2: projection shortcut
    assert [type(m) for m in unit.downsample] == [torch.nn.Conv2d]  # conv only: its input is BN-ReLU'd
    unit_input, shortcut_input = _capture_input(unit), _capture_input(unit.downsample)
    first_input, first_shortcut_input = _capture_input(net.layer1[0]), _capture_input(net.layer1[0].downsample)
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert torch.allclose(shortcut_input[0], torch.relu(unit.bn1(unit_input[0])))
    # First unit of the net: the stem's conv-BN-ReLU output feeds both paths.
    assert torch.equal(first_shortcut_input[0], first_input[0]) and first_input[0].min() >= 0


def test_parameter_free_shortcut_of_a_preact_net_reads_the_raw_input() -> None:
    net = models.build("resnet110_preact").eval()
    unit = net.layer2[0]
    assert isinstance(unit.downsample, models.shortcuts.ZeroPadShortcut)  # option A, as R1's CIFAR nets
    unit_input, shortcut_input = _capture_input(unit), _capture_input(unit.downsample)
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert torch.equal(shortcut_input[0], unit_input[0])


def test_zero_init_residual_preact_units_start_as_identity() -> None:
    net = models.build("resnet110_preact", zero_init_residual=True).eval()
    unit = net.layer2[1]
    assert torch.all(unit.bn2.weight == 0) and torch.all(unit.bn1.weight == 1)
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        assert torch.equal(unit(x), x)


# ---- Table 1 / Fig. 2: shortcut variants on ResNet-110 ----------------------------------------------


@pytest.mark.parametrize("mode", list(models.SHORTCUT_MODES))
def test_every_shortcut_mode_builds_and_runs(mode: str) -> None:
    torch.manual_seed(0)
    net = models.build("resnet110", shortcut_mode=mode)
    logits = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def _basic_branch(unit: models.ResidualUnit, x: torch.Tensor) -> torch.Tensor:
    return unit.bn2(unit.conv2(torch.relu(unit.bn1(unit.conv1(x)))))


def test_constant_scaling_scales_both_paths() -> None:
    torch.manual_seed(0)
    net = models.build("resnet110", shortcut_mode="constant_scaling", scale_residual=1.0, scale_shortcut=0.5).eval()
    unit = net.layer1[3]
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(unit(x), torch.relu(_basic_branch(unit, x) + 0.5 * x), atol=1e-6)
    default = models.build("resnet110", shortcut_mode="constant_scaling").layer1[0].merge
    assert (default.scale_residual, default.scale_shortcut) == (0.5, 0.5)  # Table 1's 12.35% row


@pytest.mark.parametrize("mode, exclusive", [("exclusive_gating", True), ("shortcut_only_gating", False)])
def test_gating_follows_r2_and_starts_at_the_requested_bias(mode: str, exclusive: bool) -> None:
    torch.manual_seed(0)
    net = models.build("resnet110", shortcut_mode=mode, gate_bias=-7).eval()
    units = [unit for stage in (net.layer1, net.layer2, net.layer3) for unit in stage]
    assert len(units) == 54
    assert all(torch.all(unit.merge.gate.bias == -7.0) for unit in units)
    unit = net.layer2[2]
    x = torch.rand(2, 32, 8, 8)
    with torch.no_grad():
        g = torch.sigmoid(unit.merge.gate(x))
        residual = _basic_branch(unit, x)
        expected = torch.relu((g * residual if exclusive else residual) + (1 - g) * x)
        assert torch.allclose(unit(x), expected, atol=1e-6)
    assert torch.all(models.build("resnet110", shortcut_mode=mode).layer1[0].merge.gate.bias == -6.0)


def test_conv_shortcut_projects_every_unit() -> None:
    net = models.build("resnet110", shortcut_mode="conv_shortcut")
    units = [unit for stage in (net.layer1, net.layer2, net.layer3) for unit in stage]
    assert all(isinstance(unit.downsample[0], torch.nn.Conv2d) for unit in units)
    extra = models.parameter_count(net) - models.parameter_count(models.build("resnet110"))
    convs = 18 * 16 * 16 + 32 * 16 + 17 * 32 * 32 + 64 * 32 + 17 * 64 * 64
    assert extra == convs + 2 * 18 * (16 + 32 + 64)  # each 1x1 conv with its BN


def test_dropout_shortcut_has_expected_scale_half_as_r2_describes() -> None:
    # R2 sec. 3.1: dropout 0.5 on the shortcut imposes a scale with expectation 0.5 (nn.Dropout's
    # 1/(1-p) rescaling would keep it at 1). Measured in training, and used as such at test time.
    net = models.build("resnet110", shortcut_mode="dropout_shortcut")
    unit = net.layer1[3]
    torch.manual_seed(0)
    shortcut = torch.rand(64, 16, 8, 8) + 0.5
    unit.merge.train()
    scale = unit.merge(torch.zeros_like(shortcut), shortcut, shortcut) / shortcut
    assert set(scale.unique().tolist()) == {0.0, 1.0}  # kept values are not rescaled
    assert abs(scale.mean().item() - 0.5) < 0.01  # 65,536 draws: std of the mean ~0.002
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        unit.eval()
        assert torch.allclose(unit(x), torch.relu(_basic_branch(unit, x) + 0.5 * x), atol=1e-6)


def test_bad_variant_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown shortcut_mode 'gating'.*exclusive_gating"):
        models.build("resnet110", shortcut_mode="gating")
    with pytest.raises(ValueError, match="needs a shortcut; this is a plain net"):
        models.build("plain20", shortcut_mode="exclusive_gating")
    with pytest.raises(ValueError, match="shortcut_dropout must be in"):
        models.build("resnet110", shortcut_mode="dropout_shortcut", shortcut_dropout=1.5)
    with pytest.raises(ValueError, match="unknown shortcut option 'D'"):
        models.build("resnet34", shortcut="D")


@pytest.mark.parametrize("name", ["resnet110_1layer", "resnet110_1layer_preact"])
def test_one_layer_skip_resnet110_has_36_single_conv_units_per_stage(name: str) -> None:
    # R2 Table 3 "ResNet-110 (1layer skip)": 110 weighted layers, every shortcut skips one 3x3 conv.
    net = models.build(name)
    stages = (net.layer1, net.layer2, net.layer3)
    assert [len(stage) for stage in stages] == [36, 36, 36]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 110  # 108 unit convs + the stem conv, + the fc
    assert all(len([m for m in unit.modules() if isinstance(m, torch.nn.Conv2d)]) == 1
               for stage in stages for unit in stage)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
