"""The degradation record over seeds, from run directories written like the trainer writes them
(metrics.jsonl by the real JsonlTracker): statistics, refusal of foreign runs, the record folder."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from dtrain.analysis.degradation_report import CURVES_DIR, plot_record, summary_json, write_outputs
from dtrain.analysis.experiments import (
    MARKER_NAME,
    DegradationOptions,
    read_metrics_curves,
    run_degradation,
    run_dir_of,
    run_settings,
    train_samples,
)
from dtrain.commands.experiment import experiment
from dtrain.errors import DtrainError
from dtrain.tracking.jsonl import JSONL_NAME, JsonlTracker

SEEDS = (0, 1, 2)
NETS = ("plain20", "plain32", "resnet20", "resnet32")


def fake_run(run_dir: Path, final_train: float, final_test: float, steps: int = 40, every: int = 5) -> None:
    """A finished run: training error windows falling to final_train, a test evaluation every 20 steps."""
    tracker = JsonlTracker(run_dir, run_id="r", run_name=run_dir.name)
    tracker.log_params({"data.root": str(run_dir / "no-data"), "model.name": run_dir.name.split("-")[0]})
    for step in range(every, steps + 1, every):
        tracker.log_metrics({"train/top1_err": final_train + (steps - step)}, step=step)
        if step % 20 == 0:
            tracker.log_metrics({"val/top1_err": final_test + (steps - step) / 2}, step=step)
    tracker.close()
    (run_dir / "final_metrics.json").write_text(json.dumps({"seconds": 12.34, "global_batch": 32}))


def error_of(net: str, seed: int) -> tuple[float, float]:
    depth = int(net[-2:])
    return (depth / 4 + 3 * seed if net.startswith("plain") else 2.0 + seed), 5.0 + depth / 10 + seed


@pytest.fixture
def opts(tmp_path) -> DegradationOptions:
    opts = DegradationOptions(out=tmp_path / "deg", depths=(20, 32), seeds=SEEDS, budget_iters=40,
                              overrides=("optim.batch_size=32",), train=False)
    for net in NETS:
        for seed in SEEDS:
            run_dir = run_dir_of(opts, net, seed)
            fake_run(run_dir, *error_of(net, seed))
            marker = {"invocation": "an-earlier-one", "settings": run_settings(opts, net, seed)}
            (run_dir / MARKER_NAME).write_text(json.dumps(marker))
    return opts


def test_mean_and_spread_in_the_json_equal_numpy_over_the_seeds(opts):
    runs = run_degradation(opts)
    assert [(r.name, r.seed) for r in runs] == [(net, seed) for net in NETS for seed in SEEDS]
    summary = summary_json(runs, opts)
    for net in summary["nets"]:
        for which, index, key in (("train_err", 0, "final_train_err"), ("test_err", 1, "final_test_err")):
            # training: the mean of the last 3 windows (final + 10, + 5, + 0); test: the last evaluation
            per_seed = [error_of(net["name"], seed)[index] + (5.0 if index == 0 else 0.0) for seed in SEEDS]
            assert [r[key] for r in net["runs"]] == pytest.approx(per_seed)
            spread = net[which]
            assert spread["per_seed"] == pytest.approx({str(s): v for s, v in zip(SEEDS, per_seed, strict=True)})
            assert spread["mean"] == pytest.approx(np.mean(per_seed))
            assert spread["std"] == pytest.approx(np.std(per_seed, ddof=1))
            assert (spread["min"], spread["max"]) == pytest.approx((np.min(per_seed), np.max(per_seed)))
        # tabulated from an earlier invocation: said so, with that invocation's training seconds
        assert all(r["trained_here"] is False and r["seconds"] == 12.3 for r in net["runs"])
        assert all(r["train_samples"] == 3 * 5 * 32 for r in net["runs"])  # 3 windows of 5 steps at batch 32


def test_final_training_error_windows_are_a_choice_with_their_image_count(opts):
    curves = read_metrics_curves(run_dir_of(opts, "plain20", 0) / JSONL_NAME, "plain20-seed0")
    assert curves.final_train_error(1) == 5.0 and curves.final_train_error(3) == 10.0  # 5 + (0, 5, 10) / 3
    assert train_samples(curves, 1, 32) == 160 and train_samples(curves, 3, 32) == 480
    assert train_samples(curves, 100, 32) == 40 * 32  # never more than the run logged
    opts.train_windows = 1
    (net, *_), = [n for n in summary_json(run_degradation(opts), opts)["nets"] if n["name"] == "plain20"],
    assert net["runs"][0]["train_samples"] == 160 and net["train_err"]["per_seed"]["0"] == 5.0


def test_an_existing_run_directory_is_refused_before_anything_trains(opts):
    opts.train = True
    with pytest.raises(DtrainError, match="already exist.*--overwrite"):
        run_degradation(opts)
    assert (run_dir_of(opts, "plain20", 0) / JSONL_NAME).is_file()  # nothing deleted


@pytest.mark.parametrize("change", ["no marker", "other seed settings", "other overrides"])
def test_tabulating_refuses_runs_made_otherwise(opts, change):
    run_dir = run_dir_of(opts, "resnet32", 1)
    if change == "no marker":
        (run_dir / MARKER_NAME).unlink()
        match = "not made by `dtrain experiment degradation`"
    else:
        settings = run_settings(opts, "resnet32", 1)
        settings.update({"seed": 7} if change == "other seed settings" else {"overrides": []})
        (run_dir / MARKER_NAME).write_text(json.dumps({"invocation": "x", "settings": settings}))
        match = "was trained with (seed=7|overrides=\\[\\])"
    with pytest.raises(DtrainError, match=match):
        run_degradation(opts)


def test_the_record_holds_every_runs_curves_and_replots_without_the_run_dirs(opts, tmp_path):
    opts.record = tmp_path / "record"
    written = write_outputs(run_degradation(opts), opts)
    record = opts.record
    assert {p.name for p in record.iterdir()} == {"degradation.md", "degradation.csv", "degradation.json",
                                                  "degradation.svg", CURVES_DIR}
    assert record / "degradation.svg" in written and opts.out / "degradation.png" in written
    for net in NETS:
        for seed in SEEDS:
            copy = record / CURVES_DIR / f"{net}-seed{seed}.{JSONL_NAME}"
            assert copy.read_bytes() == (run_dir_of(opts, net, seed) / JSONL_NAME).read_bytes()
    image = matplotlib.image.imread(opts.out / "degradation.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert ET.parse(record / "degradation.svg").getroot().tag.endswith("svg")
    md = (record / "degradation.md").read_text()
    assert "--seeds 0,1,2" in md and "Seeds: 0, 1, 2" in md and "0 of 12 runs trained from scratch" in md
    # the run directories gone, the record still plots
    for path in sorted(opts.out.glob("runs/*/*"), reverse=True):
        path.unlink()
    (record / "degradation.svg").unlink()
    assert plot_record(record, png=False) == [record / "degradation.svg"]
    assert ET.parse(record / "degradation.svg").getroot().tag.endswith("svg")


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0,0"], "distinct seeds"), (["--seeds", "a"], "comma list of seeds"),
    (["train.seed=3"], "give seeds with --seeds"), (["--overwrite", "--no-train"], "give one of them")])
def test_bad_seed_options_are_one_line_errors(args, message):
    result = CliRunner().invoke(experiment, ["degradation", *args])
    assert result.exit_code == 2 and message in result.output


def test_degradation_plot_redraws_a_record(opts, tmp_path):
    write_outputs(run_degradation(opts), opts)
    for figure in ("degradation.png", "degradation.svg"):
        (opts.out / figure).unlink()
    result = CliRunner().invoke(experiment, ["degradation-plot", str(opts.out)])
    assert result.exit_code == 0, result.output
    assert matplotlib.image.imread(opts.out / "degradation.png").shape[0] > 100
    assert CliRunner().invoke(experiment, ["degradation-plot", str(tmp_path)]).exit_code == 2  # no record there
