"""distributed.engine=deepspeed: the same recipe trained through `deepspeed.initialize` (ZeRO
stage 0/1/2, fp16/bf16, gradient accumulation), with DeepSpeed's own checkpoints inside dtrain's.

What DeepSpeed does here and dtrain does not repeat: gradient averaging and ZeRO partitioning of
the optimiser state (engine.backward / engine.step), fp16 loss scaling, and writing the
partitioned optimiser state (engine.save_checkpoint: every rank writes its shard).

What dtrain keeps: the loop, LR schedule, evaluation, preemption and the checkpoint directory
(the loop sees only the Engine interface of dtrain/engine/engine.py, as it does for DDP).
A checkpoint is two parts, written in this order:
    CKPT_DIR/deepspeed/step-N/         DeepSpeed's checkpoint (model + each rank's optimiser shard)
    CKPT_DIR/ckpt-N.pt                 dtrain's state (position, RNG, schedule, full model weights
                                       for `dtrain eval`) naming the DeepSpeed tag, written
                                       atomically by rank 0 once every shard is on disk
so ckpt-N.pt is the commit marker: auto-resume only ever finds complete checkpoints, and a
DeepSpeed directory without its ckpt file (a crash mid-save) is deleted by the next save.

The DeepSpeed config JSON is generated from the dtrain config (deepspeed_config) and a file named
by distributed.deepspeed_config (e.g. launch/deepspeed/zero2.json) is merged over it.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtrain.checkpoint import Stateful
from dtrain.checkpoint.format import UnusableCheckpoint
from dtrain.config import RunConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.wrap import apply_sync_bn
from dtrain.engine.engine import ModelPart
from dtrain.engine.optimizer import build_optimizer, set_lr
from dtrain.engine.precision import Autocast, prepare_model, wants_channels_last
from dtrain.errors import ConfigError, DtrainError

DEEPSPEED_SUBDIR = "deepspeed"
STATE_KEY = "deepspeed"  # in dtrain's checkpoint dict: {"tag": "step-N", "config": {...}}
BATCH_KEYS = {"train_batch_size": "optim.batch_size", "train_micro_batch_size_per_gpu": "optim.batch_size",
              "gradient_accumulation_steps": "optim.grad_accum"}


def deepspeed_config(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of a dtrain run, with the override file (if any) merged over it."""
    accum = cfg.optim.grad_accum
    micro = cfg.optim.per_process_batch(world_size)  # the resolver checked that it divides
    if cfg.distributed.zero_stage not in (0, 1, 2):
        raise ConfigError(f"distributed.zero_stage={cfg.distributed.zero_stage}: dtrain supports ZeRO stage 0, 1 "
                          "or 2 (stage 3 partitions the parameters, which evaluation and sync BN do not expect)")
    generated: dict[str, Any] = {
        "train_batch_size": cfg.optim.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "zero_optimization": {"stage": cfg.distributed.zero_stage},
        # dtrain passes its own optimiser (torch's SGD or AdamW, dtrain's LAMB), which DeepSpeed has not "tested".
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": cfg.train.amp == "fp16"},
        "bf16": {"enabled": cfg.train.amp == "bf16"},
        # optim.clip_grad_norm: DeepSpeed clips the (unscaled, reduced) gradients by global norm itself.
        "gradient_clipping": cfg.optim.clip_grad_norm,
        "steps_per_print": 2**31 - 1,  # dtrain prints progress itself
        "wall_clock_breakdown": False,
    }
    if cfg.distributed.grad_compression != "none":
        # DeepSpeed's own compression: it casts each gradient bucket to this dtype, all-reduces it
        # and copies the result back, as torch's DDP hooks do. Its names are dtrain's (fp16, bf16).
        generated["communication_data_type"] = cfg.distributed.grad_compression
    if not cfg.distributed.deepspeed_config:
        return generated
    merged = _merge(generated, read_override(Path(cfg.distributed.deepspeed_config)))
    # The loop and the loaders are sized from the dtrain config: the file may not change the batch.
    for key, dtrain_key in BATCH_KEYS.items():
        if merged[key] != generated[key]:
            raise ConfigError(f"{cfg.distributed.deepspeed_config} sets {key}={merged[key]}; remove it and set "
                              f"{dtrain_key} in the recipe instead (dtrain derives {key}={generated[key]})")
    compression = generated.get("communication_data_type")
    if compression and merged["communication_data_type"] != compression:
        raise ConfigError(f"{cfg.distributed.deepspeed_config} sets communication_data_type="
                          f"{merged['communication_data_type']} but distributed.grad_compression={compression}; "
                          "remove one of the two")
    if merged["zero_optimization"].get("stage", 0) not in (0, 1, 2):
        raise ConfigError(f"{cfg.distributed.deepspeed_config}: ZeRO stage 3 is not supported; use 0, 1 or 2")
    _check_optimizer_fits(cfg, merged)
    return merged


def _check_optimizer_fits(cfg: RunConfig, merged: dict[str, Any]) -> None:
    """What an override file may not change under the dtrain config's optimiser settings."""
    path, clip = cfg.distributed.deepspeed_config, cfg.optim.clip_grad_norm
    if clip > 0 and merged["gradient_clipping"] != clip:
        raise ConfigError(f"{path} sets gradient_clipping={merged['gradient_clipping']} but optim.clip_grad_norm="
                          f"{clip}; remove one of the two")
    flattens = merged["zero_optimization"].get("stage", 0) > 0 or any(
        merged.get(key, {}).get("enabled") for key in ("fp16", "bf16"))
    if cfg.optim.name == "lamb" and flattens:  # see validation.check_engine_features
        raise ConfigError(f"{path} turns on ZeRO or fp16/bf16, which flatten the parameters that optim.name=lamb "
                          "takes layer by layer; remove it or use distributed.engine=ddp")


def read_override(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"distributed.deepspeed_config={path} does not exist "
                          "(examples in launch/deepspeed/)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"distributed.deepspeed_config={path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"distributed.deepspeed_config={path} must hold a JSON object")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


class DeepSpeedEngine:
    """The Engine interface over `deepspeed.initialize`: DeepSpeed steps the model, owns fp16/bf16
    and writes the ZeRO-partitioned optimiser state as shards of its own."""

    def __init__(self, cfg: RunConfig, ctx: DistContext, model: nn.Module) -> None:
        if cfg.train.compile:
            raise ConfigError("train.compile=true is not supported with distributed.engine=deepspeed; "
                              "use train.compile=false")
        if cfg.train.amp != "none" and ctx.device.type != "cuda":
            raise ConfigError(f"train.amp={cfg.train.amp} needs a CUDA device (DeepSpeed's {cfg.train.amp} with "
                              "BatchNorm fails on CPU); use train.amp=none on CPU")
        try:
            import deepspeed
        except ModuleNotFoundError:
            raise DtrainError("distributed.engine=deepspeed needs DeepSpeed: pip install 'dtrain[deepspeed]'") from None
        self.ctx, self.model_name = ctx, cfg.model.name
        self.channels_last = wants_channels_last(cfg.train, ctx.device)
        model = apply_sync_bn(prepare_model(model, cfg.train, ctx.device), cfg.distributed, ctx)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.ds_config = deepspeed_config(cfg, ctx.world_size)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer,
                                                    config=self.ds_config, dist_init_required=False)
        self.model = model
        # The model's dtype follows DeepSpeed's config (an override file may switch fp16 on): so do inputs.
        self.input_dtype = (torch.float16 if self.ds_config.get("fp16", {}).get("enabled")
                            else torch.bfloat16 if self.ds_config.get("bf16", {}).get("enabled") else torch.float32)
        # fp16: DeepSpeed's loss scaler skips a non-finite step and lowers the scale by itself.
        self.tolerates_non_finite = self.input_dtype == torch.float16

    def forward(self, images: torch.Tensor, *, boundary: bool) -> torch.Tensor:
        # DeepSpeed counts the micro-steps itself (gradient_accumulation_steps): `boundary` only
        # matters to backward.
        images = images.to(self.ctx.device, dtype=self.input_dtype, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits: torch.Tensor = self.engine(images)  # DeepSpeed is untyped
        return logits

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        self.engine.backward(loss)  # divides by gradient_accumulation_steps itself
        if not boundary:
            self.engine.step()  # not a boundary: only counts the micro-step

    def step(self) -> None:
        self.engine.step()  # the boundary: ZeRO reduce + optimiser update + zero_grad

    def zero_grad(self) -> None:
        self.engine.zero_grad()

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def eval_context(self) -> Autocast | None:
        # Evaluation feeds float32 batches to the bare (maybe half-precision) model: autocast casts them.
        if self.input_dtype == torch.float32:
            return None
        return functools.partial(torch.autocast, device_type=self.ctx.device.type, dtype=self.input_dtype)

    def parts(self) -> dict[str, Stateful[Any]]:
        # Full weights for `dtrain eval`; the optimiser state lives in DeepSpeed's shards.
        return {"model": ModelPart(self.model, self.model_name)}

    def save_shards(self, directory: Path, tag: str) -> dict[str, Any]:
        # Every rank writes its optimiser shard; DeepSpeed synchronises the ranks around it.
        self.engine.save_checkpoint(str(directory / DEEPSPEED_SUBDIR), tag=tag, save_latest=False)
        self.ctx.barrier()
        return {"tag": tag, "config": self.ds_config}

    def load_shards(self, directory: Path, tag: str, source: Path) -> None:
        shards = directory / DEEPSPEED_SUBDIR
        if not (shards / tag).is_dir():
            raise UnusableCheckpoint(f"checkpoint {source} has no DeepSpeed state ({shards / tag}): it was written "
                                     "by the ddp engine or copied without it; resume it with distributed.engine=ddp")
        loaded, _ = self.engine.load_checkpoint(str(shards), tag=tag, load_module_strict=True,
                                                load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise DtrainError(f"DeepSpeed could not load {shards / tag}")

    def prune_shards(self, directory: Path, kept_tags: set[str]) -> None:
        """DeepSpeed directories whose dtrain checkpoint retention removed (or never committed)."""
        for shard_dir in (directory / DEEPSPEED_SUBDIR).glob("step-*"):
            if shard_dir.name not in kept_tags:
                shutil.rmtree(shard_dir, ignore_errors=True)
