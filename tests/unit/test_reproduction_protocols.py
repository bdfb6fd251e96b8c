"""The reproduce rows test the way the papers' tables did, and the report compares like with like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from prepared_data import write_prepared

from dtrain.analysis.paper_numbers import ROWS
from dtrain.analysis.paper_protocols import PROTOCOLS, TABLES
from dtrain.analysis.protocol_eval import (
    CheckpointWeights,
    EnsembleModel,
    ProtocolResult,
    evaluate_protocol,
    weights_to_test,
)
from dtrain.analysis.reports import Measured, render_report, repeat_statistics
from dtrain.checkpoint import atomic_save
from dtrain.checkpoint.manager import BEST_EMA_NAME
from dtrain.commands.reproduce import LATER_TITLE, PAPERS_TITLE
from dtrain.config import to_dict
from dtrain.engine.ema import EMA_PART
from dtrain.engine.lr_schedule import keep_epochs
from dtrain.resolve import load_config

# Written from the papers' captions and columns, independently of the code's TABLES: R1 Tables
# 2/3 say "10-crop testing", Table 4 is the multi-scale single model, Table 5 the ensemble, CIFAR
# tests the single original view, R2 Table 5's "test crop" column is 320x320 but for one row.
PAPER = {"R1 Table 2": "ten-crop", "R1 Table 3": "ten-crop", "R1 Table 4": "multi-scale", "R1 Table 5": "ensemble",
         "R1 Table 6": "center", "R2 Table 1": "center", "R2 Table 2": "center", "R2 Table 3": "center",
         "R2 Table 4": "center", "R2 Table 5": "single-320", "R2 sec. 5": "center",
         # the later recipes', from each project's evaluation code (later_recipes)
         "torchvision IMAGENET1K_V2": "center-232", "RSB Table 1": "center-235", "FFCV rn50 configs": "center-256-flip"}
EXCEPTIONS = {"r2-table5-resnet152-224": "center"}


def test_every_row_uses_its_tables_protocol_and_the_table_cites_it():
    for key, row in ROWS.items():
        assert row.protocol.name == EXCEPTIONS.get(key, PAPER[row.source]), key
    evidence_words = {"ten-crop": "10-crop", "multi-scale": "multi-scale", "single-320": "320",
                      "ensemble": "ensembles", "center": "single", "center-232": "resize_size=232",
                      "center-235": "crop ratio 0.95", "center-256-flip": "lr_tta"}
    for source, table in TABLES.items():
        assert table.protocol == PAPER[source]
        assert evidence_words[table.protocol] in table.evidence, source


def test_list_shows_every_row_of_the_required_tables_with_protocol():
    from dtrain.commands.reproduce import reproduce

    out = CliRunner().invoke(reproduce, ["--list"]).output
    lines = {line.split()[0]: line for line in out.splitlines()
             if line.strip() and not line.startswith(("row ", PAPERS_TITLE, LATER_TITLE))}
    assert set(lines) == set(ROWS)
    for key, row in ROWS.items():
        assert f" {row.protocol.name} " in lines[key]
    sources = {row.source for row in ROWS.values()}
    assert {f"R1 Table {n}" for n in (2, 3, 4, 5, 6)} | {f"R2 Table {n}" for n in (1, 2, 3, 4, 5)} <= sources
    # R2 Table 1 has 11 rows, Table 2 five units x two nets, Table 5 six ResNet rows
    assert sum(r.source == "R2 Table 1" for r in ROWS.values()) == 11
    assert sum(r.source == "R2 Table 2" for r in ROWS.values()) == 10
    assert sum(r.source == "R2 Table 5" for r in ROWS.values()) == 6


# What each table's numbers are over runs, written from the papers' words (not from TABLES):
PAPER_STATISTIC = {
    "R1 Table 2": "single run", "R1 Table 3": "single run", "R1 Table 4": "single run",  # no repeats stated
    "R1 Table 5": "single run",  # one ensemble, one test-server submission
    "R1 Table 6": "single run",  # caption: only "For ResNet-110, we run it 5 times"
    "R2 Table 1": "median of 5", "R2 Table 2": "median of 5", "R2 Table 3": "median of 5",  # R2 sec. 3.1:
    # "all CIFAR architectures' results in this paper are the median of 5 runs"
    "R2 Table 4": "median of 5",  # caption: "Our results are the median of 5 runs with mean+-std in brackets"
    "R2 Table 5": "single run", "R2 sec. 5": "single run",  # ImageNet, no repeats stated
    # the later recipes: one released set of weights each (timm's RSB weights: "seed 0")
    "torchvision IMAGENET1K_V2": "single run", "RSB Table 1": "single run", "FFCV rn50 configs": "single run",
}
ROW_STATISTIC = {  # rows (table, column) whose number is another statistic than their table's
    "r1-table6-resnet110": "best of 5",  # R1 Table 6, column error (%): "6.43 (6.61+-0.16)", "best (mean+-std)"
    "r2-table4-cifar10-resnet110": "mean of 5",  # R2 Table 4, CIFAR-10 error (%), "ResNet-110 [1]" 6.61:
    # R1 Table 6's mean of 5, not one of R2's own runs
    "r2-table4-cifar10-resnet1202": "single run",  # R2 Table 4, CIFAR-10 error (%), "ResNet-1202 [1]": R1's one run
}
# (mean, std) printed beside a row's number: R1 Table 6 for ResNet-110, R2 Table 4's brackets
PAPER_MEAN_STD = {"r1-table6-resnet110": (6.61, 0.16), "r2-table4-cifar10-resnet110": (6.61, 0.16),
                  "r2-table4-cifar10-resnet1001-preact": (4.89, 0.14),
                  "r2-table4-cifar10-resnet1001-preact-b64": (4.69, 0.20),
                  "r2-table4-cifar100-resnet1001-preact": (22.68, 0.22)}


def test_every_row_reports_the_statistic_over_runs_its_table_and_column_give():
    from dtrain.analysis.paper_protocols import ROW_STATISTICS, STATISTICS

    for key, row in ROWS.items():
        assert row.runs_statistic == ROW_STATISTIC.get(key, PAPER_STATISTIC[row.source]), key
        assert (row.paper_mean, row.paper_std) == PAPER_MEAN_STD.get(key, (None, None)), key
    for source, table in TABLES.items():
        assert table.statistic in STATISTICS
        assert table.statistic == "single run" or "median of 5" in table.statistic_evidence, source
    for key, (statistic, evidence) in ROW_STATISTICS.items():
        assert statistic in STATISTICS and ROWS[key].source in evidence and "column" in evidence, key
    assert ROWS["r2-table1-dropout-shortcut"].fails and ROWS["r2-table1-dropout-shortcut"].top1_err is None


def test_list_shows_each_rows_statistic():
    from dtrain.commands.reproduce import reproduce

    out = CliRunner().invoke(reproduce, ["--list"]).output
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for key, row in ROWS.items():
        assert f" {row.runs_statistic} " in lines[key], key
    assert " median of 5 " in lines["r2-table1-original"] and " mean of 5 " in lines["r2-table4-cifar10-resnet110"]


def test_a_mean_of_5_row_compares_the_mean_of_the_seeds():
    errors = [6.9, 6.43, 6.7, 6.5, 6.6]
    runs = [_measured(protocol_results=[_result("final", e, "center")]) for e in errors]
    text = render_report(ROWS["r2-table4-cifar10-resnet110"], runs[0], runs)
    assert "the paper reports: mean of 5" in text
    assert "| top-1 error % (mean of 5 runs) | 6.61 | 6.63 | +0.02 |" in text
    assert "| median | — | 6.60 |" in text and "| mean +- std | 6.61 +- 0.16 | 6.63 +- 0.18 |" in text


def test_batch_64_row_keeps_the_epochs_of_batch_128():
    at_128 = load_config("cifar10_resnet1001_preact")
    at_64 = load_config("cifar10_resnet1001_preact_b64")
    assert at_64.optim.batch_size == 64
    for attr in ("max_iters", "warmup_iters"):
        assert getattr(at_64.schedule, attr) * 64 == getattr(at_128.schedule, attr) * 128
    assert [m * 64 for m in at_64.schedule.milestones] == [m * 128 for m in at_128.schedule.milestones]
    assert keep_epochs(at_64.schedule, 64) == at_64.schedule  # resolving twice changes nothing


def _measured(**changes) -> Measured:
    values = dict(top1_err=9.0, top5_err=1.0, params=269_722, multiply_adds=40_551_040, input_size=32,
                  iterations=64000, full_iterations=64000, dataset="cifar10", data_root="/d", eval_mode="center",
                  recipe="cifar10_resnet110", run_dir="runs/x")
    values.update(changes)
    return Measured(**values)


def _result(which: str, top1: float, protocol: str = "ten-crop") -> ProtocolResult:
    return ProtocolResult(which, protocol, protocol, ("x.pt",), top1, 5.0, 50000)


def test_report_compares_the_protocol_result_not_the_training_validation():
    row = ROWS["r1-table3-resnet50"]
    text = render_report(row, _measured(top1_err=25.0, dataset="imagenet",
                                        protocol_results=[_result("final", 23.0), _result("best", 22.9)]))
    assert "| top-1 error % | 22.85 | 23.00 | +0.15 |" in text
    assert "Compared here: ten-crop on the final checkpoint" in text
    assert "| best | ten-crop | 22.90 |" in text and "| final (training loop) | center | 25.00 |" in text
    assert "Protocol not run" in render_report(row, _measured(dataset="imagenet"))


def test_seed_statistics_match_the_papers_statistic():
    errors = [6.9, 6.43, 6.7, 6.5, 6.6]
    assert repeat_statistics(errors)["best"] == 6.43 and repeat_statistics(errors)["median"] == 6.6
    runs = [_measured(protocol_results=[_result("final", e, "center")]) for e in errors]
    text = render_report(ROWS["r1-table6-resnet110"], runs[0], runs)
    assert "the paper reports: best of 5" in text
    assert "| top-1 error % (best of 5 runs) | 6.43 | 6.43 | +0.00 |" in text  # like with like
    assert "| best | 6.43 | 6.43 |" in text and "| mean +- std | 6.61 +- 0.16 | 6.63 +- 0.18 |" in text


def test_ensemble_scores_are_the_mean_of_the_members_softmax():
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(5, 4)
    expected = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    assert torch.allclose(torch.softmax(EnsembleModel(members)(x), 1), expected, atol=1e-6)


def _checkpoint(tmp_path, root, seed: int):
    from dtrain.builders import build_model

    cfg = load_config("cifar10_resnet20", [f"data.root={root}", "model.num_classes=3", "data.workers=0",
                                           "data.val_resize=32", "data.val_crop=32", f"train.seed={seed}",
                                           "data.normalize=channel"])
    torch.manual_seed(seed)
    path = tmp_path / f"ckpt-{seed}.pt"
    atomic_save({"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)}, path)
    return path


def test_protocols_run_on_checkpoints_and_an_ensemble(tmp_path):
    # The reduced CI form of the end-to-end runs: real checkpoints, real loader, every protocol.
    root = write_prepared(tmp_path / "data", counts={"train": 6, "val": 5}, sizes=[(36, 36)])
    paths = [_checkpoint(tmp_path, root, seed) for seed in (0, 1)]
    small = ["eval.scales=[32,40]"]
    for name in ("center", "ten-crop", "multi-scale", "single-320"):
        result = evaluate_protocol(paths[:1], PROTOCOLS[name], small)
        assert result.samples == 5 and result.eval_mode == name and 0 <= result.top1_err <= 100
    ensemble = evaluate_protocol(paths, PROTOCOLS["ensemble"], small, which="ensemble")
    assert ensemble.samples == 5 and ensemble.paths == tuple(str(p) for p in paths)


def _predicting(tmp_path, root, cls: int) -> Path:
    """A checkpoint of a net that answers class `cls` for every image (fc weights 0, bias one-hot)."""
    path = _checkpoint(tmp_path, root, seed=0)
    state = torch.load(path, weights_only=False)
    state["model"]["fc.weight"].zero_()
    state["model"]["fc.bias"].copy_(10.0 * torch.nn.functional.one_hot(torch.tensor(cls), 3))
    out = tmp_path / f"predicts-{cls}.pt"
    atomic_save(state, out)
    return out


def test_a_run_with_a_weight_ema_is_tested_with_the_emas_weights_too(tmp_path):
    """The tv2 recipe keeps a weight EMA and torchvision does not say which model its number is: the
    protocol runs on the EMA's weights of the final checkpoint and of best_ema.pt, as their own rows."""
    root = write_prepared(tmp_path / "data", counts={"train": 6, "val": 5}, sizes=[(36, 36)])
    center = PROTOCOLS["center"]
    # 5 images of 3 classes: the constant answers of the most and the least frequent class differ in error
    errors = {cls: evaluate_protocol([_predicting(tmp_path, root, cls)], center).top1_err for cls in range(3)}
    live_cls, ema_cls = min(errors, key=errors.get), max(errors, key=errors.get)
    assert errors[live_cls] < errors[ema_cls]
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    final = run_dir / "checkpoints" / "ckpt-000000008.pt"
    state = torch.load(_predicting(tmp_path, root, live_cls), weights_only=False)
    state[EMA_PART] = {"weights": torch.load(_predicting(tmp_path, root, ema_cls), weights_only=False)["model"]}
    atomic_save(state, final)
    assert [(t.which, t.path, t.weights_of) for t in weights_to_test(run_dir, ema=False)] == [("final", final, "model")]
    atomic_save(state, run_dir / "checkpoints" / BEST_EMA_NAME)
    assert [(t.which, t.path.name, t.weights_of) for t in weights_to_test(run_dir, ema=True)] == [
        ("final", final.name, "model"), ("final_ema", final.name, "ema"), ("best_ema", BEST_EMA_NAME, "ema")]
    live = evaluate_protocol([final], center)
    ema = evaluate_protocol([final], center, which="final_ema", weights_of="ema")
    assert (live.top1_err, ema.top1_err) == (errors[live_cls], errors[ema_cls])
    measured = Measured(top1_err=None, top5_err=None, params=1, multiply_adds=1, input_size=32, iterations=8,
                        full_iterations=8, dataset="ImageNet", data_root="", eval_mode="center", recipe="resnet50_tv2",
                        protocol_results=[live, ema])
    text = render_report(ROWS["tv2-resnet50"], measured, [])
    assert "**Weight EMA**" in text and f"final_ema {ema.top1_err:.2f}%" in text and "| final_ema | center |" in text
    assert f"| top-1 error % | {ROWS['tv2-resnet50'].top1_err:.2f} | {live.top1_err:.2f} |" in text  # live compared


def test_resnet1202_warms_up_as_r1_trains_it_like_resnet110():
    warm = load_config("cifar10_resnet110").schedule
    s = load_config("cifar10_resnet1202").schedule
    assert (s.warmup, s.warmup_lr, s.warmup_iters) == (warm.warmup, warm.warmup_lr, warm.warmup_iters) == \
        ("constant", 0.01, 400)


def test_seeds_on_the_ensemble_row_is_a_one_line_error_before_training(tmp_path, monkeypatch, capsys):
    from dtrain.analysis import reproduction
    from dtrain.cli import main

    monkeypatch.setattr(reproduction, "run_training", lambda *a, **k: pytest.fail("nothing may train"))
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        main(["reproduce", "r1-table5-ensemble", "--seeds", "3", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert "--seeds 3" in err and "r1-table5-ensemble" in err and "6 fixed members" in err and "drop --seeds" in err
    assert not run_dir.exists()
    reproduction.check_options(ROWS["r1-table5-ensemble"], reproduction.ReproduceOptions(seeds=1))  # the default
    reproduction.check_options(ROWS["r1-table6-resnet110"], reproduction.ReproduceOptions(seeds=5))


def test_protocol_changes_are_the_eval_sets_and_the_view_keys_the_protocol_does_not_fix():
    from dtrain.analysis.reproduction import ReproduceOptions, user_protocol_changes

    opts = ReproduceOptions(overrides=("eval.scales=[64,96]", "data.val_crop=32", "optim.lr=0.05", "eval.mode=center"),
                            eval_overrides=("eval.scales=[32,40]",))
    # multi-scale fixes eval.scales itself (R1's five scales): a --set of it never reaches the test;
    # its views read no data.val_crop
    assert user_protocol_changes(ROWS["r1-table4-resnet50"], opts) == ["eval.scales=[32,40]"]
    assert user_protocol_changes(ROWS["r1-table3-resnet50"], opts) == ["data.val_crop=32"]  # ten-crop reads no scales
    assert user_protocol_changes(ROWS["r1-table3-resnet50"], ReproduceOptions(overrides=("optim.lr=0.05",))) == []


def _report_only(tmp_path, monkeypatch, *args) -> str:
    """`dtrain reproduce r1-table6-resnet20 --report-only ARGS` on a finished run whose checkpoint
    test is recorded (the protocol test itself is covered by test_protocols_run_on_checkpoints...)."""
    from dtrain.analysis import reproduction
    from dtrain.cli import main

    def evaluate(paths, protocol, overrides=(), which="final", weights_of="model"):
        return ProtocolResult(which, protocol.name, protocol.eval_mode, tuple(map(str, paths)), 9.0, 1.0, 10,
                              (f"eval.mode={protocol.eval_mode}", *protocol.overrides, *overrides))

    monkeypatch.setattr(reproduction, "weights_to_test",
                        lambda run_dir, ema: [CheckpointWeights("final", run_dir / "ckpt.pt")])
    monkeypatch.setattr(reproduction, "evaluate_protocol", evaluate)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "final_metrics.json").write_text(json.dumps({"top1_err": 10.0, "top5_err": 1.0, "step": 64000}))
    (run_dir / "report.md").unlink(missing_ok=True)
    main(["reproduce", "r1-table6-resnet20", "--report-only", "--run-dir", str(run_dir),
          "--data-root", str(tmp_path / "data"), *args])  # returns: no error
    return (run_dir / "report.md").read_text()


def test_the_report_names_every_change_to_the_papers_protocol(tmp_path, monkeypatch):
    text = _report_only(tmp_path, monkeypatch, "--eval-set", "data.val_crop=28", "--set", "data.val_resize=30",
                        "--set", "optim.lr=0.05")
    assert "**Protocol changed**: the center test ran with `data.val_resize=30 data.val_crop=28`" in text
    assert "- protocol test: `eval.mode=center data.root=" in text and " data.val_crop=28`" in text
    plain = _report_only(tmp_path, monkeypatch)
    assert "Protocol changed" not in plain and "- protocol test: `eval.mode=center" in plain


def _recipe_of(row, *, ignore=()) -> dict:
    """The row's resolved config (recipe + row overrides) without what names the run or the unit."""
    config = to_dict(load_config(row.recipe, list(row.overrides)))
    for section, key in (("model", "name"), (None, "description"), (None, "recipe"), *ignore):
        (config[section] if section else config).pop(key, None)
    return config


def test_r2_table5_rows_are_trained_alike_and_differ_in_the_unit_only():
    # R2 Table 5 caption: "All ResNets are trained using the same hyper-parameters and implementations";
    # R2 appendix: lr 0.1, / 10 at epochs 30 and 60 (no plateau rule, no 600k iterations).
    rows = [r for r in ROWS.values() if r.source == "R2 Table 5"]
    augmentation = (("data", "train_augment"), ("data", "rrc_scale"), ("data", "rrc_ratio"))
    reference = ROWS["r2-table5-resnet200-preact"]
    for row in rows:
        # the last row adds R2's "scale+asp ratio" augmentation (its dagger), nothing else
        ignore = augmentation if row.key.endswith("scale-aspect") else ()
        assert _recipe_of(row, ignore=ignore) == _recipe_of(reference, ignore=ignore), row.key
        schedule = load_config(row.recipe, list(row.overrides)).schedule
        assert (schedule.kind, schedule.milestones, schedule.max_iters, schedule.warmup) == \
            ("step_epochs", [30, 60], None, "none"), row.key
    assert _recipe_of(reference)["data"]["train_augment"] == "scale_jitter"
    units = {r.key: load_config(r.recipe, list(r.overrides)).model.name for r in rows}
    assert units["r2-table5-resnet152"] == units["r2-table5-resnet152-224"] == "resnet152"
    assert units["r2-table5-resnet152-preact"] == "resnet152_preact"
    # R1's own ResNet-152 rows keep R1's plateau recipe
    assert load_config(ROWS["r1-table3-resnet152"].recipe).schedule.kind == "plateau"


def test_protocol_changes_name_only_keys_the_protocols_views_read():
    from dtrain.analysis.reproduction import ReproduceOptions, user_protocol_changes

    views = ("data.val_resize=40", "data.val_crop=32")
    opts = ReproduceOptions(overrides=views, eval_overrides=views)
    # multi-scale (R1 Table 4) reads eval.scales only; single-320 (R2 Table 5) fixes its 320 view
    for key in ("r1-table4-resnet50", "r1-table5-ensemble", "r2-table5-resnet200-preact"):
        assert user_protocol_changes(ROWS[key], opts) == [], key
    # ten-crop and center views are cut at val_resize / val_crop: a change of them is a change
    assert user_protocol_changes(ROWS["r1-table3-resnet50"], opts) == [*views, *views]
    assert user_protocol_changes(ROWS["r2-table5-resnet152-224"], ReproduceOptions(overrides=views)) == list(views)
    # any other --eval-set may change the test (the normalisation, the split): still named
    other = ReproduceOptions(eval_overrides=("data.normalize=channel",))
    assert user_protocol_changes(ROWS["r1-table4-resnet50"], other) == ["data.normalize=channel"]


def test_a_changed_network_is_named_in_the_report(tmp_path, monkeypatch):
    text = _report_only(tmp_path, monkeypatch, "--set", "model.name=plain20", "--set", "optim.lr=0.05")
    assert "**Model changed**: the row's network is resnet20; this run trained plain20 (`model.name=plain20`)" in text
    options = _report_only(tmp_path, monkeypatch, "model.options.shortcut=B")
    assert "**Model changed**" in options and "`model.options.shortcut=B`" in options
    assert "Model changed" not in _report_only(tmp_path, monkeypatch, "--set", "optim.lr=0.05")


def test_recipes_describe_the_shortcut_option_they_build():
    # R1 Table 2 compares plain and residual nets with option A; the saved description says so
    import re

    for key, row in ROWS.items():
        config = load_config(row.recipe, list(row.overrides))
        named = re.search(r"option ([ABC])", config.description or "")
        if named and row.dataset == "ImageNet":  # option B is the ImageNet nets' default (R1 sec. 3.3)
            assert config.model.options.get("shortcut", "B") == named.group(1), key
    table2 = load_config(ROWS["r1-table2-resnet18"].recipe)
    assert table2.model.options["shortcut"] == "A" and "option A" in table2.description
    assert ROWS["r1-table2-resnet18"].recipe == "resnet18_optionA" and ROWS["r1-table2-resnet18"].overrides == ()


def test_the_multi_scale_report_says_flips_are_beyond_r1():
    for key in ("r1-table4-resnet152", "r1-table5-ensemble"):
        text = render_report(ROWS[key], _measured(dataset="imagenet"))
        assert "**Beyond the paper**: dtrain's multi-scale test also averages the horizontal flip" in text
        assert "which R1 sec. 3.4 does not name" in text and "and flips (R1" not in text
    assert "Beyond the paper" not in render_report(ROWS["r1-table3-resnet50"], _measured(dataset="imagenet"))


def test_a_shortened_report_says_what_the_lr_did(tmp_path, monkeypatch):
    text = _report_only(tmp_path, monkeypatch, "--budget-iters", "8")
    assert "**SHORTENED RUN**" in text
    assert "Shortened schedule, 8 iterations: lr x 0.1 at iterations 4, 6 at the recipe's fractions of the run." in text
    assert "schedule.milestones=[4,6]" in text  # the milestones listed are the ones that take effect


def test_the_report_says_which_normalisation_the_run_used(tmp_path, monkeypatch):
    # R1 sec. 3.4 / 4.2: "the per-pixel mean subtracted"; R1's CIFAR recipes do so
    text = _report_only(tmp_path, monkeypatch)
    assert "- normalisation: `data.normalize=per_pixel_mean`: the per-pixel mean image" in text
    assert "Normalisation differs" not in text
    channel = _report_only(tmp_path, monkeypatch, "data.normalize=channel")
    assert "**Normalisation differs**: this run subtracted the per-channel mean [0.4914, 0.4822, 0.4465]" in channel
    assert "data.normalize=per_pixel_mean" in channel
    # ImageNet rows: the recipes subtract per-channel means by default, the mean image on request
    from dtrain.analysis.reproduction import normalization

    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "pixel_stats.json").write_text(json.dumps(
        {"height": 224, "width": 224, "geometry": "centre 224 of shorter side 256"}))
    config = load_config("resnet50", [f"data.root={tmp_path / 'imagenet'}", "data.normalize=per_pixel_mean"])
    assert normalization(config) == ("the per-pixel mean image of the training set, 224x224 "
                                     "(centre 224 of shorter side 256), / std per channel")
    assert load_config("resnet50").data.normalize == "channel"
