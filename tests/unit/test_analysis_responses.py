"""Layer responses (R1 Fig. 7): the hooks measure what a direct computation measures."""

import torch
from torch import nn

from dtrain.analysis.responses import ChannelMoments, find_taps, layer_responses, sorted_descending


class TinyBasicUnit(nn.Module):
    """A post-activation basic unit: conv-BN-ReLU-conv-BN, + x, ReLU (R1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut_conv = nn.Conv2d(width, width, 1, bias=False)  # 1x1: not a 3x3 layer
        self.shortcut_bn = nn.BatchNorm2d(width)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut_bn(self.shortcut_conv(x)))


class TinyPreActUnit(nn.Module):
    """R2 full pre-activation: BN-ReLU-conv-BN-ReLU-conv, + x (the last conv feeds the addition)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(out)))


def tiny_net(unit=TinyBasicUnit) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 4, 3, padding=1, bias=False))
    net.add_module("stem_bn", nn.BatchNorm2d(4))
    net.add_module("relu", nn.ReLU())
    net.add_module("unit", unit(4))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4, 3))
    # Non-trivial BN affine and running statistics, so eval-mode outputs are not standardised.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 2.0)
            m.bias.data.uniform_(-1.0, 1.0)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def direct_outputs(net: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The responses computed by hand, without hooks: BN(conv(x)) evaluated step by step."""
    with torch.no_grad():
        stem = net.stem_bn(net.stem(images))
        x = torch.relu(stem)
        unit = net.unit
        bn1 = unit.bn1(unit.conv1(x))
        bn2 = unit.bn2(unit.conv2(torch.relu(bn1)))
    return {"stem_bn": stem, "unit.bn1": bn1, "unit.bn2": bn2}


def test_taps_are_the_bn_after_each_3x3_conv_in_network_order():
    taps = find_taps(tiny_net(), torch.randn(2, 3, 8, 8))
    assert [(t.conv, t.module) for t in taps] == [
        ("stem", "stem_bn"), ("unit.conv1", "unit.bn1"), ("unit.conv2", "unit.bn2")]


def test_preactivation_last_conv_is_tapped_at_the_conv():
    taps = find_taps(tiny_net(TinyPreActUnit), torch.randn(2, 3, 8, 8))
    assert [(t.conv, t.module) for t in taps] == [
        ("stem", "stem_bn"), ("unit.conv1", "unit.bn2"), ("unit.conv2", "unit.conv2")]


def test_streamed_std_equals_direct_computation_over_the_whole_set():
    net = tiny_net()
    torch.manual_seed(1)
    images = torch.randn(23, 3, 8, 8) * 2 + 1
    batches = [(images[i:i + 5], None) for i in range(0, 23, 5)]  # uneven last batch
    responses = layer_responses(net, batches)
    direct = direct_outputs(net, images)
    assert [r.module for r in responses] == list(direct)
    for r in responses:
        out = direct[r.module].double()
        assert r.count == 23 * 8 * 8
        assert abs(r.overall_std - out.std(unbiased=False).item()) < 1e-9
        per_channel = out.transpose(0, 1).reshape(out.shape[1], -1).std(dim=1, unbiased=False)
        assert abs(r.channel_std - per_channel.mean().item()) < 1e-9


def test_padding_samples_are_not_counted():
    net = tiny_net()
    torch.manual_seed(2)
    images = torch.randn(8, 3, 8, 8)
    padded = torch.cat([images, torch.full((4, 3, 8, 8), 50.0)])  # 4 padding samples, wildly off
    valid = torch.tensor([True] * 8 + [False] * 4)
    with_padding = layer_responses(net, [(padded, valid)])
    clean = layer_responses(net, [(images, None)])
    for a, b in zip(with_padding, clean, strict=True):
        assert abs(a.overall_std - b.overall_std) < 1e-9


def test_moments_survive_a_large_mean():
    m = ChannelMoments(1)
    data = torch.randn(10_000, 1, 1, 1, dtype=torch.float64) * 1e-3 + 1e4
    for chunk in data.split(999):
        m.update(chunk)
    assert abs(m.overall_std() - data.std(unbiased=False).item()) < 1e-9


def test_sorted_panel_is_descending_and_a_permutation():
    responses = layer_responses(tiny_net(), [(torch.randn(6, 3, 8, 8), None)])
    ordered = sorted_descending(responses, "overall")
    assert ordered == sorted(ordered, reverse=True)
    assert sorted(ordered) == sorted(r.overall_std for r in responses)
