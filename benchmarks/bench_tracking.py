"""How much a 600,000-iteration run costs MLflow: logging time, store size, chart loading time.

Simulates the training loop's metric stream (loss, lr, img/s, data time every iteration, plus
per-epoch validation metrics) through dtrain's MlflowTracker into a fresh SQLite store, then
loads each metric's full history with MlflowClient.get_metric_history (what the UI's charts
fetch). Two settings:
  aggregated  MetricAggregator(every=N) -> one point per N iterations (the recipes: N=50)
  raw         one point per iteration (every=1); measured on a slice of --raw-iters iterations
              and extrapolated linearly to the full run (both logging and loading scale with
              the number of points), because 2.4 M points take too long on a small machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_tracking.py --out benchmarks/results/tracking.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from dtrain.tracking import MetricAggregator
from dtrain.tracking.mlflow_tracker import MlflowTracker

TRAIN_METRICS = ("train/loss", "train/lr", "train/img_s", "train/data_time")
VAL_METRICS = ("val/loss", "val/top1_err", "val/top5_err")


def simulate(run_dir: Path, *, iterations: int, every: int, iters_per_epoch: int) -> dict:
    """Streams a run's metrics into a new SQLite store; returns timings and sizes."""
    start = time.perf_counter()
    tracker = MlflowTracker(uri=f"sqlite:///{run_dir.resolve() / 'mlflow.db'}", experiment="bench",
                            run_dir=run_dir, run_name=f"every{every}", flush_every_seconds=30.0)
    setup_s = time.perf_counter() - start
    tracker.log_params({"optim.lr": 0.1, "schedule.max_iters": iterations, "tracking.metrics_every_iters": every})
    aggregator = MetricAggregator(every, reductions={"train/lr": "last"})
    in_tracker_s = 0.0
    points = 0
    loop_start = time.perf_counter()
    for step in range(1, iterations + 1):
        values = {"train/loss": 7.0 * math.exp(-step / 2e5) + 0.01 * (step % 7), "train/lr": 0.1 * 0.1 ** (step // 2e5),
                  "train/img_s": 2500.0 + step % 13, "train/data_time": 0.004 + (step % 5) * 1e-4}
        window = aggregator.add(step, values)
        if step % iters_per_epoch == 0:
            epoch_values = {"val/loss": 1.0 + 1e5 / step, "val/top1_err": 0.2 + 10 / step, "val/top5_err": 0.05}
            window = {**(window or {}), **epoch_values}
        if window:
            t = time.perf_counter()
            tracker.log_metrics(window, step=step)
            in_tracker_s += time.perf_counter() - t
            points += len(window)
    t = time.perf_counter()
    tracker.close("FINISHED")
    in_tracker_s += time.perf_counter() - t
    log_total_s = time.perf_counter() - loop_start
    run_id = tracker.run_id

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracker.uri)
    load = {}
    for key in TRAIN_METRICS + VAL_METRICS:
        t = time.perf_counter()
        history = client.get_metric_history(run_id, key)
        load[key] = {"points": len(history), "seconds": round(time.perf_counter() - t, 4)}
    return {
        "iterations": iterations,
        "every": every,
        "points_logged": points,
        "store_setup_s": round(setup_s, 3),
        "logging_total_s": round(log_total_s, 3),
        "logging_in_tracker_s": round(in_tracker_s, 3),
        "ms_per_1000_points": round(1000 * in_tracker_s / max(points, 1) * 1000, 2),
        "load_all_charts_s": round(sum(v["seconds"] for v in load.values()), 3),
        "load_per_metric": load,
        "mlflow_db_mb": round((run_dir / "mlflow.db").stat().st_size / 2**20, 2),
        "metrics_jsonl_mb": round((run_dir / "metrics.jsonl").stat().st_size / 2**20, 2),
    }


def extrapolate(measured: dict, factor: float) -> dict:
    scaled = {key: round(measured[key] * factor, 1) for key in
              ("points_logged", "logging_total_s", "logging_in_tracker_s", "load_all_charts_s", "mlflow_db_mb",
               "metrics_jsonl_mb")}
    return {"iterations": int(measured["iterations"] * factor), "every": measured["every"], "extrapolated": True,
            "factor": factor, **scaled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600_000)
    parser.add_argument("--every", type=int, default=50, help="aggregation window of the aggregated setting")
    parser.add_argument("--iters-per-epoch", type=int, default=5005, help="ImageNet at batch 256")
    parser.add_argument("--raw-iters", type=int, default=60_000,
                        help="slice measured for the raw every=1 setting (0: skip, or = --iterations for all)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    results = {"device": f"{platform.machine()} ({os.cpu_count()} CPUs), {platform.platform()}",
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "mlflow": metadata.version("mlflow"), "command": "python benchmarks/bench_tracking.py " +
               " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
               "runs": []}
    settings = [("aggregated", args.every, args.iterations)]
    if args.raw_iters:
        settings.append(("raw", 1, min(args.raw_iters, args.iterations)))
    for name, every, iterations in settings:
        run_dir = workdir / name
        shutil.rmtree(run_dir, ignore_errors=True)
        measured = simulate(run_dir, iterations=iterations, every=every, iters_per_epoch=args.iters_per_epoch)
        results["runs"].append({"setting": name, **measured})
        if iterations < args.iterations:
            results["runs"].append({"setting": f"{name} (extrapolated)",
                                    **extrapolate(measured, args.iterations / iterations)})
    print_table(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


def print_table(results: dict) -> None:
    columns = ("setting", "iterations", "every", "points_logged", "logging_total_s", "logging_in_tracker_s",
               "load_all_charts_s", "mlflow_db_mb")
    print(f"MLflow {results['mlflow']} SQLite store, {results['device']}, {results['date']}")
    print(" | ".join(columns))
    for run in results["runs"]:
        print(" | ".join(str(run.get(c, "")) for c in columns))


if __name__ == "__main__":
    main()
