"""The degradation table: does a set of runs show R1's direction (Fig. 6)?"""

from pathlib import Path

import pytest

from dtrain.analysis.experiments import DegradationOptions, NetResult, direction_verdict, markdown_table, net_names
from dtrain.analysis.training_runs import shortened_schedule
from dtrain.errors import DtrainError


def results(plain: list[float], resnet: list[float]) -> list[NetResult]:
    out = []
    for kind, errors in (("plain", plain), ("resnet", resnet)):
        for depth, err in zip((20, 32, 44, 56), errors):
            out.append(NetResult(f"{kind}{depth}", kind, depth, 270_000, 120, err, err + 1, 60.0, "runs/x"))
    return out


def test_paper_direction_is_recognised():
    verdict = direction_verdict(results([10, 12, 15, 20], [9, 8, 8, 7]))
    assert verdict["plain"].startswith("yes") and verdict["resnet"].startswith("yes")


def test_runs_against_the_paper_are_reported_as_such():
    verdict = direction_verdict(results([20, 15, 12, 10], [7, 8, 9, 12]))
    assert verdict["plain"].startswith("no") and verdict["resnet"].startswith("no")
    # measured on digits (120 iterations): plain 44 and 56 both near chance, not in order
    verdict = direction_verdict(results([37.08, 56.04, 81.04, 77.29], [7.71, 13.12, 7.71, 6.46]))
    assert verdict["plain"].startswith("partly") and verdict["resnet"].startswith("yes")
    # 400 iterations: both ResNets at ~0%; 0.21 vs 0.00 is a tie, not a degradation
    assert direction_verdict(results([1.04, 5, 20, 38.33], [0.0, 0.1, 0.1, 0.21]))["resnet"].startswith("yes")


def test_table_lists_every_net_and_the_verdict():
    table = markdown_table(results([10, 12, 15, 20], [9, 8, 8, 7]), DegradationOptions(out=Path("x"), budget_iters=120))
    assert "| plain56 | 56 | 0.27M | 120 | 20.00 | 21.00 | 60 |" in table
    assert "120 iterations (shortened" in table and "- plain nets, deeper = higher training error? yes" in table


def test_plain_and_resnet_of_each_depth():
    assert net_names((20, 56)) == [("plain20", "plain", 20), ("plain56", "plain", 56),
                                   ("resnet20", "resnet", 20), ("resnet56", "resnet", 56)]


def test_shortened_schedule_keeps_r1_proportions():
    # R1: lr / 10 at 32k and 48k of 64k iterations
    assert shortened_schedule(64000)[1] == "schedule.milestones=[32000,48000]"
    assert shortened_schedule(120)[1:] == ["schedule.milestones=[60,90]", "schedule.epochs=null",
                                           "schedule.max_iters=120",
                                           "schedule.iters_at_batch=null"]  # the budget is at the run's batch
    with pytest.raises(DtrainError):
        shortened_schedule(2)
