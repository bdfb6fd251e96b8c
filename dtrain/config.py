"""Typed configuration of a training run: the dataclasses and the typed dict -> dataclass step.

Every section is a dataclass, and each part of the program receives only the section it needs.
This module is a leaf (it imports no other dtrain module but the errors): reading a recipe,
applying `key=value` overrides, derived settings, smoke mode, device defaults, world-size checks
and value validation are the resolver's stages (dtrain.resolve), which turns a recipe into the
RunConfig a run uses.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dtrain.errors import ConfigError, did_you_mean

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def knob(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A config field whose help text `dtrain keys` and `dtrain train --help` print. `{choices}` in it
    becomes the names the key accepts, read from the registry that implements them (validation.CHOICES),
    so the help never lists names of its own."""
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class ModelConfig:
    name: str = knob("resnet50", "a network of `dtrain models` (resnet50, resnet110, resnet200_preact, ...)")
    num_classes: int = knob(1000, "outputs of the classifier (1000 ImageNet, 10/100 CIFAR, 10 digits)")
    options: dict[str, Any] = knob(factory=dict, help="builder options: shortcut (A|B|C), unit, stride_in_1x1, "
                                                      "zero_init_residual, ... (see `dtrain models`)")


@dataclass
class DataConfig:
    root: str = knob("", "a directory written by `dtrain prepare`")
    loader: str = knob("torch", "{choices} (auto: gpu on CUDA, else torch)")
    source: str = knob("shards", "torch loader: {choices} (shards: webdataset tars by offset; files: the JPEG tree)")
    train_split: str = knob("train", "split of data.root to train on")
    val_split: str = knob("val", "split of data.root to evaluate on")
    # Train augmentation, by name (see dtrain.data.transforms).
    train_augment: str = knob("scale_jitter", "{choices} (scale_jitter: R1, shorter side in scale_range, crop, "
                                              "flip; random_resized_crop: R2; pad_crop: CIFAR)")
    scale_range: list[int] = knob(factory=lambda: [256, 480], help="[low, high] shorter side of scale_jitter")
    rrc_scale: list[float] = knob(factory=lambda: [0.08, 1.0], help="[low, high] area fraction of random_resized_crop")
    rrc_ratio: list[float] = knob(factory=lambda: [0.75, 4.0 / 3.0],
                                  help="[low, high] aspect ratio of random_resized_crop")
    crop_size: int = knob(224, "side of the square train crop (with min_res/max_res set: unused in training)")
    # Progressive resizing, FFCV's ImageNet example (libffcv/ffcv-imagenet, train_imagenet.py, get_resolution).
    min_res: int | None = knob(None, "progressive resizing: train crop side up to epoch start_ramp (0-based), then a "
                                     "linear ramp rounded to a multiple of 32; null: off (crop_size every epoch)")
    max_res: int | None = knob(None, "progressive resizing: train crop side from epoch end_ramp on")
    start_ramp: int = knob(0, "progressive resizing: last epoch at min_res")
    end_ramp: int = knob(0, "progressive resizing: first epoch at max_res")
    # Resampling filters (dtrain.data.transforms.INTERPOLATIONS): torchvision's recipes resize bilinearly,
    # timm's bicubically (test) or with either at random per sample (its train.py default).
    train_interpolation: str = knob("bilinear", "{choices}: the filter that resizes training crops (random: "
                                                "bilinear or bicubic drawn per sample, timm's default)")
    val_interpolation: str = knob("bilinear", "{choices}: the filter that resizes test images")
    pad: int = knob(4, "pad_crop: zero padding on each side before the crop")
    flip: bool = knob(True, "random horizontal flip")
    lighting_std: float = knob(0.1, "AlexNet PCA colour augmentation; 0 disables")
    # After the crop and flip, before normalisation (dtrain.data.auto_augment).
    auto_augment: str = knob("none", "none | ta_wide (TrivialAugment-wide) | ra-mM[-nN] (torchvision's "
                                     "RandAugment: magnitude bin M of 31, N ops, default 2) | rand-m9-mstd0.5-inc1 "
                                     "(timm's RandAugment string); torch and synthetic loaders, dali for ta_wide "
                                     "and ra; with pad_crop the padding is pixels the ops move")
    normalize: str = knob("channel", "{choices} (channel: (x - mean) / std per channel; per_pixel_mean: R1, the "
                                     "mean image `dtrain prepare` stores with data.root, then / std)")
    mean: list[float] = knob(factory=lambda: list(IMAGENET_MEAN), help="per-channel mean (RGB, 0..1) subtracted")
    std: list[float] = knob(factory=lambda: list(IMAGENET_STD), help="per-channel std (RGB, 0..1) divided by")
    val_resize: int = knob(256, "shorter side before the centre crop")
    val_crop: int = knob(224, "side of the evaluation centre crop")
    workers: int = knob(2, "loader worker processes per training process")
    # FFCV's page-wise order suits datasets larger than RAM; random gives exact resume.
    ffcv_order: str = knob("random", "data.loader=ffcv: {choices}")
    ffcv_os_cache: bool = knob(True, "data.loader=ffcv: let the OS page cache hold the .beton")
    gpu_decoder: str = knob("auto", "data.loader=gpu: JPEG decoder, {choices} (torchvision: nvJPEG on CUDA)")
    synthetic_samples: int = knob(1024, "data.loader=synthetic: images per split")
    synthetic_image_size: int = knob(224, "data.loader=synthetic: side of the generated images")
    # Hoffer et al. 2020 / DeiT: the copies of a sample go to different ranks in one global batch.
    repeated_augment_reps: int = knob(1, "repeated augmentation: each sampled image appears this many times per "
                                         "epoch (own augmentation each), the epoch length kept; 1: off")


@dataclass
class OptimConfig:
    name: str = knob("sgd", "optimiser: {choices}")
    batch_size: int = knob(256, "global mini-batch, divided over all processes")
    lr: float = knob(0.1, "learning rate at reference_batch; see scale_lr")
    momentum: float = knob(0.9, "SGD momentum")
    nesterov: bool = knob(False, "Nesterov momentum")
    weight_decay: float = knob(1e-4, "L2 weight decay (adamw: decoupled; lamb: added to the update)")
    no_decay: str = knob("none", "{choices}: the parameters trained without weight decay (norm_and_bias: "
                                 "normalisation layers and every bias, timm's; norm: normalisation layers only, "
                                 "torchvision's --norm-weight-decay 0; bn_named: the parameters whose name contains "
                                 "'bn', FFCV's)")
    betas: list[float] = knob(factory=lambda: [0.9, 0.999], help="adamw, lamb: [beta1, beta2] of the moment averages")
    eps: float | None = knob(None, "adamw, lamb: the denominator's epsilon (null: the optimiser's default, adamw "
                                   "1e-8, lamb 1e-6 as timm)")
    clip_grad_norm: float = knob(0.0, "clip the gradients to this global L2 norm before each step (after fp16 "
                                      "unscaling; deepspeed: its gradient_clipping); 0: off")
    scale_lr: bool = knob(False, "linear scaling rule: lr * batch_size / reference_batch")
    reference_batch: int = knob(256, "the batch size lr is given for")
    grad_accum: int = knob(1, "micro-batches accumulated per optimiser step")

    def per_process_batch(self, world_size: int) -> int:
        """The micro-batch of each process; the resolver's world-size check (dtrain.resolve) makes
        sure it divides evenly before a run starts."""
        return self.batch_size // (world_size * self.grad_accum)


@dataclass
class LossConfig:
    name: str = knob("cross_entropy", "{choices} (bce: binary cross-entropy per class on the one-hot, smoothed "
                                      "or mixed target, as timm's ResNet strikes back)")
    label_smoothing: float = knob(0.0, "target (1 - s) x one-hot + s / num_classes (Szegedy et al. 2016, sec. 7); "
                                       "0: off")
    bce_target_threshold: float | None = knob(None, "bce: targets above this become 1, the others 0 (timm's "
                                                    "--bce-target-thresh); null: off")


@dataclass
class ScheduleConfig:
    kind: str = knob("step_epochs", "{choices} (cosine, linear: decay from lr after the warm-up to min_lr at the "
                                    "run's end, per iteration)")
    milestones: list[int] = knob(factory=lambda: [30, 60], help="lr x gamma at these epochs or iterations")
    gamma: float = knob(0.1, "lr factor at each milestone or plateau")
    epochs: int | None = knob(90, "length of the run in epochs (null: use max_iters)")
    max_iters: int | None = knob(None, "stops the run when reached (takes precedence over epochs)")
    # R1's ResNet-110 warms up at lr 0.01 until training error is below 80% (about 400 iterations).
    warmup: str = knob("none", "{choices} (constant: warmup_lr until warmup_iters; linear: warmup_lr -> lr)")
    warmup_iters: int = knob(0, "iterations of warm-up (with warmup_until_err: the most)")
    warmup_epochs: int = knob(0, "warm-up length in epochs instead (x the run's iterations per epoch); "
                                 "set this or warmup_iters")
    warmup_lr: float = knob(0.01, "lr during (or at the start of) warm-up")
    warmup_until_err: float | None = knob(None, "constant warm-up: end it once the running training top-1 error "
                                                "(%, last 50 steps, checked at sync points) is below this (R1: 80)")
    plateau_patience: int = knob(3, "evaluations without improvement of validation error")
    plateau_threshold: float = knob(1e-3, "relative improvement that counts as one (plateau)")
    min_lr: float = knob(0.0, "the lr never goes below this")
    # torchvision's and timm's references call scheduler.step() once per epoch: their warm-up and
    # cosine are staircases of one value per epoch; FFCV and the papers' CIFAR runs change it per step.
    step_on: str = knob("iteration", "{choices}: when the lr changes (epoch: held for each epoch at its value at "
                                     "the epoch's first step, as torchvision's and timm's per-epoch scheduler.step())")
    decay_over: str = knob("after_warmup", "cosine, linear: {choices} (after_warmup: the decay runs from the "
                                           "warm-up's end to the run's end, torchvision's SequentialLR and FFCV; "
                                           "whole_run: over the whole run from step 0, the warm-up replacing its "
                                           "first steps, timm's CosineLRScheduler without warmup_prefix)")
    iters_at_batch: int | None = knob(None, "epoch-keeping: milestones (step_iters), max_iters and warmup_iters are "
                                            "counted at this global batch and rescaled at another optim.batch_size")


@dataclass
class DistributedConfig:
    engine: str = knob("ddp", "{choices}")
    backend: str = knob("auto", "{choices} (auto: nccl on CUDA, gloo on CPU)")
    sync_bn: bool = knob(False, "BN statistics over the whole global batch")
    bn_group_size: int = knob(0, "samples per BN group (R2: 32): sub-group sync BN below the per-process batch, "
                                 "ghost batches above it; 0: off")
    zero_stage: int = knob(0, "DeepSpeed ZeRO stage (engine=deepspeed)")
    deepspeed_config: str | None = knob(None, "a JSON file that overrides the generated DeepSpeed config")
    timeout_minutes: int = knob(30, "collective timeout of the process group")
    init_timeout_seconds: int = knob(60, "seconds to join the process group; a restart that cannot join fails fast")
    find_unused_parameters: bool = knob(True, "DDP find_unused_parameters; true also keeps DDP's gradient buckets "
                                              "in one layout all run, which bitwise resume needs beyond 2 processes "
                                              "(DDP re-buckets after a process's first step, so the first step after "
                                              "a resume would sum gradients in another order); false saves one "
                                              "autograd-graph walk per step")
    grad_compression: str = knob("none", "{choices}: gradients all-reduced in 16 bits (half the bytes; rounded "
                                         "to fp16/bf16), for slow links; ddp: torch's comm hooks (bf16 needs "
                                         "NCCL), deepspeed: communication_data_type")


@dataclass
class TrainConfig:
    seed: int = knob(0, "seed of initialisation, data order and augmentation")
    device: str = knob("auto", "{choices}")
    amp: str = knob("none", "{choices} (auto: bf16 on CUDA, else none)")
    channels_last: bool | str = knob(False, "NHWC memory format (faster convolutions on tensor cores); "
                                              "auto: true on CUDA")
    compile: bool = knob(False, "torch.compile the model")
    deterministic: bool = knob(False, "bitwise repeatable kernels (slower)")
    log_every_iters: int = knob(50, "progress line every this many iterations")
    sync_every: int = knob(0, "steps between the loop's host syncs and all_reduces (0: train.log_every_iters)")
    max_epochs_override: int | None = knob(None, "stop after this many epochs, whatever the schedule")
    # Every image size scaled down together (dtrain.smoke) and a short evaluation, so a big net
    # runs a few steps on a laptop: the dry run of a cluster launch.
    smoke: bool = knob(False, "smoke mode: small images and a short evaluation (dry-run a cluster launch)")


@dataclass
class EvalConfig:
    mode: str = knob("center", "{choices}")
    every_epochs: int = knob(1, "evaluate every this many epochs")
    every_iters: int = knob(0, "evaluate every this many iterations (0: per epoch)")
    batch_size: int = knob(256, "global evaluation batch")
    scales: list[int] = knob(factory=lambda: [224, 256, 384, 480, 640], help="shorter sides of multi-scale")
    max_samples: int = knob(0, "evaluate at most about this many images (whole batches); 0: all")
    flip_tta: bool = knob(False, "also score each view's horizontal flip and average the softmax (FFCV's test "
                                 "protocol); ten-crop and multi-scale hold their flips already")


@dataclass
class AugmentConfig:
    """Batch-level augmentation on the device, after any loader (dtrain.data.batch_mix)."""

    mixup_alpha: float = knob(0.0, "mixup (Zhang et al. 2018): Beta(alpha, alpha) mixing weight; 0: off")
    cutmix_alpha: float = knob(0.0, "CutMix (Yun et al. 2019): Beta(alpha, alpha) kept area; 0: off")
    mix_prob: float = knob(1.0, "probability that a batch is mixed at all (mixup or CutMix on)")
    switch_prob: float = knob(0.5, "both on: probability of CutMix rather than mixup for a batch")
    erasing_prob: float = knob(0.0, "random erasing (Zhong et al. 2017): probability per image (torchvision: "
                                    "0.5); the box is set to 0 after normalisation; 0: off")
    erasing_scale: list[float] = knob(factory=lambda: [0.02, 0.33], help="[low, high] area fraction of the "
                                                                         "erased box")
    erasing_ratio: list[float] = knob(factory=lambda: [0.3, 3.3], help="[low, high] aspect ratio (h/w) of the "
                                                                       "erased box")


@dataclass
class CheckpointConfig:
    dir: str = knob("", "checkpoint directory (default: RUN_DIR/checkpoints)")
    every_iters: int = knob(0, "save every this many iterations (0: off)")
    every_minutes: float = knob(30.0, "save at least this often")
    at_epoch_end: bool = knob(True, "save at the end of each epoch")
    keep_last: int = knob(3, "keep this many newest checkpoints")
    keep_best: bool = knob(True, "keep best.pt (lowest validation error)")
    resume: str = knob("auto", "{choices} (force: resume despite changed settings) | a checkpoint path")


@dataclass
class EmaConfig:
    # torchvision's recipe: --model-ema-steps 32, --model-ema-decay 0.99998 (scaled there by batch and
    # epochs); timm's ModelEmaV2 default 0.9998 every step. Here decay is per update, unscaled.
    enabled: bool = knob(False, "keep an exponential moving average of the weights and BN statistics, evaluated "
                                "beside them (val/top1_err_ema) and saved as best_ema.pt on its own metric")
    decay: float = knob(0.9998, "per update: ema = decay * ema + (1 - decay) * weights")
    every_steps: int = knob(1, "update the EMA after every this many optimiser steps")
    warmup_epochs: int = knob(0, "the EMA copies the weights (no averaging) during these first epochs, as "
                                 "torchvision's recipe does during the lr warm-up")


@dataclass
class TrackingConfig:
    backend: str = knob("mlflow", "{choices}")
    uri: str | None = knob(None, "MLflow URI (default: MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/mlflow.db)")
    experiment: str = knob("dtrain", "MLflow experiment name")
    run_name: str | None = knob(None, "MLflow run name (default: RECIPE-MMDD-HHMM-xxxx, the recipe, start time "
                                      "and 4 hex digits; the recipe is also the `recipe` tag)")
    metrics_every_iters: int = knob(50, "aggregate (mean) train metrics over this many iterations")
    flush_every_seconds: float = knob(30.0, "send buffered metrics at least this often")
    log_model: bool = knob(True, "MLflow: log the final (and best) network with mlflow.pytorch at the end")
    register_model: str | None = knob(None, "MLflow: register the best model (lowest val top-1 error) under this "
                                            "name, a new version per run")
    system_metrics: bool = knob(True, "MLflow system metrics (CPU, memory, GPU) from rank 0")
    system_metrics_interval: float = knob(10.0, "seconds between system-metric samples")


@dataclass
class RunConfig:
    recipe: str = knob("", "the recipe's name (set from the file name)")
    description: str = knob("", "one line about the recipe")
    paper: str = knob("", "where the recipe comes from, e.g. R1 section 4.2")
    run_dir: str = knob("", "where checkpoints, logs and config.yaml go (default: runs/RECIPE)")
    model: ModelConfig = knob(factory=ModelConfig, help="the network and its builder options")
    data: DataConfig = knob(factory=DataConfig, help="dataset, loader, augmentation and evaluation crops")
    optim: OptimConfig = knob(factory=OptimConfig, help="optimiser, batch size, learning rate, weight decay, clipping")
    loss: LossConfig = knob(factory=LossConfig, help="cross-entropy or BCE, label smoothing")
    schedule: ScheduleConfig = knob(factory=ScheduleConfig, help="learning-rate schedule, warm-up, length of the run")
    distributed: DistributedConfig = knob(factory=DistributedConfig, help="DDP or DeepSpeed, backend, sync BN")
    train: TrainConfig = knob(factory=TrainConfig, help="seed, device, precision, smoke mode")
    eval: EvalConfig = knob(factory=EvalConfig, help="evaluation views (centre, ten-crop, multi-scale) and cadence")
    augment: AugmentConfig = knob(factory=AugmentConfig, help="mixup, CutMix and random erasing of the batch on "
                                                              "the device")
    checkpoint: CheckpointConfig = knob(factory=CheckpointConfig, help="saving, retention and resume")
    ema: EmaConfig = knob(factory=EmaConfig, help="an exponential moving average of the weights (weight EMA)")
    tracking: TrackingConfig = knob(factory=TrackingConfig, help="MLflow, JSONL or no tracking")

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or Path("runs") / (self.recipe or "run"))

    def resolved_checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir) if self.checkpoint.dir else self.resolved_run_dir() / "checkpoints"


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with typed checks
# ---------------------------------------------------------------------------------------------


class BoolForString(ConfigError):
    """true/false where a string is expected. The resolver turns it into the fix when the key takes
    registry names (train.amp=false -> train.amp=none), which needs the registries; here it reads
    as a type error."""

    def __init__(self, key: str, value: bool) -> None:
        super().__init__(f"{key} must be a string, got {value!r}")
        self.key, self.value = key, value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown config key {prefix}{key}"
                f"{did_you_mean(key, list(fields), prefix)}"
            )
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config dataclass (resolving them costs ~1 ms per call)."""
    return typing.get_type_hints(cls)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 64.0 or 64e3: say so, never round quietly
            raise ConfigError(f"{key} must be an integer, got {value!r}: write {int(value)}")
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):  # YAML's false/true where a name may be expected (train.amp=false)
            raise BoolForString(key, value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}: the form MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)
