"""optim.*: the optimiser registry (SGD, AdamW, LAMB), the parameters without weight decay (each
later recipe's project's choice; the renamed key), LAMB's update against the paper's formula,
gradient clipping by global norm (DDP, with fp16 unscaling; DeepSpeed's gradient_clipping), and
what DeepSpeed refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dtrain import models
from dtrain.builders import build_model
from dtrain.checkpoint.fingerprint import changed_keys, result_settings
from dtrain.config import OptimConfig, to_dict
from dtrain.engine.deepspeed_engine import deepspeed_config
from dtrain.engine.lamb import Lamb
from dtrain.engine.optimizer import build_optimizer, clip_gradients, param_groups
from dtrain.errors import ConfigError
from dtrain.resolve import load_config, saved_config


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)


def test_norm_layers_and_biases_get_no_weight_decay_and_the_rest_the_configured_value():
    model = models.build("resnet20", 10)
    decay, no_decay = param_groups(model, 5e-4, "norm_and_bias")
    names = {id(p): n for n, p in model.named_parameters()}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (5e-4, 0.0)
    exempt = {names[id(p)] for p in no_decay["params"]}
    bns = {f"{m}.{w}" for m, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)
           for w in ("weight", "bias")}
    assert exempt == bns | {n for n in names.values() if n.endswith("bias")} and bns
    assert all(names[id(p)].endswith("weight") and p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    mixed = _Mixed()
    decay, no_decay = param_groups(mixed, 0.05, "norm_and_bias")
    assert [p is q for p, q in zip(decay["params"], [mixed.conv.weight, mixed.fc.weight], strict=True)] == [True, True]
    assert len(no_decay["params"]) == 8  # conv/fc biases, bn/gn/ln weight and bias
    (everything,) = param_groups(mixed, 0.05, "none")
    assert everything["weight_decay"] == 0.05 and len(everything["params"]) == 10


def _exempt_names(recipe: str) -> set[str]:
    """The parameter names a recipe's optim.no_decay trains without weight decay, on its ResNet-50."""
    config = load_config(recipe, [])
    model = build_model(config.model)
    _, exempt = param_groups(model, config.optim.weight_decay, config.optim.no_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in exempt["params"]}


def test_each_recipe_exempts_the_parameters_its_project_exempts():
    """ResNet-50's 1-d parameters: the BNs (bn1..bn3 of each block, the stem's bn1, downsample.1) and fc.bias."""
    model = build_model(load_config("resnet50_tv2", []).model)
    one_d = {n for n, p in model.named_parameters() if p.ndim == 1}
    downsample_bn = {n for n in one_d if ".downsample.1." in n}
    assert len(downsample_bn) == 8 and "fc.bias" in one_d
    # timm (RSB): filter_bias_and_bn, every 1-d parameter
    assert _exempt_names("resnet50_rsb_a1") == one_d
    # torchvision V2 (--norm-weight-decay 0): every BN, but fc.bias decays
    assert _exempt_names("resnet50_tv2") == one_d - {"fc.bias"}
    # FFCV: names containing 'bn' - the downsample BN and fc.bias decay
    assert _exempt_names("resnet50_ffcv_16") == one_d - {"fc.bias"} - downsample_bn


def test_the_old_key_no_decay_bn_bias_still_reads_as_before():
    assert load_config("digits_resnet20", ["optim.no_decay_bn_bias=true"]).optim.no_decay == "norm_and_bias"
    assert load_config("digits_resnet20", ["optim.no_decay_bn_bias=false"]).optim.no_decay == "none"
    with pytest.raises(ConfigError, match="optim.no_decay_bn_bias .now optim.no_decay. and optim.no_decay are both"):
        load_config("digits_resnet20", ["optim.no_decay=norm", "optim.no_decay_bn_bias=true"])
    with pytest.raises(ConfigError, match="optim.no_decay='norms' is not one of none, norm_and_bias, norm, bn_named"):
        load_config("digits_resnet20", ["optim.no_decay=norms"])
    # a checkpoint's saved config and a run's fingerprint written with the old key: the same run
    saved = to_dict(load_config("digits_resnet20", []))
    saved["optim"] = {k: v for k, v in saved["optim"].items() if k != "no_decay"} | {"no_decay_bn_bias": True}
    assert saved_config(saved).optim.no_decay == "norm_and_bias"
    now = result_settings(load_config("digits_resnet20", ["optim.no_decay=norm_and_bias"]))
    before = {k: v for k, v in now.items() if k != "optim.no_decay"} | {"optim.no_decay_bn_bias": True}
    assert changed_keys(before, now) == []
    assert changed_keys(before | {"optim.no_decay_bn_bias": False}, now) == ["optim.no_decay"]


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lamb", Lamb)])
def test_the_registry_builds_each_optimiser_with_the_groups_decay(name, cls):
    optim = OptimConfig(name=name, weight_decay=0.05, no_decay="norm_and_bias", betas=[0.8, 0.99], lr=0.004)
    optimizer = build_optimizer(_Mixed(), optim)
    assert type(optimizer) is cls
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    if name != "sgd":
        assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)
        assert optimizer.param_groups[0]["eps"] == {"adamw": 1e-8, "lamb": 1e-6}[name]  # each one's default


def test_lamb_first_step_scales_the_adam_update_by_the_trust_ratio():
    w0, g = [3.0, 4.0], [1.0, -2.0]
    lr, wd, eps = 0.1, 0.1, 1e-6
    decayed = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    plain = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    lamb = Lamb([{"params": [decayed], "weight_decay": wd}, {"params": [plain], "weight_decay": 0.0}], lr=lr,
                betas=(0.9, 0.999), eps=eps)
    decayed.grad, plain.grad = torch.tensor(g, dtype=torch.float64), torch.tensor(g, dtype=torch.float64)
    lamb.step()
    # Step 1: the bias-corrected moments are g and g^2, so Adam's direction is g / (|g| + eps).
    adam = [gi / (abs(gi) + eps) for gi in g]
    update = [a + wd * w for a, w in zip(adam, w0, strict=True)]  # [1.3, -0.6]
    ratio = math.hypot(*w0) / math.hypot(*update)  # ||w|| / ||u|| = 5 / 1.4318
    assert decayed.tolist() == pytest.approx([w - lr * ratio * u for w, u in zip(w0, update, strict=True)], rel=1e-12)
    # No weight decay (the norm/bias group): no layer adaptation, the plain Adam step (timm's Lamb).
    assert plain.tolist() == pytest.approx([w - lr * a for w, a in zip(w0, adam, strict=True)], rel=1e-12)
    assert lamb.state[decayed]["step"] == 1


def test_lamb_trust_ratio_is_one_for_a_zero_weight():
    zero = nn.Parameter(torch.zeros(3))
    lamb = Lamb([zero], lr=0.5, weight_decay=0.1)
    zero.grad = torch.tensor([1.0, -1.0, 2.0])
    lamb.step()
    assert zero.tolist() == pytest.approx([-0.5, 0.5, -0.5], rel=1e-5)


def _global_norm(model: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def test_clipping_bounds_the_global_gradient_norm_and_keeps_small_ones():
    model = _Mixed()
    optimizer = build_optimizer(model, OptimConfig(no_decay="norm_and_bias"))
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    direction = [p.grad.clone() for p in model.parameters()]
    assert _global_norm(model) > 10
    clip_gradients(optimizer, 1.0)  # over both groups together: a global norm, not one per group
    assert _global_norm(model) == pytest.approx(1.0, rel=1e-4)
    scale = model.conv.weight.grad[0, 0, 0, 0].item() / 3.0
    assert all(torch.allclose(p.grad, d * scale) for p, d in zip(model.parameters(), direction, strict=True))
    before = [p.grad.clone() for p in model.parameters()]
    clip_gradients(optimizer, 10.0)
    clip_gradients(optimizer, 0.0)  # off
    assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before, strict=True))


def test_the_ddp_engine_clips_before_its_optimiser_step(monkeypatch):
    from dtrain.distributed.context import DistContext
    from dtrain.engine.ddp import DDPEngine

    cfg = load_config("digits_resnet20", ["optim.clip_grad_norm=0.5", "optim.weight_decay=0", "optim.momentum=0",
                                          "train.device=cpu"])
    engine = DDPEngine(cfg, DistContext(), models.build("resnet20", 10))
    seen = []
    monkeypatch.setattr(engine.optimizer, "step", lambda: seen.append(_global_norm(engine.model)))
    logits = engine.forward(torch.randn(4, 3, 16, 16), boundary=True)
    engine.backward(logits.pow(2).sum() * 100, boundary=True)
    assert _global_norm(engine.model) > 0.5
    engine.step()
    assert seen == [pytest.approx(0.5, rel=1e-4)]


def test_the_ddp_engine_clips_the_unscaled_gradients_under_fp16_loss_scaling(monkeypatch):
    """train.amp=fp16's GradScaler multiplies the loss (here by 1024): the clip must see the true
    gradients, so the optimiser steps with norm 0.5, not 0.5 / 1024. (A CPU GradScaler stands in
    for CUDA's: the same unscale_/step protocol.)"""
    from dtrain.distributed.context import DistContext
    from dtrain.engine.ddp import DDPEngine

    cfg = load_config("digits_resnet20", ["optim.clip_grad_norm=0.5", "train.device=cpu"])
    engine = DDPEngine(cfg, DistContext(), models.build("resnet20", 10))
    engine.precision.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    seen = []
    monkeypatch.setattr(engine.optimizer, "step", lambda: seen.append(_global_norm(engine.model)))
    logits = engine.forward(torch.randn(4, 3, 16, 16), boundary=True)
    engine.backward(logits.pow(2).sum(), boundary=True)
    assert _global_norm(engine.model) > 1024 * 0.5
    engine.step()
    assert seen == [pytest.approx(0.5, rel=1e-4)]


def test_deepspeed_clips_with_its_own_gradient_clipping(tmp_path: Path):
    cfg = load_config("resnet200_preact", ["distributed.engine=deepspeed", "optim.clip_grad_norm=1.0",
                                           "optim.name=adamw"])
    assert deepspeed_config(cfg, world_size=8)["gradient_clipping"] == 1.0
    assert deepspeed_config(load_config("resnet200_preact", ["distributed.engine=deepspeed"]), 8)[
        "gradient_clipping"] == 0.0
    override = tmp_path / "ds.json"
    override.write_text(json.dumps({"gradient_clipping": 5.0}))
    with pytest.raises(ConfigError, match="gradient_clipping=5.0 but optim.clip_grad_norm=1.0"):
        deepspeed_config(load_config("resnet200_preact", ["distributed.engine=deepspeed", "optim.clip_grad_norm=1.0",
                                                          f"distributed.deepspeed_config={override}"]), 8)


def test_deepspeed_refuses_lamb_where_it_flattens_the_parameters_naming_ddp(tmp_path: Path):
    for extra in (["distributed.zero_stage=1"], ["train.amp=bf16"]):
        with pytest.raises(ConfigError, match="optim.name=lamb .* use distributed.engine=ddp"):
            load_config("resnet200_preact", ["distributed.engine=deepspeed", "optim.name=lamb", *extra])
    stage0 = load_config("resnet200_preact", ["distributed.engine=deepspeed", "optim.name=lamb", "train.amp=none"])
    assert deepspeed_config(stage0, 8)["zero_optimization"] == {"stage": 0}
    override = tmp_path / "zero2.json"
    override.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(ConfigError, match="use distributed.engine=ddp"):
        deepspeed_config(load_config("resnet200_preact", [
            "distributed.engine=deepspeed", "optim.name=lamb", "train.amp=none",
            f"distributed.deepspeed_config={override}"]), 8)
    assert load_config("resnet200_preact", ["optim.name=lamb", "train.amp=bf16"]).optim.name == "lamb"  # ddp: fine


@pytest.mark.parametrize("overrides, message", [
    (["optim.betas=[0.9]"], "optim.betas must be"), (["optim.betas=[0.9, 1.0]"], "optim.betas must be"),
    (["optim.eps=0"], "optim.eps must be positive"), (["optim.clip_grad_norm=-1"], "optim.clip_grad_norm must not"),
    (["optim.name=lars"], "optim.name='lars' is not one of sgd, adamw, lamb"),
])
def test_bad_optimiser_values_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("digits_resnet20", overrides)
