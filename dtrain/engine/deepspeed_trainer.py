"""distributed.engine=deepspeed: the same recipe trained through `deepspeed.initialize` (ZeRO
stage 0/1/2, fp16/bf16, gradient accumulation), with DeepSpeed's own checkpoints inside dtrain's.

What DeepSpeed does here and dtrain does not repeat: gradient averaging and ZeRO partitioning of
the optimiser state (engine.backward / engine.step), fp16 loss scaling, and writing the
partitioned optimiser state (engine.save_checkpoint: every rank writes its shard).

What dtrain keeps: the loop, LR schedule, evaluation, preemption and the checkpoint directory.
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
import torch.nn.functional as F
from torch import nn

from dtrain.config import RunConfig, check_world_size
from dtrain.distributed.wrap import ENGINES
from dtrain.engine.loop import NonFiniteLossError, Trainer
from dtrain.engine.state import build_state
from dtrain.errors import ConfigError, DtrainError

DEEPSPEED_SUBDIR = "deepspeed"
STATE_KEY = "deepspeed"  # in dtrain's checkpoint dict: {"tag": "step-N", "config": {...}}
BATCH_KEYS = {"train_batch_size": "optim.batch_size", "train_micro_batch_size_per_gpu": "optim.batch_size",
              "gradient_accumulation_steps": "optim.grad_accum"}


def deepspeed_config(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of a dtrain run, with the override file (if any) merged over it."""
    accum = cfg.optim.grad_accum
    micro = check_world_size(cfg, world_size)
    if cfg.distributed.zero_stage not in (0, 1, 2):
        raise ConfigError(f"distributed.zero_stage={cfg.distributed.zero_stage}: dtrain supports ZeRO stage 0, 1 "
                          "or 2 (stage 3 partitions the parameters, which evaluation and sync BN do not expect)")
    generated: dict[str, Any] = {
        "train_batch_size": cfg.optim.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "zero_optimization": {"stage": cfg.distributed.zero_stage},
        # dtrain passes torch.optim.SGD (the papers' optimiser), which DeepSpeed has not "tested".
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": cfg.train.amp == "fp16"},
        "bf16": {"enabled": cfg.train.amp == "bf16"},
        "gradient_clipping": 0.0,
        "steps_per_print": 2**31 - 1,  # dtrain prints progress itself
        "wall_clock_breakdown": False,
    }
    if not cfg.distributed.deepspeed_config:
        return generated
    merged = _merge(generated, read_override(Path(cfg.distributed.deepspeed_config)))
    # The loop and the loaders are sized from the dtrain config: the file may not change the batch.
    for key, dtrain_key in BATCH_KEYS.items():
        if merged[key] != generated[key]:
            raise ConfigError(f"{cfg.distributed.deepspeed_config} sets {key}={merged[key]}; remove it and set "
                              f"{dtrain_key} in the recipe instead (dtrain derives {key}={generated[key]})")
    if merged["zero_optimization"].get("stage", 0) not in (0, 1, 2):
        raise ConfigError(f"{cfg.distributed.deepspeed_config}: ZeRO stage 3 is not supported; use 0, 1 or 2")
    return merged


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


def _keep_model(model: nn.Module, dist_cfg, ctx) -> nn.Module:
    """The engine registry entry: nothing to wrap yet; DeepSpeedTrainer initialises DeepSpeed once the
    optimiser exists (deepspeed.initialize needs both)."""
    return model


ENGINES.setdefault("deepspeed", _keep_model)


class DeepSpeedTrainer(Trainer):
    """The dtrain Trainer with DeepSpeed stepping the model and writing the optimiser state."""

    def __init__(self, cfg: RunConfig, ctx, model: nn.Module, train_loader, eval_loader, *, stream=None) -> None:
        if cfg.train.compile:
            raise ConfigError("train.compile=true is not supported with distributed.engine=deepspeed; "
                              "use train.compile=false")
        if cfg.train.amp != "none" and ctx.device.type != "cuda":
            raise ConfigError(f"train.amp={cfg.train.amp} needs a CUDA device (DeepSpeed's {cfg.train.amp} with "
                              "BatchNorm fails on CPU); use train.amp=none on CPU")
        # DeepSpeed owns mixed precision (its fp16/bf16 sections): the base Trainer must not autocast.
        cfg_fp32 = _with_amp(cfg, "none")
        super().__init__(cfg_fp32, ctx, model, train_loader, eval_loader, stream=stream)
        self.cfg = cfg
        try:
            import deepspeed
        except ModuleNotFoundError:
            raise DtrainError("distributed.engine=deepspeed needs DeepSpeed: pip install 'dtrain[deepspeed]'") from None
        self.ds_config = deepspeed_config(cfg, ctx.world_size)
        self.engine, _, _, _ = deepspeed.initialize(model=self.bare, optimizer=self.optimizer,
                                                    config=self.ds_config, dist_init_required=False)
        self.forward_model = self.engine
        # The model's dtype follows DeepSpeed's config (an override file may switch fp16 on): so do inputs.
        self.input_dtype = (torch.float16 if self.ds_config.get("fp16", {}).get("enabled")
                            else torch.bfloat16 if self.ds_config.get("bf16", {}).get("enabled") else torch.float32)
        if self.input_dtype != torch.float32:
            # Evaluation feeds float32 batches to the bare (now half-precision) model: autocast casts them.
            self.precision.autocast = functools.partial(torch.autocast, device_type=ctx.device.type,
                                                        dtype=self.input_dtype)
        self.deepspeed_dir = cfg.resolved_checkpoint_dir() / DEEPSPEED_SUBDIR

    # -- one optimiser step ------------------------------------------------------------------------

    def _step(self, micro: list) -> tuple[torch.Tensor, torch.Tensor]:
        device, engine = self.ctx.device, self.engine
        loss_sum = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device)
        seen = 0
        for index, (images, labels) in enumerate(micro):
            images = images.to(device, dtype=self.input_dtype, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if self.precision.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = engine(images)
            loss = F.cross_entropy(logits.float(), labels)
            engine.backward(loss)  # divides by gradient_accumulation_steps itself
            if index < len(micro) - 1:
                engine.step()  # not a boundary: only counts the micro-step
            loss_sum += loss.detach() / len(micro)
            wrong += (logits.detach().argmax(dim=1) != labels).sum()
            seen += labels.numel()
        global_loss = self.ctx.all_reduce_sum(loss_sum.clone()) / self.ctx.world_size
        loss_value = float(global_loss)
        if not torch.isfinite(global_loss).item() and self.input_dtype != torch.float16:
            # (fp16: DeepSpeed's loss scaler skips the step and lowers the scale by itself.)
            engine.zero_grad()
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {self.position.step + 1} (epoch {self.position.epoch}); training "
                f"stopped before the optimiser step. Last good checkpoint: "
                f"{self.position.last_checkpoint or 'none written yet'}. Lower optim.lr or check the data")
        engine.step()  # the boundary: ZeRO reduce + optimiser update + zero_grad
        return global_loss, 100.0 * wrong / max(seen, 1)

    # -- checkpoints -------------------------------------------------------------------------------

    def _save(self, evaluated) -> None:
        tag = f"step-{self.position.step}"
        # Every rank writes its optimiser shard; DeepSpeed synchronises the ranks around it.
        self.engine.save_checkpoint(str(self.deepspeed_dir), tag=tag, save_latest=False)
        self.ctx.barrier()
        state = build_state(cfg=self.cfg, model=self.bare, optimizer=self.optimizer, schedule=self.schedule,
                            scaler=None, position=self.position,
                            tracker_run_id=self.tracker.run_id if self.tracker else None)
        state[STATE_KEY] = {"tag": tag, "config": self.ds_config}
        metric = evaluated.top1_err if evaluated is not None else None
        self.position.last_checkpoint = self.checkpoints.save(state, self.position.step, metric=metric)
        if self.ctx.is_main:
            self._remove_unreferenced_deepspeed_dirs()
        self.policy.mark_saved()
        self.tracker.flush()

    def _remove_unreferenced_deepspeed_dirs(self) -> None:
        """DeepSpeed directories whose ckpt-N.pt retention removed (or never committed)."""
        kept = {f"step-{step}" for step, _ in self.checkpoints.checkpoints()}
        for directory in self.deepspeed_dir.glob("step-*"):
            if directory.name not in kept:
                shutil.rmtree(directory, ignore_errors=True)

    def _resume(self) -> None:
        # dtrain's part first (position, schedule, RNG, weights), finding the checkpoint as for DDP; the
        # optimiser state is DeepSpeed's to restore (ZeRO shards), so the base optimiser is not touched.
        optimizer, self.optimizer = self.optimizer, _NoOptimizer()
        try:
            super()._resume()
        finally:
            self.optimizer = optimizer
        if self.position.resumed_from is None:
            return
        path = self.position.resumed_from
        tag = f"step-{self.position.step}"
        directory = Path(path).parent / DEEPSPEED_SUBDIR
        if not (directory / tag).is_dir():
            raise DtrainError(f"checkpoint {path} has no DeepSpeed state ({directory / tag}): it was written by "
                              "the ddp engine or copied without it; resume it with distributed.engine=ddp, or "
                              "start afresh with checkpoint.resume=never")
        loaded, _ = self.engine.load_checkpoint(str(directory), tag=tag, load_module_strict=True,
                                                load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise DtrainError(f"DeepSpeed could not load {directory / tag}")


class _NoOptimizer:
    """Stands in for the optimiser while dtrain restores its part of a checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def _with_amp(cfg: RunConfig, amp: str) -> RunConfig:
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp))
