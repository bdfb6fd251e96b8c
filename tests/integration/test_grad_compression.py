"""distributed.grad_compression: gradients all-reduced in 16 bits.

On 2 gloo processes a ResNet-20's DDP gradients with fp16 compression are exactly what torch's
fp16_compress_hook computes (each rank's gradient rounded to fp16, halved, summed in fp16), and
differ from the uncompressed average by at most that rounding. Bad values, bf16 on CPU and a
DeepSpeed config that contradicts the key are one-line errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from gloo_processes import run_on_gloo
from torch.nn import functional as F

from dtrain import models
from dtrain.config import DistributedConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.wrap import wrap
from dtrain.engine.deepspeed_engine import deepspeed_config
from dtrain.errors import ConfigError
from dtrain.resolve import load_config

WORLD = 2
FP16_UNIT_ROUNDOFF = 2.0**-11  # half the spacing of fp16 numbers at 1.0: the relative error of one rounding
FP16_SUBNORMAL_STEP = 2.0**-24  # below 2^-14 fp16 rounds to multiples of this


def _flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _backward(model: torch.nn.Module, rank: int) -> None:
    gen = torch.Generator().manual_seed(100 + rank)  # every rank its own batch
    images, labels = torch.randn(4, 3, 16, 16, generator=gen), torch.randint(0, 10, (4,), generator=gen)
    F.cross_entropy(model(images), labels).backward()


def _gradients(rank: int) -> dict[str, torch.Tensor]:
    ctx = DistContext(rank=rank, world_size=WORLD, backend="gloo")
    torch.manual_seed(0)
    model = models.build("resnet20", num_classes=10)
    local = copy.deepcopy(model)
    _backward(local, rank)
    result = {"local": _flat_grads(local)}
    for compression in ("none", "fp16"):
        wrapped = wrap(copy.deepcopy(model), DistributedConfig(grad_compression=compression), ctx)
        _backward(wrapped, rank)
        result[compression] = _flat_grads(wrapped)
    return result


@pytest.fixture(scope="module")
def gradients() -> dict:
    return run_on_gloo(_gradients, WORLD)


def test_fp16_compression_is_torchs_fp16_hook_on_every_rank(gradients: dict) -> None:
    local = [gradients[rank]["local"] for rank in range(WORLD)]
    # fp16_compress_hook: cast, divide by the world size, all-reduce (sum) in fp16, cast back.
    expected = sum(g.half().div(WORLD) for g in local).float()
    for rank in range(WORLD):
        assert torch.equal(gradients[rank]["fp16"], expected)


def test_fp16_compressed_gradients_differ_from_uncompressed_by_fp16_rounding_only(gradients: dict) -> None:
    local = [gradients[rank]["local"] for rank in range(WORLD)]
    uncompressed, compressed = gradients[0]["none"], gradients[0]["fp16"]
    torch.testing.assert_close(uncompressed, sum(local) / WORLD, rtol=1e-6, atol=1e-9)
    # One rounding of each rank's share, one of their sum: 2 u sum|g_i|/N, plus the subnormal step
    # for the tiny gradients fp16 cannot hold with a relative error.
    magnitude = sum(g.abs() for g in local) / WORLD
    bound = 2 * FP16_UNIT_ROUNDOFF * magnitude + 2 * FP16_SUBNORMAL_STEP
    error = (compressed - uncompressed).abs()
    assert (error <= bound).all(), f"worst excess {(error - bound).max().item():.3g}"
    assert (error > 0).any()  # compression is on: the gradients were rounded
    assert (error / magnitude.clamp_min(1e-3)).max() < 1e-3  # relative to sizeable gradients: under 0.1%


def test_bad_value_is_one_line_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"distributed.grad_compression='fp8' is not one of none, fp16, bf16"):
        load_config("digits_resnet20", ["distributed.grad_compression=fp8"])


def test_bf16_on_cpu_is_refused_naming_fp16() -> None:
    model = models.build("resnet20", num_classes=10)
    with pytest.raises(ConfigError, match=r"grad_compression=bf16 needs NCCL \(a CUDA device\).*"
                                          r"on CPU use distributed.grad_compression=fp16") as caught:
        wrap(model, DistributedConfig(grad_compression="bf16"), DistContext())
    assert "\n" not in str(caught.value)


def test_one_process_has_nothing_to_compress() -> None:
    model = models.build("resnet20", num_classes=10)
    assert wrap(model, DistributedConfig(grad_compression="fp16"), DistContext()) is model


@pytest.mark.parametrize("compression", ["fp16", "bf16"])
def test_deepspeed_uses_its_communication_data_type(compression: str) -> None:
    cfg = load_config("digits_resnet20", ["distributed.engine=deepspeed", "optim.batch_size=16",
                                          f"distributed.grad_compression={compression}"])
    assert deepspeed_config(cfg, world_size=2)["communication_data_type"] == compression


def test_deepspeed_without_compression_keeps_its_default() -> None:
    cfg = load_config("digits_resnet20", ["distributed.engine=deepspeed", "optim.batch_size=16"])
    assert "communication_data_type" not in deepspeed_config(cfg, world_size=2)


def test_deepspeed_file_that_contradicts_the_key_is_refused(tmp_path) -> None:
    override = tmp_path / "ds.json"
    override.write_text(json.dumps({"communication_data_type": "fp32"}))
    cfg = load_config("digits_resnet20", ["distributed.engine=deepspeed", "optim.batch_size=16",
                                          "distributed.grad_compression=fp16",
                                          f"distributed.deepspeed_config={override}"])
    with pytest.raises(ConfigError, match="sets communication_data_type=fp32 but distributed.grad_compression=fp16"):
        deepspeed_config(cfg, world_size=2)
