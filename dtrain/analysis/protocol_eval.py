"""Run a paper's test protocol on checkpoints: one model, or an ensemble of several (R1 Table 5).

The training loop validates with the recipe's cheap eval.mode (a centre crop); a table of the
papers was measured otherwise (10-crop, multi-scale, a 320 crop), so `dtrain reproduce` tests the
final and the best checkpoint again with the row's protocol (paper_protocols) before it compares;
a run with a weight EMA (ema.enabled) is tested with the EMA's weights too (final_ema: the final
checkpoint's EMA, best_ema: best_ema.pt), since a published number may be either model's.

An ensemble's prediction is the mean of its members' softmax scores, each member's scores being
averaged over the protocol's views first (R1 sec. 3.4 / 4.1). `EnsembleModel` returns the log
of that mean, so the standard evaluator (softmax of its output) averages exactly those scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dtrain.analysis.paper_protocols import Protocol
from dtrain.builders import build_val_loader, load_for_inference
from dtrain.checkpoint.manager import BEST_EMA_NAME, CheckpointManager
from dtrain.distributed.context import DistContext
from dtrain.engine.evaluate import evaluate
from dtrain.errors import DtrainError
from dtrain.resolve import check_data_root

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class CheckpointWeights:
    """One set of weights a protocol is run on: a checkpoint file and which of its models."""
    which: str  # "final" | "best" | "final_ema" | "best_ema"
    path: Path
    weights_of: str = "model"  # builders.load_for_inference: "model" (live weights) or "ema"


@dataclass(frozen=True)
class ProtocolResult:
    which: str  # "final" | "best" | "final_ema" | "best_ema" | "ensemble"
    protocol: str
    eval_mode: str
    paths: tuple[str, ...]
    top1_err: float
    top5_err: float
    samples: int
    overrides: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"which": self.which, "protocol": self.protocol, "eval_mode": self.eval_mode,
                "paths": list(self.paths), "top1_err": self.top1_err, "top5_err": self.top5_err,
                "samples": self.samples, "overrides": list(self.overrides)}


class EnsembleModel(nn.Module):
    """log(mean_i softmax(member_i(x))): softmax of the output is the members' mean score."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-30))


def run_checkpoints(run_dir: Path) -> dict[str, Path]:
    """{"final": newest ckpt-*.pt, "best": best.pt} of a finished run (best only if written)."""
    manager = CheckpointManager(Path(run_dir) / CHECKPOINT_DIR)
    found = manager.checkpoints()
    if not found:
        raise DtrainError(f"{run_dir}/{CHECKPOINT_DIR} holds no checkpoint: the run did not save one; train it first")
    chosen = {"final": found[-1][1]}
    if manager.best_path.is_file():
        chosen["best"] = manager.best_path
    return chosen


def weights_to_test(run_dir: Path, ema: bool) -> list[CheckpointWeights]:
    """The final and best checkpoints' live weights, and with `ema` (the run's ema.enabled) the final
    checkpoint's EMA and best_ema.pt's (when written)."""
    chosen = [CheckpointWeights(which, path) for which, path in run_checkpoints(run_dir).items()]
    if ema:
        chosen.append(CheckpointWeights("final_ema", chosen[0].path, "ema"))
        best_ema = Path(run_dir) / CHECKPOINT_DIR / BEST_EMA_NAME
        if best_ema.is_file():
            chosen.append(CheckpointWeights("best_ema", best_ema, "ema"))
    return chosen


def _load(path: Path, overrides: list[str], weights_of: str):
    loaded = load_for_inference(path, overrides, weights_of=weights_of)
    return loaded.config, loaded.model


def evaluate_protocol(paths: Sequence[Path], protocol: Protocol, overrides: Sequence[str] = (),
                      which: str = "final", batch_size: int | None = None,
                      weights_of: str = "model") -> ProtocolResult:
    """Errors (%) of one checkpoint, or of the ensemble of several, under `protocol`, on the
    validation split the first checkpoint's config names (overrides may change it); weights_of="ema":
    the checkpoints' weight EMA instead of their live weights."""
    if not paths:
        raise DtrainError("no checkpoint to evaluate")
    all_overrides = [f"eval.mode={protocol.eval_mode}", *protocol.overrides, *overrides]
    loaded = [_load(Path(p), all_overrides, weights_of) for p in paths]
    cfg = loaded[0][0]
    check_data_root(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = [model.to(device) for _, model in loaded]
    model = models[0] if len(models) == 1 else EnsembleModel(models)
    ctx = DistContext(device=device)
    result = evaluate(model, build_val_loader(cfg, ctx, global_batch=batch_size), ctx)
    assert result is not None, "evaluate returns None only when a should_stop check ends it early"
    return ProtocolResult(which, protocol.name, protocol.eval_mode, tuple(str(p) for p in paths),
                          result.top1_err, result.top5_err, result.samples, tuple(all_overrides))
