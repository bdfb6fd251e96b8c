"""Where an analysed model comes from: a trainer checkpoint (weights + resolved config) or a
registry name with fresh He-initialised weights (for a look at an untrained net, and for tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtrain.config import RunConfig, from_dict, load_config
from dtrain.errors import DtrainError
from dtrain.train import build_model

# Keys under which a checkpoint may hold the model weights and the resolved config (the trainer
# writes the first of each; the others accept plain `torch.save({"state_dict": ...})` files).
MODEL_KEYS = ("model", "state_dict", "model_state")
CONFIG_KEYS = ("config", "cfg", "run_config")


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


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP saves 'module.x', torch.compile '_orig_mod.x': the bare model has plain 'x'."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[k] for k in keys if k in mapping), None)


def from_checkpoint(path: Path, label: str | None = None) -> LoadedModel:
    from dtrain.checkpoint import atomic_load  # checks the file against its sidecar's SHA-256

    file = checkpoint_file(path)
    state = atomic_load(file, map_location="cpu")
    weights = _first(state, MODEL_KEYS) if isinstance(state, dict) else None
    raw_config = _first(state, CONFIG_KEYS) if isinstance(state, dict) else None
    if weights is None or raw_config is None:
        raise DtrainError(f"{file} holds no model weights and config ({MODEL_KEYS[0]!r}, {CONFIG_KEYS[0]!r}); "
                          "is it a checkpoint written by `dtrain train`?")
    config = raw_config if isinstance(raw_config, RunConfig) else from_dict(RunConfig, dict(raw_config))
    model = build_model(config.model)
    try:
        model.load_state_dict(_strip_wrappers(dict(weights)))
    except RuntimeError as exc:
        raise DtrainError(f"{file}: weights do not fit {config.model.name} ({str(exc).splitlines()[0]})") from None
    step = state.get("step")
    default_label = config.model.name + (f" (iter {step})" if step is not None else "")
    return LoadedModel(label or default_label, model, config, str(file))


def from_registry(name: str, recipe: str, overrides: tuple[str, ...] = (), label: str | None = None,
                  seed: int = 0) -> LoadedModel:
    """A freshly initialised registry model; the recipe supplies num_classes and the data section."""
    from dtrain import models

    if name not in models.names():
        from dtrain.suggest import did_you_mean

        hint = did_you_mean(name, models.names(), n=3, fallback="")
        raise DtrainError(f"unknown model {name!r}{hint}; `dtrain models` lists them")
    config = load_config(recipe, (*overrides, f"model.name={name}"))
    torch.manual_seed(seed)
    model = build_model(config.model)
    return LoadedModel(label or f"{name} (He init)", model, config, "He init")
