"""Typed configuration of a training run: dataclasses, YAML recipes, dotted overrides, validation.

A recipe is a YAML file in `configs/` (possibly `extends:` another one). The CLI applies dotted
overrides (`optim.lr=0.2 data.root=/data/imagenet`) on top. Every section is a dataclass, and
each part of the program receives only the section it needs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dtrain.errors import ConfigError, did_you_mean
from dtrain.recipes import find_recipe, load_recipe_yaml, recipe_dirs, recipe_names  # noqa: F401 (re-exported)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ModelConfig:
    name: str = "resnet50"
    num_classes: int = 1000
    # Passed to dtrain.models.build: shortcut ("A"|"B"|"C"), stride_in_1x1, zero_init_residual, ...
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    root: str = ""  # a directory written by `dtrain prepare`
    loader: str = "torch"  # torch | dali | ffcv | synthetic
    source: str = "shards"  # torch loader: "shards" (webdataset tars by offset) | "files" (jpeg tree)
    train_split: str = "train"
    val_split: str = "val"
    # Train augmentation, by name (see dtrain.data.transforms):
    #   scale_jitter        R1: shorter side random in scale_range, crop_size crop, flip
    #   random_resized_crop R2 "scale+aspect ratio" (Inception-style)
    #   pad_crop            CIFAR: pad by `pad`, random crop_size crop, flip
    #   none                resize/centre crop only
    train_augment: str = "scale_jitter"
    scale_range: list[int] = field(default_factory=lambda: [256, 480])
    rrc_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    rrc_ratio: list[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    crop_size: int = 224
    pad: int = 4
    flip: bool = True
    lighting_std: float = 0.1  # AlexNet PCA colour augmentation; 0 disables
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    val_resize: int = 256  # shorter side before the centre crop
    val_crop: int = 224
    workers: int = 2  # loader worker processes per training process
    # data.loader=ffcv: "random" (a global permutation per epoch, exact resume) or "quasi_random"
    # (FFCV's page-wise order for datasets larger than RAM); os_cache: let the OS page cache hold the .beton
    ffcv_order: str = "random"
    ffcv_os_cache: bool = True
    # synthetic loader only
    synthetic_samples: int = 1024
    synthetic_image_size: int = 224


@dataclass
class OptimConfig:
    name: str = "sgd"
    batch_size: int = 256  # global mini-batch, divided over all processes
    lr: float = 0.1  # at reference_batch; see scale_lr
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_bn_bias: bool = False  # exclude BN parameters and biases from weight decay
    scale_lr: bool = False  # linear scaling rule: lr * batch_size / reference_batch
    reference_batch: int = 256
    grad_accum: int = 1


@dataclass
class ScheduleConfig:
    # step_epochs | step_iters | plateau | constant | cosine
    kind: str = "step_epochs"
    milestones: list[int] = field(default_factory=lambda: [30, 60])  # in epochs or iterations
    gamma: float = 0.1
    epochs: int | None = 90
    max_iters: int | None = None  # stops the run when reached (takes precedence over epochs)
    # Warm-up: "none" | "constant" (R1 ResNet-110: lr warmup_lr until warmup_iters) | "linear"
    warmup: str = "none"
    warmup_iters: int = 0
    warmup_lr: float = 0.01
    plateau_patience: int = 3  # evaluations without improvement of validation error
    plateau_threshold: float = 1e-3
    min_lr: float = 0.0


@dataclass
class DistributedConfig:
    engine: str = "ddp"  # ddp | deepspeed
    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    sync_bn: bool = False  # BN statistics over the whole global batch
    zero_stage: int = 0  # DeepSpeed ZeRO stage (engine=deepspeed)
    deepspeed_config: str | None = None  # a JSON file that overrides the generated one
    timeout_minutes: int = 30
    find_unused_parameters: bool = False


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    log_every_iters: int = 50
    sync_every: int = 0  # steps between the loop's host syncs/all_reduces (0: log_every_iters)
    max_epochs_override: int | None = None


@dataclass
class EvalConfig:
    mode: str = "center"  # center | ten-crop | multi-scale | single-320
    every_epochs: int = 1
    every_iters: int = 0  # for iteration-based recipes (0: per epoch)
    batch_size: int = 256  # global
    scales: list[int] = field(default_factory=lambda: [224, 256, 384, 480, 640])


@dataclass
class CheckpointConfig:
    dir: str = ""  # default: RUN_DIR/checkpoints
    every_iters: int = 0
    every_minutes: float = 30.0
    at_epoch_end: bool = True
    keep_last: int = 3
    keep_best: bool = True
    resume: str = "auto"  # auto | never | a checkpoint path


@dataclass
class TrackingConfig:
    backend: str = "mlflow"  # mlflow | jsonl | none
    uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/mlflow.db
    experiment: str = "dtrain"
    run_name: str | None = None
    metrics_every_iters: int = 50  # aggregate (mean) train metrics over this many iterations
    flush_every_seconds: float = 30.0


@dataclass
class RunConfig:
    recipe: str = ""
    description: str = ""
    paper: str = ""  # where the recipe comes from, e.g. "R1 section 4.2"
    run_dir: str = ""  # default: runs/RECIPE
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or Path("runs") / (self.recipe or "run"))

    def resolved_checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir) if self.checkpoint.dir else self.resolved_run_dir() / "checkpoints"


def load_config(recipe: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Resolve a recipe name or YAML path plus `a.b=value` overrides into a validated RunConfig."""
    path = find_recipe(recipe)
    raw = load_recipe_yaml(path)
    raw.setdefault("recipe", path.stem)
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(raw, key, value)
    config = from_dict(RunConfig, raw)
    validate(config)
    return config


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.lr=0.2")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key before '='")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return key, value


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with typed checks
# ---------------------------------------------------------------------------------------------


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
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


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
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
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
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


# ---------------------------------------------------------------------------------------------
# Validation of values (types are checked while building the dataclasses)
# ---------------------------------------------------------------------------------------------

_CHOICES: dict[str, tuple[str, ...]] = {
    "data.loader": ("torch", "dali", "ffcv", "synthetic"),
    "data.source": ("shards", "files"),
    "data.ffcv_order": ("random", "quasi_random"),
    "data.train_augment": ("scale_jitter", "random_resized_crop", "pad_crop", "none"),
    "optim.name": ("sgd",),
    "schedule.kind": ("step_epochs", "step_iters", "plateau", "constant", "cosine"),
    "schedule.warmup": ("none", "constant", "linear"),
    "distributed.engine": ("ddp", "deepspeed"),
    "distributed.backend": ("auto", "nccl", "gloo"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.amp": ("none", "bf16", "fp16"),
    "eval.mode": ("center", "ten-crop", "multi-scale", "single-320"),
    "tracking.backend": ("mlflow", "jsonl", "none"),
}


def validate(config: RunConfig) -> None:
    flat = flatten(to_dict(config))
    for key, allowed in _CHOICES.items():
        value = flat[key]
        if value not in allowed:
            raise ConfigError(
                f"{key}={value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), list(allowed))}"
            )
    positive = ["optim.batch_size", "optim.reference_batch", "optim.grad_accum", "eval.batch_size",
                "data.crop_size", "data.val_crop", "data.val_resize"]
    for key in positive:
        if flat[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {flat[key]}")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {config.optim.lr}")
    low, high = config.data.scale_range
    if len(config.data.scale_range) != 2 or low > high:
        raise ConfigError(f"data.scale_range must be [low, high] with low <= high, got {config.data.scale_range}")
    if config.schedule.epochs is None and config.schedule.max_iters is None:
        raise ConfigError("set schedule.epochs or schedule.max_iters: the run needs an end")


def check_data_root(config: RunConfig) -> Path | None:
    """Training needs prepared data (except the synthetic loader); say how to get it."""
    if config.data.loader == "synthetic":
        return None
    if not config.data.root:
        raise ConfigError(
            "data.root is empty: point it at a directory written by `dtrain prepare` "
            "(e.g. data.root=/data/imagenet-prepared) or use data.loader=synthetic"
        )
    root = Path(config.data.root)
    if not (root / "manifest.parquet").is_file():
        raise ConfigError(
            f"data.root={root} holds no prepared dataset (no manifest.parquet); "
            f"run `dtrain prepare ... --out {root}` first"
        )
    return root


def check_world_size(config: RunConfig, world_size: int) -> int:
    """The per-process batch; a global batch that does not divide by the world size is an error."""
    accum = config.optim.grad_accum
    global_batch = config.optim.batch_size
    if global_batch % (world_size * accum):
        raise ConfigError(
            f"optim.batch_size={global_batch} does not divide by world size {world_size} x grad_accum "
            f"{accum}; choose a multiple of {world_size * accum} (e.g. optim.batch_size="
            f"{max(1, round(global_batch / (world_size * accum))) * world_size * accum})"
        )
    return global_batch // (world_size * accum)
