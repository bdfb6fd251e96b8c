"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes", Algorithm 2), written by hand: torch has no LAMB, and DeepSpeed's FusedLamb is a CUDA
kernel (it also clamps the trust ratio to [0.01, 10], which the paper and timm do not).

This follows timm's `Lamb` (timm/optim/lamb.py, the optimiser of ResNet strikes back) step for step,
so a recipe's numbers mean the same here:
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2          (Adam moments)
    u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + wd * w    (bias-corrected, decay in u)
    w = w - lr * r * u,  r = ||w|| / ||u|| per parameter tensor (1 if either norm is 0)
A group with weight_decay 0 (the exempt group of optim.no_decay) takes the plain Adam
update (r = 1), as timm does unless always_adapt. timm's Lamb also clips the global gradient norm
at 1.0 inside the step; here clipping is optim.clip_grad_norm for every optimiser (set it to 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        weight_decay = group["weight_decay"]
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        step, exp_avg, exp_avg_sq, grad = state["step"], state["exp_avg"], state["exp_avg_sq"], param.grad
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(group["eps"])
        update = (exp_avg / (1 - beta1 ** step)).div_(denom)
        if weight_decay != 0:
            update.add_(param, alpha=weight_decay)
            update.mul_(trust_ratio(param, update))
        param.add_(update, alpha=-group["lr"])


def trust_ratio(param: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """||w|| / ||u|| (a 0-d tensor: no host sync), 1 where either norm is 0."""
    w_norm, u_norm = param.norm(2.0), update.norm(2.0)
    one = torch.ones_like(w_norm)
    return torch.where(w_norm > 0, torch.where(u_norm > 0, w_norm / u_norm, one), one)
