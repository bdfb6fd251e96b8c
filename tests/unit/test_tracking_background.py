"""A tracking server that never answers must not stall training, and at the end must cost at most
the bounded flush, with every metric left in metrics.jsonl (dtrain/tracking/background.py)."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

from dtrain.tracking import read_records
from dtrain.tracking.background import BackgroundTracker
from dtrain.tracking.jsonl import JsonlTracker


class _Recorder(JsonlTracker):
    """A real JSONL tracker standing in for MLflow; optionally stuck on its first metrics call."""

    def __init__(self, run_dir: Path, stuck: threading.Event | None = None) -> None:
        super().__init__(run_dir, run_id="r1")
        self.stuck = stuck

    def log_metrics(self, metrics, step):
        if self.stuck is not None:
            self.stuck.wait()  # a request that never gets its answer
        super().log_metrics(metrics, step)


def test_calls_reach_the_tracker_in_order_and_close_sets_the_status(tmp_path: Path) -> None:
    tracker = BackgroundTracker(lambda: _Recorder(tmp_path), tmp_path, close_seconds=10)
    for step in range(1, 4):
        tracker.log_metrics({"loss": 1.0 / step}, step)
    tracker.close("FINISHED")
    assert tracker.finished and tracker.run_id == "r1"
    records = list(read_records(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in records if r["type"] == "metrics"] == [1, 2, 3]
    assert records[-1] == {**records[-1], "type": "status", "status": "FINISHED"}


def test_a_silent_server_stalls_neither_steps_nor_the_exit(tmp_path: Path) -> None:
    never = threading.Event()
    tracker = BackgroundTracker(lambda: _Recorder(tmp_path, stuck=never), tmp_path, close_seconds=1.0, max_items=5)
    started = time.monotonic()
    for step in range(1, 21):  # the queue holds 5: the rest go straight to metrics.jsonl
        tracker.log_metrics({"loss": float(step)}, step)
    assert time.monotonic() - started < 0.5
    tracker.close("FINISHED")
    assert time.monotonic() - started < 3.0
    assert not tracker.finished
    records = list(read_records(tmp_path / "metrics.jsonl"))
    steps = sorted(r["step"] for r in records if r["type"] == "metrics")
    assert steps == list(range(2, 21))  # step 1 is the call the server never answered
    assert any(r["type"] == "status" and r["status"] == "FINISHED" for r in records)
    never.set()


# -- a server that goes away and comes back; the header's link; a refused Host header --------------


def _wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _mlflow_in_background(tmp_path: Path, client, monkeypatch, **kwargs) -> BackgroundTracker:
    from dtrain.tracking import mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "RETRY_FIRST_SECONDS", 0.2)
    monkeypatch.setattr(mlflow_tracker, "RETRY_MAX_SECONDS", 0.4)
    return BackgroundTracker(lambda: mlflow_tracker.MlflowTracker(
        uri="http://fake", experiment="e", run_dir=tmp_path, run_name="r", client=client, flush_every_seconds=3600),
        tmp_path, **kwargs)


def test_buffered_metrics_reach_a_server_that_is_back_without_any_new_call(tmp_path: Path, monkeypatch) -> None:
    from test_tracking import FakeClient

    client = FakeClient()
    tracker = _mlflow_in_background(tmp_path, client, monkeypatch)
    assert tracker.run_id == "run-1" and tracker.problem is None
    client.down = True  # the server is killed mid-run
    for step in range(1, 51):
        tracker.log_metrics({"train/loss": float(step)}, step)
    tracker.flush()  # a checkpoint's flush: the send fails
    _wait_until(lambda: tracker.problem is not None)
    assert tracker.problem.startswith("is unreachable (")
    client.down = False  # back; the run makes no further tracking call
    _wait_until(lambda: [m.step for b in client.sent("metrics") for m in b] == list(range(1, 51)))
    assert tracker.problem is None
    tracker.close("FINISHED")
    assert client.terminated == ["FINISHED"]


def test_retries_back_off_and_the_wait_is_capped() -> None:
    from dtrain.tracking.mlflow_tracker import RETRY_MAX_SECONDS, retry_delay

    delays = [retry_delay(failures) for failures in range(1, 9)]
    assert delays[:3] == [10.0, 20.0, 40.0] and delays == sorted(delays) and max(delays) == RETRY_MAX_SECONDS


def test_calls_that_only_reached_metrics_jsonl_are_sent_from_it_before_the_status(tmp_path: Path) -> None:
    stuck, caught_up = threading.Event(), []
    tracker = BackgroundTracker(lambda: _Recorder(tmp_path, stuck=stuck), tmp_path, max_items=2,
                                catch_up=caught_up.append)
    for step in range(1, 11):  # the tracker is stuck on step 1: the queue overflows into metrics.jsonl
        tracker.log_metrics({"loss": float(step)}, step)
    stuck.set()
    tracker.close("FINISHED")
    assert tracker.finished and caught_up == ["r1"]


def test_the_header_waits_for_a_server_that_answers_in_seconds(tmp_path: Path) -> None:
    from dtrain.tracking.console import header_line

    def slow_start() -> _Recorder:
        time.sleep(4.0)  # importing mlflow and creating the run: seconds on a busy machine
        connected = _Recorder(tmp_path)
        connected.run_link = "http://mlflow:5000/#/experiments/1/runs/r1"
        return connected

    tracker = BackgroundTracker(slow_start, tmp_path)
    line = header_line(world_size=1, run_dir=tmp_path, devices=["cpu"], run_link=tracker.run_link,
                       tracking_problem=tracker.problem)
    assert line.endswith(" | MLflow http://mlflow:5000/#/experiments/1/runs/r1")
    tracker.close("FINISHED")


def test_a_server_that_never_answers_is_named_in_the_header(tmp_path: Path, monkeypatch) -> None:
    from dtrain.tracking import background
    from dtrain.tracking.console import header_line

    monkeypatch.setattr(background, "START_WAIT_SECONDS", 0.2)
    never = threading.Event()
    tracker = BackgroundTracker(lambda: never.wait() and _Recorder(tmp_path), tmp_path, close_seconds=0.2)
    line = header_line(world_size=1, run_dir=tmp_path, devices=["cpu"], run_link=tracker.run_link,
                       tracking_problem=tracker.problem)
    assert line.endswith(" | MLflow has not answered within 10 s")
    tracker.close("FINISHED")
    never.set()


class _RefusesHostHeader(http.server.BaseHTTPRequestHandler):
    """What MLflow 3's server answers a Host header missing from its --allowed-hosts."""

    def do_GET(self) -> None:
        body = b"Invalid Host header - possible DNS rebinding attack detected"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def test_a_refused_host_header_says_how_to_allow_it(tmp_path: Path, monkeypatch, caplog) -> None:
    import logging

    from dtrain.tracking.mlflow_tracker import MlflowTracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusesHostHeader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        with caplog.at_level(logging.WARNING, logger="dtrain.tracking"):
            tracker = MlflowTracker(uri=f"http://{host}", experiment="e", run_dir=tmp_path, run_name="r")
        assert tracker.run_link is None
        assert f"--allowed-hosts {host}" in tracker.problem and "403" in tracker.problem
        (line,) = [r.getMessage() for r in caplog.records if "Host header" in r.getMessage()]
        assert f"dtrain mlflow-server --allowed-hosts {host}" in line and "unreachable" not in line
        tracker.close("KILLED")
    finally:
        server.shutdown()
