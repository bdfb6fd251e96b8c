"""Where an analysed model comes from: a trainer checkpoint (weights + resolved config) or a
registry name with fresh He-initialised weights (for a look at an untrained net, and for tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dtrain import models
from dtrain.builders import build_model, load_for_inference
from dtrain.config import RunConfig
from dtrain.errors import DtrainError
from dtrain.resolve import load_config
from dtrain.suggest import did_you_mean


@dataclass
class LoadedModel:
    label: str
    model: nn.Module
    config: RunConfig
    source: str  # checkpoint path, or "He init"


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or the best/newest one of a run directory or checkpoint directory."""
    if path.is_file():
        return path
    for directory in (path / "checkpoints", path):
        if (directory / "best.pt").is_file():
            return directory / "best.pt"
        found = sorted(directory.glob("ckpt-*.pt")) if directory.is_dir() else []
        if found:
            return found[-1]
    raise DtrainError(f"{path} is not a checkpoint file and holds no checkpoints/ckpt-*.pt; "
                      "pass a .pt written by `dtrain train` or a run directory")


def from_checkpoint(path: Path, label: str | None = None) -> LoadedModel:
    loaded = load_for_inference(checkpoint_file(path))
    step = loaded.state.get("train_state", {}).get("step")
    default_label = loaded.config.model.name + (f" (iter {step})" if step is not None else "")
    return LoadedModel(label or default_label, loaded.model, loaded.config, str(loaded.path))


def from_registry(name: str, recipe: str, overrides: tuple[str, ...] = (), label: str | None = None,
                  seed: int = 0) -> LoadedModel:
    """A freshly initialised registry model; the recipe supplies num_classes and the data section."""
    if name not in models.names():
        hint = did_you_mean(name, models.names(), n=3, fallback="")
        raise DtrainError(f"unknown model {name!r}{hint}; `dtrain models` lists them")
    config = load_config(recipe, (*overrides, f"model.name={name}"))
    torch.manual_seed(seed)
    model = build_model(config.model)
    return LoadedModel(label or f"{name} (He init)", model, config, "He init")
