"""The multi-host lab: the README's cluster command on N simulated hosts, with faults injected.

    python benchmarks/cluster_lab --hosts 4 --faults all --runs 10 --out /tmp/lab
    python benchmarks/cluster_lab --hosts 2 --faults worker-kill,host-crash --runs 1 --out /tmp/lab
    python benchmarks/cluster_lab --list            # the faults and what each must end in
    python benchmarks/cluster_lab --cleanup         # remove what a killed lab left behind

Needs root (network namespaces). One baseline run without faults gives the weights every
recovered run must equal bitwise; then each fault runs --runs times (at least its own minimum
with --runs 0). Writes OUT/cluster_lab.json (environment, per-run records, summary) and prints a
table. Everything the lab made is removed on exit, Ctrl-C, SIGTERM, and by the next lab after
a crash of this one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `cluster_lab` as a package
CHECKOUT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(CHECKOUT), str(CHECKOUT / "data_prep")]  # dtrain and dtrain_prep from this checkout

from cluster_lab import tracking  # noqa: E402
from cluster_lab.faults import FAULTS, Fault  # noqa: E402
from cluster_lab.hosts import Cluster, namespaces_available, sweep_stale  # noqa: E402
from cluster_lab.job import Job, JobSpec, bitwise_equal, model_weights, unreadable_checkpoints  # noqa: E402
from cluster_lab.links import measure  # noqa: E402
from dtrain.bench.machine import machine_environment, not_quiet_warning  # noqa: E402


def prepare_data(out: Path) -> Path:
    data = out / "digits"
    if not (data / "summary.json").is_file():
        subprocess.run([sys.executable, "-m", "dtrain.cli", "prepare", "digits", "--out", str(data), "--quiet"],
                       check=True)
    return data


def run_once(cluster: Cluster, spec: JobSpec, run_dir: Path, fault: Fault | None, rng: random.Random,
             timeout: float) -> tuple[Job, dict]:
    shutil.rmtree(run_dir, ignore_errors=True)
    job = Job(cluster, spec, run_dir, run_dir.parent / f"{run_dir.name}-logs")
    shutil.rmtree(job.logs, ignore_errors=True)
    job.logs.mkdir(parents=True)
    if fault is not None and fault.before is not None:
        fault.before(job)
    started = time.time()
    job.start()
    record: dict = {"fault": fault.name if fault else None}
    if fault is not None:
        if fault.waits_for_checkpoint and not job.wait_for_step(spec.fault_at_step, timeout):
            job.stop()
            return job, {**record, "ok": False, "problems": [f"never reached step {spec.fault_at_step}"]}
        record["injected"] = fault.inject(job, rng)
    bound = fault.bound_s if fault and fault.expect == "end" else timeout
    ended_in_time = job.wait(bound - (time.time() - started) if not fault else bound)
    record["seconds"] = round(time.time() - started, 1)
    record["exit_codes"] = {n: [i.exit_code for i in s.invocations] for n, s in job.supervisors.items()}
    if not ended_in_time:
        record["hung"] = [n for n, s in job.supervisors.items() if s.running() and not s.held]
    # Before job.stop() kills what is left: a process alive 15 s after its launcher ended is an orphan.
    record["leftover_processes"] = {} if not ended_in_time else job.leftover_processes()
    job.stop()
    record["unreadable_checkpoints"] = unreadable_checkpoints(run_dir)
    return job, record


def judge(job: Job, record: dict, fault: Fault | None, baseline: dict | None) -> dict:
    problems = list(record.get("problems", []))
    if record.get("hung"):
        problems.append(f"still running after the bound: {', '.join(record['hung'])}")
    problems += [f"orphan processes on {n}: {p}" for n, p in record["leftover_processes"].items()]
    problems += [f"lost checkpoint {c}" for c in record["unreadable_checkpoints"]]
    if fault is not None and fault.lines is not None and "injected" in record:
        problems += fault.lines(job, record["injected"])
    if fault is None or fault.expect == "finish":
        problems += finished_problems(job, record, baseline if fault is None or fault.compare_weights else None)
        if fault is not None and (resumes := [t for t in job.resume_times() if t > record["injected"]["at"]]):
            record["recovery_s"] = round(resumes[0] - record["injected"]["at"], 1)
    return {**record, "ok": not problems, "problems": problems}


def finished_problems(job: Job, record: dict, baseline: dict | None) -> list[str]:
    problems = []
    finals = {n: codes[-1] if codes else None for n, codes in record["exit_codes"].items()
              if not job.supervisors[n].held}  # a host that never came back (elastic) has no exit 0
    if any(code != 0 for code in finals.values()):
        problems.append(f"final exit codes {finals}")
    if job.final_step() != job.spec.iters:
        problems.append(f"final step {job.final_step()}, expected {job.spec.iters}")
    elif baseline is not None and not bitwise_equal(model_weights(job.checkpoint(job.spec.iters)), baseline):
        problems.append("final weights differ from the uninterrupted run")
    return problems


def rerun_after_end(cluster: Cluster, job: Job, baseline: dict, timeout: float) -> list[str]:
    """After an "end" fault: the same command on every host again must resume and finish bitwise."""
    rerun = Job(cluster, job.spec, job.run_dir, job.logs.parent / f"{job.logs.name}-rerun")
    rerun.start()
    ended = rerun.wait(timeout)
    record = {"exit_codes": {n: [i.exit_code for i in s.invocations] for n, s in rerun.supervisors.items()}}
    rerun.stop()
    problems = [] if ended else ["the rerun did not finish in time"]
    problems += finished_problems(rerun, record, baseline)
    if not any("resumed from" in rerun.log_text(n) for n in rerun.nodes):
        problems.append("the rerun did not resume from a checkpoint")
    return [f"rerun: {p}" for p in problems]


def summarize(records: list[dict]) -> dict:
    summary = {}
    for name in dict.fromkeys(r["fault"] or "baseline" for r in records):
        runs = [r for r in records if (r["fault"] or "baseline") == name]
        times = sorted(r["recovery_s"] for r in runs if r.get("recovery_s") is not None)
        summary[name] = {"runs": len(runs), "ok": sum(r["ok"] for r in runs),
                         "recovery_s_median": times[len(times) // 2] if times else None,
                         "recovery_s_max": times[-1] if times else None,
                         "seconds_median": sorted(r["seconds"] for r in runs)[len(runs) // 2]}
    return summary


def table(summary: dict) -> str:
    rows = ["| fault | ok / runs | median recovery s | max recovery s | median run s |", "|---|---|---|---|---|"]
    for name, s in summary.items():
        rows.append(f"| {name} | {s['ok']}/{s['runs']} | {s['recovery_s_median'] or '-'} | "
                    f"{s['recovery_s_max'] or '-'} | {s['seconds_median']} |")
    return "\n".join(rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--faults", default="all", help="comma-separated names, or all (see --list)")
    parser.add_argument("--runs", type=int, default=0, help="runs per fault (0: each fault's minimum)")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run counts as hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("cluster-lab-out"))
    parser.add_argument("--links", default="", help="instead of faults: HOSTSxMBIT,... e.g. 2x100,4x100,2x1000,4x1000 "
                        "runs benchmarks/allreduce_share.py over links limited to MBIT Mbit/s")
    parser.add_argument("--links-args", default="", help="extra arguments for allreduce_share.py (quoted)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--cleanup", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.list:
        print("\n".join(f"{f.name:18} {f.expect:6} >= {f.min_runs} runs  {f.summary}" for f in FAULTS.values()))
        return 0
    if args.cleanup:
        print("removed:", ", ".join(sweep_stale()) or "nothing")
        return 0
    if reason := namespaces_available():
        print(f"cluster lab: cannot simulate hosts here: {reason}", file=sys.stderr)
        return 2
    if args.links:
        return run_links(args)
    names = list(FAULTS) if args.faults == "all" else args.faults.split(",")
    if unknown := [n for n in names if n not in FAULTS]:
        print(f"cluster lab: unknown fault(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the Cluster's __exit__ tears down
    environment = machine_environment()
    if warning := not_quiet_warning(environment):
        print(warning, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(hosts=args.hosts, data_root=prepare_data(args.out).resolve(), iters=args.iters)
    rng = random.Random(args.seed)
    records = run_all(spec, names, args, rng)
    summary = summarize(records)
    (args.out / "cluster_lab.json").write_text(json.dumps(
        {"environment": environment, "hosts": args.hosts, "iters": args.iters, "summary": summary,
         "runs": records}, indent=1) + "\n")
    print(table(summary))
    return 0 if all(r["ok"] for r in records) else 1


def run_links(args: argparse.Namespace) -> int:
    environment = machine_environment()
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(int(v) for v in item.split("x")) for item in args.links.split(",")]
    results = []
    with Cluster([f"node{i}" for i in range(max(h for h, _ in pairs))]) as cluster:
        for hosts, mbit in pairs:
            results.append(measure(cluster, hosts, mbit, args.out, args.links_args.split(), args.timeout))
            print(json.dumps(results[-1])[:2000], flush=True)
    (args.out / "links.json").write_text(json.dumps({"environment": environment, "results": results}, indent=1) + "\n")
    return 0 if not any("error" in r for r in results) else 1


def run_all(spec: JobSpec, names: list[str], args: argparse.Namespace, rng: random.Random) -> list[dict]:
    records = []
    hosts = [f"node{i}" for i in range(args.hosts)]
    with Cluster([*hosts, tracking.HOST], aliases={tracking.HOST: (tracking.ALIAS,)}) as cluster:
        job, record = run_once(cluster, spec, args.out / "baseline", None, rng, args.timeout)
        record = judge(job, record, None, None)
        records.append(record)
        print(json.dumps(record), flush=True)
        if not record["ok"]:
            return records
        baseline = model_weights(job.checkpoint(spec.iters))
        for name in names:
            fault = FAULTS[name]
            fault_spec = dataclasses.replace(spec, **fault.spec)
            for index in range(args.runs or fault.min_runs):
                job, record = run_once(cluster, fault_spec, args.out / f"{name}-{index}", fault, rng, args.timeout)
                record = judge(job, record, fault, baseline)
                if fault.after is not None:
                    fault.after(job)  # after judge(), which may still need what `before` started
                if fault.expect == "end" and "injected" in record:
                    record["problems"] += rerun_after_end(cluster, job, baseline, args.timeout)
                    record["ok"] = not record["problems"]
                records.append({"run": index + 1, **record})
                print(json.dumps(records[-1]), flush=True)
    return records


if __name__ == "__main__":
    sys.exit(main())
