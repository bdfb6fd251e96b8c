"""`dtrain reproduce`: the paper's numbers (paper_numbers.ROWS) and the report that sets a run beside them."""

import pytest
from click.testing import CliRunner

from dtrain.analysis.paper_numbers import ROWS, get_row
from dtrain.analysis.reports import Measured, render_report
from dtrain.errors import DtrainError
from dtrain.recipes import find_recipe


def test_rows_hold_the_numbers_of_spec_md():
    assert {k: (r.params_m, r.top1_err) for k, r in ROWS.items() if k.startswith("r1-table6")} == {
        "r1-table6-resnet20": (0.27, 8.75), "r1-table6-resnet32": (0.46, 7.51), "r1-table6-resnet44": (0.66, 7.17),
        "r1-table6-resnet56": (0.85, 6.97), "r1-table6-resnet110": (1.7, 6.43), "r1-table6-resnet1202": (19.4, 7.93)}
    assert (ROWS["r1-table3-resnet152"].top1_err, ROWS["r1-table3-resnet152"].top5_err) == (21.43, 5.71)
    assert ROWS["r1-table3-resnet152"].multiply_adds == 11.3e9
    assert (ROWS["r1-table3-resnet34c"].top1_err, ROWS["r1-table3-resnet34c"].top5_err) == (24.19, 7.40)
    assert ROWS["r1-table2-plain18"].top1_err == 27.94
    assert ROWS["r2-table3-resnet1001-preact"].top1_err == 4.92
    assert ROWS["r2-table3-resnet164-preact-cifar100"].top1_err == 24.33
    assert (ROWS["r2-table5-resnet200-preact"].top1_err, ROWS["r2-table5-resnet200-preact"].top5_err) == (20.7, 5.3)


def test_every_row_names_an_existing_recipe_and_model():
    from dtrain import models

    for row in ROWS.values():
        assert find_recipe(row.recipe).is_file(), row.key
        assert row.model in models.names(), row.key


def test_unknown_row_suggests_close_names():
    with pytest.raises(DtrainError, match="did you mean r1-table6-resnet110"):
        get_row("r1-table6-resnet11")


def measured(**changes) -> Measured:
    # params and multiply-adds as dtrain.models.complexity counts ResNet-20 at 32x32
    values = dict(top1_err=9.31, top5_err=0.41, params=269_722, multiply_adds=40_551_040, input_size=32,
                  iterations=64000, full_iterations=64000, dataset="cifar10", data_root="/data/cifar10",
                  eval_mode="center", recipe="cifar10_resnet20", run_id="ab" * 16, run_dir="runs/x")
    values.update(changes)
    return Measured(**values)


def test_report_sets_measured_beside_paper_numbers():
    text = render_report(ROWS["r1-table6-resnet20"], measured())
    assert "| top-1 error % | 8.75 | 9.31 | +0.56 |" in text
    assert "| params | 0.27M | 0.27M | -0.1% |" in text
    assert "40.6e6" in text and "ab" * 16 in text
    assert "SHORTENED" not in text and "Different dataset" not in text


def test_report_flags_shortened_runs_and_other_datasets():
    text = render_report(ROWS["r1-table6-resnet110"], measured(iterations=200, budget_iters=200, dataset="digits"))
    assert "**SHORTENED RUN**: 200 iterations (0.31% of the recipe's 64000)" in text
    assert "**Different dataset**: the paper measured on CIFAR-10, this run used digits" in text
    assert "6.43" in text and "best of 5 runs" in text
    # a run that stopped early is flagged even without --budget-iters (dtrain reproduce --report-only)
    assert "**SHORTENED RUN**: 3000 iterations" in render_report(ROWS["r1-table6-resnet110"], measured(iterations=3000))


def test_imagenet_report_has_top5_and_flops():
    row = ROWS["r1-table3-resnet50"]
    text = render_report(row, measured(top1_err=23.1, top5_err=6.9, params=25_557_032, multiply_adds=3_857_973_248,
                                       input_size=224, dataset="imagenet", eval_mode="center"))
    assert "| top-5 error % | 6.71 | 6.90 | +0.19 |" in text
    assert "| multiply-adds (224x224) | 3.80e9 | 3.86e9 | +1.5% |" in text
    assert "10-crop" in text and "eval.mode=center" in text


def test_list_shows_every_row():
    from dtrain.commands.reproduce import reproduce

    result = CliRunner().invoke(reproduce, ["--list"])
    assert result.exit_code == 0
    assert all(key in result.output for key in ROWS)
