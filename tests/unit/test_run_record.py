"""What rank 0 records and prints: params that apply to the run's choices, dataset records from
summary.json, "[rank N] " on other ranks' lines, and the header line that finds rank 0's log."""

from __future__ import annotations

import io
import json

from dtrain.resolve import load_config
from dtrain.tracking.console import RankPrefixedStream, header_line
from dtrain.tracking.run_record import applicable_params, dataset_records


def test_params_hold_only_the_values_that_apply_to_the_runs_choices():
    pad_crop = applicable_params(load_config("cifar10_resnet110", ["data.root=/data/cifar"]))
    assert "data.pad" in pad_crop and "data.scale_range" not in pad_crop and "data.rrc_scale" not in pad_crop
    jitter = applicable_params(load_config("resnet50", ["data.root=/data/imagenet"]))
    assert "data.scale_range" in jitter and "data.pad" not in jitter
    for params in (pad_crop, jitter):
        assert "distributed.zero_stage" not in params and "data.ffcv_order" not in params
        assert not [k for k in params if k.startswith(("tracking.", "checkpoint."))]
        assert "optim.lr" in params and "model.name" in params
    deepspeed = applicable_params(load_config("resnet50", ["data.root=/x", "distributed.engine=deepspeed",
                                                           "data.loader=ffcv"]))
    assert "distributed.zero_stage" in deepspeed and "data.ffcv_order" in deepspeed and "data.source" not in deepspeed


def test_dataset_records_come_from_the_prepared_summary(tmp_path):
    # R1's ImageNet recipes evaluate during training on the minival carved out of train.
    summary = {"dataset": "imagenet", "splits": {"train": {"accepted": 10, "rejected": 1},
                                                 "minival": {"accepted": 4, "rejected": 0},
                                                 "val": {"accepted": 6, "rejected": 0}},
               "per_class": {"train": {"n01": 5, "n02": 5}, "minival": {"n01": 2, "n02": 2},
                             "val": {"n01": 3, "n02": 3}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "manifest.parquet").write_bytes(b"rows")
    records = dataset_records(load_config("resnet50", [f"data.root={tmp_path}"]))
    assert [(r.name, r.context, r.profile["samples"], r.profile["classes"]) for r in records] == [
        ("imagenet", "training", 10, 2), ("imagenet", "validation", 4, 2)]
    (tmp_path / "manifest.parquet").write_bytes(b"other rows")  # new data: new digests
    changed = dataset_records(load_config("resnet50", [f"data.root={tmp_path}"]))
    assert {r.digest for r in changed}.isdisjoint({r.digest for r in records})


def test_every_line_of_another_rank_is_prefixed_even_when_written_in_pieces():
    out = io.StringIO()
    stream = RankPrefixedStream(out, "[rank 3] ")
    stream.write("warning: slow")
    stream.write(" loader\nTraceback (most recent call last):\n  File")
    stream.write(' "x.py"\n\n')
    assert out.getvalue() == ('[rank 3] warning: slow loader\n[rank 3] Traceback (most recent call last):\n'
                              '[rank 3]   File "x.py"\n\n')


def test_header_names_world_size_run_dir_devices_and_link(tmp_path):
    line = header_line(world_size=16, run_dir=tmp_path, devices=["NVIDIA H200"] * 8, run_link="http://m/#/r",
                       backend="nccl")
    assert line.startswith("dtrain rank 0 of 16 (process group nccl) | ") and f"run dir {tmp_path}" in line
    assert "devices 8 x NVIDIA H200 on " in line and line.endswith("MLflow http://m/#/r") and "\n" not in line


def test_run_link_is_the_servers_page_or_mlflow_ui_then_the_local_page():
    from dtrain.tracking.mlflow_extras import how_to_open, run_url

    server = run_url("http://mlflow:5000/", "3", "abc")
    assert server == "http://mlflow:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert how_to_open("http://mlflow:5000/", server) == server
    local = run_url("sqlite:////runs/r/mlflow.db", "1", "abc")
    assert how_to_open("sqlite:////runs/r/mlflow.db", local) == (
        "mlflow ui --backend-store-uri sqlite:////runs/r/mlflow.db  then open "
        "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning")
