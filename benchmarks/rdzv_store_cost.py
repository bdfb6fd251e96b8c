"""What `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` (set by launch/torchrun.sh, README "Running on a
cluster") costs: the README's two-agent command on this host, with the setting 1 and 0 in turns.

    python benchmarks/rdzv_store_cost.py --repeats 3 --out /tmp/rdzv_store_cost.json

With the setting 1 the workers do not reuse their agent's TCPStore: rank 0's worker starts one
of its own in each rendezvous round and every worker connects to it. That is setup work, once
per (re)start, never per step; this measures it as the seconds from the launchers' start to the
first record of the training run (process group formed, model built) and to the end of a
12-step run (benchmarks/faults.py's job, checkpoints every 2 steps), median over --repeats.
The environment (commit, date, load) is recorded as the other benchmarks do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/faults.py: the same job
import faults  # noqa: E402

from dtrain.bench.machine import machine_environment, not_quiet_warning  # noqa: E402
from dtrain.tracking.jsonl import JSONL_NAME, read_records  # noqa: E402

SETTING = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def one_run(setting: str) -> dict:
    os.environ[SETTING] = setting  # the agents inherit it; launch/torchrun.sh keeps a given value
    with tempfile.TemporaryDirectory(prefix="dtrain-rdzv-") as tmp:
        run_dir = Path(tmp) / "run"
        began = time.time()
        agents = faults.start("two-agents", run_dir, Path(tmp))
        codes = [agent.wait(timeout=600) for agent in agents]
        ended = time.time()
        records = list(read_records(run_dir / JSONL_NAME)) if (run_dir / JSONL_NAME).is_file() else []
        first = next((r["time"] for r in records if r.get("type") == "run"), None)
    return {"setting": setting, "exit_codes": codes, "to_first_record_s": None if first is None else first - began,
            "total_s": ended - began}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    environment = machine_environment()
    if warning := not_quiet_warning(environment):
        print(warning, flush=True)
    runs = []
    for _ in range(args.repeats):
        for setting in ("1", "0"):  # in turns, so a change of load falls on both alike
            runs.append(one_run(setting))
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for setting in ("1", "0"):
        mine = [r for r in runs if r["setting"] == setting and all(c == 0 for c in r["exit_codes"])]
        summary[setting] = {"ok": len(mine), "runs": args.repeats,
                            "to_first_record_s_median": statistics.median(r["to_first_record_s"] for r in mine)
                            if mine else None,
                            "total_s_median": statistics.median(r["total_s"] for r in mine) if mine else None}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": environment, "summary": summary, "runs": runs}, indent=1) + "\n")
    return 0 if all(s["ok"] == args.repeats for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
