"""Kill one training process under torchrun, N times, and count the runs that recover.

    python benchmarks/faults.py --runs 20                 # one node (--standalone, 2 workers) and two agents
    python benchmarks/faults.py --runs 3 --setups two-agents --out /tmp/faults.json

Each run trains digits_resnet20 on synthetic data (CPU, gloo) with checkpoints every 2 steps and
`--max-restarts 2`, SIGKILLs one worker once the first checkpoint exists, and waits. A run
recovers when every torchrun exits 0, the run reaches its last step, and the log says it resumed
from a checkpoint. The recovery time is from the kill to the first step trained after the
restart (the "resumed from" line). Results go to --out as JSON, with the environment (commit,
date, load average, quiet flag: dtrain/bench/machine.py, as `dtrain bench`), and a summary is
printed; a busy machine prints NOT QUIET first (a loaded host slows recovery and can time it out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "data_prep")]  # dtrain and dtrain_prep from this checkout

from dtrain.bench.machine import machine_environment, not_quiet_warning  # noqa: E402
from dtrain.bench.processes import children, free_port  # noqa: E402
from dtrain.tracking.jsonl import JSONL_NAME, read_records  # noqa: E402

TORCHRUN_SH = ROOT / "launch" / "torchrun.sh"
MAX_ITERS = 12
SETUPS = ("one-node", "two-agents")


def train_args(run_dir: Path) -> list[str]:
    return ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=64",
            "data.synthetic_image_size=32", "optim.batch_size=16", f"schedule.max_iters={MAX_ITERS}",
            "schedule.epochs=null", "eval.every_epochs=0", "tracking.backend=jsonl", f"run_dir={run_dir}",
            "train.device=cpu", "checkpoint.every_iters=2", "checkpoint.every_minutes=0"]


def start(setup: str, run_dir: Path, logs: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PET_", "RDZV_", "NNODES"))}
    env.update(PYTHON=sys.executable, MAX_RESTARTS="2", OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="")
    if setup == "one-node":
        env.update(NNODES="1", NPROC_PER_NODE="2")
        agents = 1
    else:
        env.update(NNODES="2", NPROC_PER_NODE="1", RDZV_ENDPOINT=f"127.0.0.1:{free_port()}",
                   RDZV_ID=f"faults-{os.getpid()}-{time.monotonic_ns()}")
        agents = 2
    processes = []
    for node in range(agents):
        with open(logs / f"node{node}.log", "w") as log:  # the child keeps its own copy of the descriptor
            processes.append(subprocess.Popen(["bash", str(TORCHRUN_SH), *train_args(run_dir)], env=env, cwd=ROOT,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return processes


def kill_one_worker(agents: list[subprocess.Popen], run_dir: Path, timeout: float) -> float | None:
    """SIGKILL the last agent's first worker once a checkpoint exists; the kill time, or None."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoints" / "ckpt-000000002.pt").exists():
        if time.monotonic() > deadline or any(a.poll() is not None for a in agents):
            return None
        time.sleep(0.1)
    workers = children(agents[-1].pid)
    if not workers:
        return None
    os.kill(workers[0], signal.SIGKILL)
    return time.time()


def one_run(setup: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="dtrain-faults-") as tmp:
        tmp_path = Path(tmp)
        run_dir = tmp_path / "run"
        agents = start(setup, run_dir, tmp_path)
        started = time.monotonic()
        killed_at = kill_one_worker(agents, run_dir, timeout=240)
        hung = False
        for agent in agents:
            try:
                agent.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                hung = True
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        log = "".join((tmp_path / f"node{n}.log").read_text() for n in range(len(agents)))
        final = run_dir / "final_metrics.json"
        step = json.loads(final.read_text())["step"] if final.is_file() else None
        resumed_at = _resume_time(run_dir)
        recovered = (killed_at is not None and not hung and all(a.returncode == 0 for a in agents)
                     and step == MAX_ITERS and "resumed from" in log)
        return {"setup": setup, "recovered": recovered, "hung": hung, "killed": killed_at is not None,
                "exit_codes": [a.returncode for a in agents], "final_step": step,
                "recovery_s": round(resumed_at - killed_at, 1) if recovered and resumed_at else None,
                "seconds": round(time.monotonic() - started, 1),
                "errors": sorted(set(re.findall(r"(Connection refused|connectFullMesh|did not join|"
                                                r"process group did not form|timed out)", log)))}


def _resume_time(run_dir: Path) -> float | None:
    """When the restarted group logged its first record (a "run" record after the first one)."""
    path = run_dir / JSONL_NAME
    if not path.is_file():
        return None
    starts = [record["time"] for record in read_records(path) if record.get("type") == "run"]
    return starts[1] if len(starts) > 1 else None


def summarize(results: list[dict]) -> dict:
    summary = {}
    for setup in sorted({r["setup"] for r in results}):
        runs = [r for r in results if r["setup"] == setup]
        times = sorted(r["recovery_s"] for r in runs if r["recovery_s"] is not None)
        summary[setup] = {"runs": len(runs), "recovered": sum(r["recovered"] for r in runs),
                          "hung": sum(r["hung"] for r in runs),
                          "recovery_s_median": times[len(times) // 2] if times else None,
                          "recovery_s_max": times[-1] if times else None}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated: " + ", ".join(SETUPS))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run counts as hung")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = parser.parse_args()
    env = machine_environment()  # before these runs add their own load
    if warning := not_quiet_warning(env):
        print(warning, flush=True)
    results = []
    for setup in args.setups.split(","):
        for index in range(args.runs):
            result = one_run(setup, args.timeout)
            results.append(result)
            print(json.dumps({"run": index + 1, **result}), flush=True)
    summary = summarize(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "max_iters": MAX_ITERS, "summary": summary,
                                    "runs": results}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if all(s["recovered"] == s["runs"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
