"""The model options beyond the papers: stochastic depth (Huang et al. 2016) and BlurPool (Zhang 2019)."""

from __future__ import annotations

import pytest
import torch

from dtrain import models
from dtrain.errors import ConfigError
from dtrain.models.blur_pool import BlurPool, binomial_kernel
from dtrain.models.stochastic_depth import linear_drop_rates, stochastic_depth
from dtrain.resolve import load_config


def _units(net: torch.nn.Module) -> list[models.ResidualUnit]:
    return [m for m in net.modules() if isinstance(m, models.ResidualUnit)]


# ---- stochastic depth ---------------------------------------------------------------------------


def test_drop_rates_grow_linearly_from_zero_to_the_final_rate() -> None:
    rates = [unit.drop_rate for unit in _units(models.build("resnet50", stochastic_depth=0.2))]
    assert len(rates) == 16 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert rates == pytest.approx([0.2 * i / 15 for i in range(16)])
    assert linear_drop_rates(0.3, 1) == [0.3]
    assert all(unit.drop_rate == 0.0 for unit in _units(models.build("resnet20")))


def test_eval_mode_is_the_identity() -> None:
    torch.manual_seed(0)
    net = models.build("resnet20", stochastic_depth=0.5).eval()
    plain = models.build("resnet20").eval()
    plain.load_state_dict(net.state_dict())
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(net(x), plain(x))
    assert torch.equal(stochastic_depth(x, 0.9, "row", training=False), x)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_train_mode_drops_at_the_rate_and_scales_survivors(mode: str) -> None:
    torch.manual_seed(1234)
    p, draws = 0.3, 4000
    x = torch.ones(8, 2, 3, 3)
    kept_fraction = []
    for _ in range(draws):
        out = stochastic_depth(x, p, mode, training=True)
        rows = out.flatten(1)
        assert torch.all((rows == 0).all(dim=1) | torch.isclose(rows, torch.tensor(1 / (1 - p))).all(dim=1))
        kept = (rows[:, 0] != 0).float()
        if mode == "batch":  # the whole batch at once
            assert kept.min() == kept.max()
        kept_fraction.append(kept.mean().item())
    mean_kept = sum(kept_fraction) / draws
    assert abs(mean_kept - (1 - p)) < 0.02  # ~0.002-0.007 standard error at these draws


def test_each_unit_drops_its_branch_at_its_own_rate_and_scales_it() -> None:
    """Full pre-activation units (nothing after the addition, identity shortcut): out = m * F(x) + x
    with m = 0 (dropped) or 1 / (1 - p). Counted per unit over many draws with a fixed seed."""
    net = models.build("resnet20", unit="full_preact", stochastic_depth=0.6, stochastic_depth_mode="batch").train()
    units = _units(net)
    torch.manual_seed(7)
    for unit, rate in ((units[4], 0.3), (units[8], 0.6)):  # 0.6 * 4/8 and 0.6 * 8/8
        assert unit.drop_rate == pytest.approx(rate)
        x = torch.randn(2, unit.out_channels, 8, 8)
        unit.drop_rate = 0.0
        with torch.no_grad():
            branch = unit(x) - x  # F(x), batch statistics in train mode, no randomness
        unit.drop_rate = rate
        dropped, draws = 0, 1000
        for _ in range(draws):
            with torch.no_grad():
                delta = unit(x) - x
            if torch.equal(delta, torch.zeros_like(delta)):
                dropped += 1
            else:
                assert torch.allclose(delta, branch / (1 - rate), atol=1e-5)
        assert abs(dropped / draws - rate) < 0.05, (rate, dropped)


def test_plain_nets_and_bad_values_are_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match="plain net"):
        models.build("plain18", stochastic_depth=0.1)
    with pytest.raises(ValueError, match=r"stochastic_depth must be in \[0, 1\)"):
        models.build("resnet20", stochastic_depth=1.0)
    with pytest.raises(ConfigError, match=r"did you mean model.options.stochastic_depth\?"):
        load_config("cifar10_resnet20", ["model.options.stochastic_dept=0.1"])
    with pytest.raises(ConfigError, match="stochastic_depth_mode"):
        load_config("cifar10_resnet20", ["model.options.stochastic_depth_mode=rows"])
    with pytest.raises(ConfigError, match=r"did you mean model.options.blurpool\?"):
        load_config("cifar10_resnet20", ["model.options.blur_pool=true"])


# ---- BlurPool ------------------------------------------------------------------------------------


def test_blur_kernel_is_the_normalised_binomial() -> None:
    kernel = binomial_kernel()
    assert torch.equal(kernel * 16, torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]))
    assert kernel.sum().item() == 1.0
    blur = BlurPool(3)
    assert torch.equal(blur.kernel, kernel.expand(3, 1, 3, 3))
    flat = torch.full((1, 3, 5, 5), 2.0)
    assert torch.allclose(blur(flat)[..., 1:-1, 1:-1], flat[..., 1:-1, 1:-1])  # a constant passes unchanged


@pytest.mark.parametrize("name, size", [("resnet50_v1_5", 64), ("resnet18", 64), ("resnet20", 32),
                                        ("resnet164_preact", 32)])
def test_blurpool_keeps_shapes_parameters_and_state_dict_keys(name: str, size: int) -> None:
    torch.manual_seed(0)
    plain, blurred = models.build(name), models.build(name, blurpool=True)
    x = torch.randn(2, 3, size, size)
    assert blurred(x).shape == plain(x).shape
    assert blurred.features(x).shape == plain.features(x).shape
    assert models.parameter_count(blurred) == models.parameter_count(plain)
    assert blurred.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    blurred.load_state_dict(plain.state_dict())


def test_blur_sits_before_every_stride_2_conv_of_the_units() -> None:
    net = models.build("resnet50_v1_5", blurpool=True)
    strided_convs = blurs = 0
    for unit in _units(net):
        for index, name in enumerate(unit.branch_steps):
            module = getattr(unit, name, None)
            if isinstance(module, torch.nn.Conv2d) and module.stride == (2, 2):
                strided_convs += 1
                assert unit.branch_steps[index - 1] == f"blur{name[4:]}"
                blurs += 1
        if unit.shortcut_blur is not None:
            assert unit.downsample[0].stride == (2, 2)
    assert strided_convs == blurs == 3  # the first unit of stages 2-4
    assert sum(u.shortcut_blur is not None for u in _units(net)) == 3
    assert net.conv1.stride == (2, 2) and not isinstance(net.maxpool, BlurPool)  # the stem is left as is


def test_blur_counts_as_a_depthwise_conv_in_multiply_adds() -> None:
    plain, blurred = models.build("resnet50_v1_5"), models.build("resnet50_v1_5", blurpool=True)
    extra = models.multiply_adds(blurred, 224) - models.multiply_adds(plain, 224)
    # Stages 2-4: a blur in front of the stride-2 3x3 (width channels) and of the projection (the
    # unit's input channels), each 9 multiply-adds per value of its H x W input.
    expected = sum(9 * size * size * (width + inputs) for width, inputs, size in
                   ((128, 256, 56), (256, 512, 28), (512, 1024, 14)))
    assert extra == expected
