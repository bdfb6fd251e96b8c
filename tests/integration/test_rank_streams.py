"""Every rank draws its own training-time randomness (stochastic depth, the dropout shortcut),
while the model initialisation before it is the same on every rank."""

from __future__ import annotations

import functools

import torch
from gloo_processes import run_on_gloo

from dtrain.builders import decorrelate_rank_streams


def _draws(seed: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)  # as training seeds every rank before building the model
    init = torch.rand(4)
    decorrelate_rank_streams(seed, rank)
    return init, torch.rand(8)


def test_ranks_share_the_initialisation_and_draw_differently_after_it() -> None:
    out = run_on_gloo(functools.partial(_draws, 7), 3)
    assert all(torch.equal(out[r][0], out[0][0]) for r in range(3))
    draws = [out[r][1] for r in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    torch.manual_seed(7)
    torch.rand(4)
    assert torch.equal(draws[0], torch.rand(8))  # rank 0 (a single process) keeps its stream
