"""The MLflow server on a host of its own, reached by an alias, going down mid-run and coming back.

`dtrain mlflow-server` runs in host `mlflow`; the nodes log to http://mlflow-host:5000, a name that
is not the server's hostname, so the server must allow it (`--allowed-hosts`, or MLflow 3 answers
403 "Invalid Host header"). The fault kills the server's host at step 10 and starts the server
again on the same store 20 s later; the run must then end FINISHED with every metric point that
RUN_DIR/metrics.jsonl holds, with no help from `dtrain mlflow-sync`.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

from cluster_lab.job import CHECKOUT_PYTHONPATH, ROOT, Job
from dtrain.tracking.jsonl import JSONL_NAME, metric_history, read_records

HOST, ALIAS, PORT = "mlflow", "mlflow-host", 5000
DOWN_SECONDS = 20.0
URI = f"http://{ALIAS}:{PORT}"
# 200 steps: the server is back (20 s down, up to a minute to start on a loaded machine) and the
# tracker's retry (10, 20, 40 s, then every 60 s) has come round well before the end, so what is
# measured is the resend while training goes on, not the 10 s flush at the end.
SPEC = {"iters": 200, "extra": ("tracking.backend=mlflow", f"tracking.uri={URI}")}
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "PYTHONPATH": CHECKOUT_PYTHONPATH, "NO_PROXY": "*"}


def start_server(job: Job) -> None:
    store = job.run_dir.parent / f"{job.run_dir.name}-mlflow"
    store.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "dtrain.cli", "mlflow-server", "--host", "0.0.0.0", "--port", str(PORT),
            "--allowed-hosts", f"{ALIAS}:{PORT},{ALIAS}", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
            "--artifacts-destination", str(store / "artifacts")]
    log = open(job.logs / "mlflow-server.log", "a")  # noqa: SIM115 - the server outlives this function
    subprocess.Popen(job.cluster.command(HOST, argv), env=ENV,
                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if _query(job, f"import urllib.request; urllib.request.urlopen('{URI}/health', timeout=2)") == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"the MLflow server did not answer within 120 s; see {job.logs}/mlflow-server.log")


def _query(job: Job, code: str, timeout: float = 60) -> int:
    done = subprocess.run(job.cluster.command("node1", [sys.executable, "-c", code]), capture_output=True,
                          env=ENV, timeout=timeout)
    return done.returncode


def take_server_down(job: Job, rng: random.Random) -> dict:
    job.cluster.crash(HOST)
    timer = threading.Timer(DOWN_SECONDS, start_server, args=(job,))
    timer.daemon = True
    timer.start()
    return {"host": HOST, "down_s": DOWN_SECONDS, "at": time.time()}


CHECK = """
import json, sys
from mlflow.tracking import MlflowClient
expected = json.loads(sys.argv[1])
client = MlflowClient(tracking_uri=%r)
run = client.get_run(expected["run_id"])
missing = {k: n - len(client.get_metric_history(run.info.run_id, k)) for k, n in expected["points"].items()}
print(json.dumps({"status": run.info.status, "missing": {k: v for k, v in missing.items() if v}}))
"""


def every_point_arrived(job: Job, info: dict) -> list[str]:
    """The run ended FINISHED on the server with every point metrics.jsonl holds."""
    path = job.run_dir / JSONL_NAME
    runs = [r for r in read_records(path)
            if r.get("type") == "run" and r.get("backend") == "mlflow" and r.get("run_id")]
    if not runs:
        return ["the run never reached the MLflow server (no mlflow run record in metrics.jsonl)"]
    points = {key: len(history) for key, history in metric_history(path).items()}
    expected = json.dumps({"run_id": runs[-1]["run_id"], "points": points})
    done = subprocess.run(job.cluster.command("node1", [sys.executable, "-c", CHECK % URI, expected]),
                          capture_output=True, text=True, env=ENV, timeout=120)
    if done.returncode != 0:
        return [f"cannot read the run back from the server: {done.stderr.strip().splitlines()[-1:]}"]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    problems = [] if found["status"] == "FINISHED" else [f"the run ended {found['status']}, not FINISHED"]
    if found["missing"]:
        problems.append(f"points missing on the server: {found['missing']}")
    return problems


def stop_server(job: Job) -> None:
    job.cluster.crash(HOST)
