"""Layer responses (R1 Fig. 7): the standard deviation of each 3x3 layer's response.

R1: "the responses are the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)". Which module holds that tensor is found by data flow, not by names: one probing
forward pass records every 3x3 conv's output tensor and every BatchNorm2d's input tensor, and a
BN whose input *is* (same tensor object) a 3x3 conv's output is that conv's tap. In
post-activation nets (R1) that is bn1/bn2 of a basic unit and bn2 of a bottleneck. A 3x3 conv
whose output goes anywhere else (e.g. the last conv of a pre-activation unit, R2, whose output
goes straight into the addition) is tapped at the conv itself, so pre-activation nets are
measured too (the report says which module was tapped).

Definition of the statistic (population std, ddof=0, over the whole dataset, padding samples of
the eval loader excluded):
- "overall": the std of all elements N x C x H x W of the layer's response taken together;
- "channel": the std of each channel over N x H x W, then averaged over channels.
In eval mode a BN output's per-channel std is close to |gamma|, so "channel" measures the scale
BN learned and "overall" adds the spread of the channel means (beta). Both come out of the same
pass. Accumulation is streaming, per channel, in float64, merging per-batch (count, mean, M2)
with Chan's parallel formula (no cancellation when the mean is large next to the std).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

STATISTICS = ("overall", "channel")


@dataclass(frozen=True)
class Tap:
    conv: str  # module name of the 3x3 conv
    module: str  # module name whose output is recorded (the BN after the conv, or the conv)


@dataclass(frozen=True)
class LayerResponse:
    index: int  # 1-based position in network order (order of execution)
    conv: str
    module: str
    channels: int
    samples: int  # images measured
    count: int  # elements per channel that were accumulated (samples x H x W)
    overall_std: float
    channel_std: float

    def value(self, statistic: str) -> float:
        return self.overall_std if statistic == "overall" else self.channel_std


class ChannelMoments:
    """Streaming per-channel count, mean and M2 (sum of squared deviations) in float64."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """x: [N, C, ...]; every element of channel c is one observation of channel c."""
        if x.numel() == 0:
            return
        x = x.detach().to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1).cpu()
        n_b = x.shape[1]
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        n = self.count
        total = n + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / total)
        self.m2 += m2_b + delta**2 * (n * n_b / total)
        self.count = total

    def channel_std(self) -> float:
        return float(torch.sqrt(self.m2 / self.count).mean())

    def overall_std(self) -> float:
        grand_mean = self.mean.mean()
        m2 = self.m2.sum() + (self.count * (self.mean - grand_mean) ** 2).sum()
        return math.sqrt(float(m2) / (self.count * self.mean.numel()))


def is_3x3_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (3, 3)


@torch.no_grad()
def find_taps(model: nn.Module, example: torch.Tensor) -> list[Tap]:
    """The tap of every 3x3 conv, in the order the forward pass runs them (one probing pass)."""
    names = {module: name for name, module in model.named_modules()}
    conv_outputs: dict[int, tuple[str, torch.Tensor]] = {}  # keeps the tensors alive: ids stay unique
    order: list[str] = []
    consumer: dict[str, str] = {}

    def on_conv(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        conv_outputs[id(output)] = (name, output)
        if name not in order:
            order.append(name)

    def on_bn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        source = conv_outputs.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            consumer.setdefault(source[0], names[module])

    handles = [m.register_forward_hook(on_conv) for m in model.modules() if is_3x3_conv(m)]
    handles += [m.register_forward_hook(on_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return [Tap(conv=name, module=consumer.get(name, name)) for name in order]


class ResponseRecorder:
    """Forward hooks that accumulate the moments of each tap's output while the model runs.

    Set `valid` (a bool mask over the batch) before a forward pass to leave padding samples out.
    """

    def __init__(self, model: nn.Module, taps: list[Tap]) -> None:
        self.taps = taps
        self.valid: torch.Tensor | None = None
        self.moments: dict[str, ChannelMoments] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[tap.module].register_forward_hook(self._hook(tap.module)) for tap in taps]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = output if self.valid is None else output[self.valid.to(output.device)]
            if name not in self.moments:
                self.moments[name] = ChannelMoments(output.shape[1])
            self.moments[name].update(x)

        return record

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def results(self, samples: int) -> list[LayerResponse]:
        out = []
        for index, tap in enumerate(self.taps, start=1):
            m = self.moments[tap.module]
            out.append(LayerResponse(index, tap.conv, tap.module, m.mean.numel(), samples, m.count,
                                     m.overall_std(), m.channel_std()))
        return out


@torch.no_grad()
def layer_responses(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
                    device: torch.device | str = "cpu") -> list[LayerResponse]:
    """Std of every 3x3 layer's response over all `batches` ((images, valid-mask or None) pairs).

    The model runs in eval mode (BN with its running statistics), as when testing.
    """
    model = model.to(device).eval()
    iterator: Iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("no data: the validation set is empty") from None
    images, _ = first
    taps = find_taps(model, images[:2].to(device))
    if not taps:
        raise ValueError(f"{type(model).__name__} has no 3x3 convolution to measure")
    recorder = ResponseRecorder(model, taps)
    samples = 0
    try:
        for images, valid in _chain(first, iterator):
            recorder.valid = valid
            samples += len(images) if valid is None else int(valid.sum())
            model(images.to(device))
    finally:
        recorder.close()
    return recorder.results(samples)


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def sorted_descending(responses: list[LayerResponse], statistic: str) -> list[float]:
    """Bottom panel of R1 Fig. 7: the same values sorted by magnitude, largest first."""
    return sorted((r.value(statistic) for r in responses), reverse=True)


def to_records(responses: list[LayerResponse]) -> list[dict]:
    return [asdict(r) for r in responses]
