"""The GPU check behind benchmarks/gpu_check.sh: one command, a bare CUDA machine, no network.

    python benchmarks/gpu_check.py --out DIR                 # on a GPU (about 6-8 minutes)
    python benchmarks/gpu_check.py --cpu-dry-run --out DIR   # tiny sizes on CPU, same steps

Steps, each a `dtrain` subprocess writing one JSON under DIR: prepare a synthetic ImageNet-like
JPEG set (webdataset shards only: no FFCV needed), the GPU-marked tests (when pytest is there),
nvJPEG-vs-PIL decoder tolerance, ResNet-50 model-only img/s (bf16 and fp16, channels_last; both
also with torch.compile, fp16's last and only if time is left), end-to-end img/s with the gpu and
the torch loader (and DALI when installed), framework overhead, checkpoint blocked time (ResNet-50
and ResNet-200), and a torchrun 1-process training run (NCCL process group, DDP, sync BN,
tracking.backend=jsonl; loss must stay finite) stopped half way and resumed, whose final weights
must equal the uninterrupted run's. DIR/summary.md gets one table with the
device, driver, torch/CUDA versions and commit. Exits 1 if any step fails; what the machine
lacks (MLflow, DALI, FFCV, DeepSpeed, pytest) is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dtrain.checkpoint.atomic import read_checkpoint
from dtrain.data.gpu_decode import decode_pil, decode_torchvision, torchvision_decode_jpeg
from dtrain.data.sources import ManifestSource, read_manifest
from dtrain.errors import DtrainError
from dtrain.tracking.jsonl import JSONL_NAME, metric_history

ROOT = Path(__file__).resolve().parents[1]
COMPILE_SECONDS = 120  # one `bench model --compile` of ResNet-50 (compile included), with a margin
GPU_TEST_FILES = ("tests/unit/test_gpu_loader.py", "tests/unit/test_data_loaders.py",
                  "tests/unit/test_models_deterministic.py")


@dataclass(frozen=True)
class Sizes:
    """What each step runs on: the real check or the CPU dry run."""

    device: str
    images: int
    val_images: int
    width: int
    height: int
    model: str
    batch: int
    crop: int
    num_classes: int
    amps: tuple[str, ...]
    compile_amps: tuple[str, ...]  # the AMP modes also measured with torch.compile (~1.5 min each)
    workers: int
    iters: int
    train_iters: int


def sizes(dry_run: bool) -> Sizes:
    cores = os.cpu_count() or 1
    if dry_run:
        return Sizes("cpu", 48, 8, 64, 48, "resnet20", 8, 32, 10, ("none",), (), 0, 2, 4)  # 0: no worker start-ups
    return Sizes("cuda", 20000, 512, 500, 375, "resnet50", 256, 224, 1000, ("bf16", "fp16"), ("bf16", "fp16"),
                 min(16, cores), 30, 300)


def environment(dry_run: bool) -> dict:
    env = {"dry_run": dry_run, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
           "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}
    env["torchvision"] = _version("torchvision")
    env["commit"] = _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    env["dirty"] = bool(_run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    env["driver"] = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    env["missing"] = [name for name in ("mlflow", "nvidia.dali", "ffcv", "deepspeed", "pytest") if not _has(name)]
    return env


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except Exception:  # a parent package that is missing or fails to import
        return False


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # absent, or present but not loadable beside this torch
        return None


def _run_text(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Check:
    """Runs the steps, keeps their outcomes, writes DIR/summary.md."""

    def __init__(self, out: Path, dry_run: bool, timeout: float, env: dict):
        self.out, self.dry_run, self.timeout, self.env = out, dry_run, timeout, env
        self.rows: list[tuple[str, str, str]] = []  # step, status, figure
        self.failed = False

    def dtrain(self, name: str, *args: str, figure=None, torchrun: bool = False) -> dict | None:
        """`python -m dtrain ARGS --json DIR/NAME.json`; the JSON it wrote, or None on failure.
        torchrun=True: `torchrun --nproc-per-node 1 -m dtrain.train ARGS[1:]`, a process group of one
        (NCCL on a GPU), so DDP and SyncBatchNorm run as in a multi-GPU job."""
        path = self.out / f"{name}.json"
        argv = [sys.executable, "-m", "dtrain", *args]
        if torchrun:
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                    "-m", "dtrain.train", *args[1:]]
        if args[0] == "bench":
            argv += ["--json", str(path)]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, cwd=ROOT)
        seconds = time.perf_counter() - started
        (self.out / "logs").mkdir(exist_ok=True)
        (self.out / "logs" / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return self.record(name, "FAIL", f"exit {done.returncode}: {tail[0][:160]}")
        result = json.loads(path.read_text()) if path.is_file() else {"seconds": round(seconds, 1)}
        self.record(name, "ok", figure(result) if figure else f"{seconds:.1f} s")
        return result

    def record(self, name: str, status: str, figure: str, payload: dict | None = None) -> None:
        print(f"[gpu-check] {name}: {status} {figure}", flush=True)
        self.rows.append((name, status, figure))
        self.failed |= status == "FAIL"
        if payload is not None:
            (self.out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
        self.summary()  # after every step: a check cut short by the time limit still leaves its table
        return None

    def summary(self) -> None:
        env = self.env
        lines = ["# GPU check" + (" (CPU dry run)" if self.dry_run else ""), "",
                 f"device {env['device_name']}, driver {env['driver']}, torch {env['torch']}, CUDA {env['cuda']}, "
                 f"torchvision {env['torchvision']}, commit {env['commit']}{'+dirty' if env['dirty'] else ''}, "
                 f"load average {env['load_average']:.2f} on {env['cpus']} CPUs", "",
                 f"not installed (skipped): {', '.join(env['missing']) or 'nothing'}", "",
                 "| step | status | figure |", "|---|---|---|"]
        lines += [f"| {name} | {status} | {figure} |" for name, status, figure in self.rows]
        (self.out / "summary.md").write_text("\n".join(lines) + "\n")


def _blocked(result: dict) -> str:
    rows = result.get("results", [])
    return ", ".join(f"{r['name']} blocked {r['details']['blocked_s_median']} s (median), "
                     f"{r['details']['megabytes']} MB" for r in rows) or "no figure"


def _img_s(result: dict) -> str:
    rows = result.get("results", [])
    return ", ".join(f"{r['name']} {r['images_per_s']:.0f} img/s" for r in rows) or "no figure"


def decoder_tolerance(check: Check, data: Path, device: str, count: int = 64) -> None:
    """Max / mean |torchvision decode - PIL decode| in pixel levels over the first prepared JPEGs."""
    if torchvision_decode_jpeg() is None:
        return check.record("decoder_tolerance", "skip", "torchvision.io does not load here: PIL decodes")
    source = ManifestSource(read_manifest(data, "train"), "shards")
    jpegs = [torch.frombuffer(bytearray(source.read_bytes(i)), dtype=torch.uint8)
             for i in range(min(count, len(source)))]
    ours = decode_torchvision(jpegs, torch.device(device))
    gaps = [(a.cpu().int() - b.int()).abs() for a, b in zip(ours, decode_pil(jpegs, torch.device("cpu")), strict=True)]
    worst, mean = max(int(g.max()) for g in gaps), sum(float(g.float().mean()) for g in gaps) / len(gaps)
    check.record("decoder_tolerance", "ok", f"torchvision on {device} vs PIL: max {worst} levels, mean {mean:.3f}",
                 {"images": len(gaps), "max_levels": worst, "mean_levels": mean, "device": device})


def trained_through_ddp(check: Check, runs: Path, backend: str) -> None:
    """The whole run formed a process group (DDP + SyncBatchNorm over `backend`) and its loss stayed finite."""
    log_file, metrics_file = check.out / "logs" / "train_whole.log", runs / "whole" / JSONL_NAME
    log = log_file.read_text() if log_file.is_file() else ""
    history = metric_history(metrics_file) if metrics_file.is_file() else {}
    losses = [value for _, value in history.get("train/loss", [])]
    grouped = f"(process group {backend})" in log
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    check.record("ddp_sync_bn", "ok" if grouped and finite else "FAIL",
                 f"process group {backend if grouped else 'NOT formed'}, {len(losses)} losses logged, "
                 f"{'all finite' if finite else 'NOT all finite'}, last {losses[-1] if losses else None}",
                 {"backend": backend if grouped else None, "losses": losses})


def resume_is_exact(check: Check, runs: Path) -> None:
    """The weights after an interrupted-and-resumed run against the uninterrupted run's."""
    def weights(run: str) -> dict:
        final = json.loads((runs / run / "final_metrics.json").read_text())
        path = final["last_checkpoint"]
        model = read_checkpoint(path)["model"]
        return {k: v for k, v in model.items() if torch.is_tensor(v) and v.is_floating_point()}

    try:
        whole, resumed = weights("whole"), weights("resumed")
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, DtrainError) as exc:
        return check.record("resume_exact", "FAIL", f"cannot compare checkpoints: {exc}")
    gap = max(float((whole[k] - resumed[k]).abs().max()) for k in whole)
    status = "ok" if whole.keys() == resumed.keys() and gap <= 1e-5 else "FAIL"
    check.record("resume_exact", status, f"max |weight difference| {gap:.3g} over {len(whole)} tensors "
                 "(tolerance 1e-5; 0 means bitwise)", {"max_abs_difference": gap, "tensors": len(whole)})


def run(out: Path, dry_run: bool, budget_seconds: float) -> int:
    started = time.monotonic()
    if not dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; use --cpu-dry-run on a CPU machine", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    s, env = sizes(dry_run), environment(dry_run)
    (out / "environment.json").write_text(json.dumps(env, indent=1) + "\n")
    check = Check(out, dry_run, timeout=300, env=env)
    for name in env["missing"]:
        print(f"[gpu-check] {name} is not installed: its measurements are skipped", flush=True)
    data = out / "data"
    check.dtrain("prepare", "prepare", "synthetic", "--count", str(s.images), "--val-count", str(s.val_images),
                 "--width", str(s.width), "--height", str(s.height), "--num-classes", str(s.num_classes),
                 "--formats", "wds", "--workers", str(os.cpu_count() or 1), "--out", str(data), "--quiet")
    gpu_tests(check, env, dry_run)
    decoder_tolerance(check, data, s.device)
    measure(check, s, data, env)
    train(check, s, data, out / "runs", s.amps[0])
    # torch.compile for the other AMP modes last (~1.5 min each): what the time limit cuts first.
    for amp in s.compile_amps[1:]:
        left = budget_seconds - (time.monotonic() - started)
        if left < COMPILE_SECONDS:
            check.record(f"model_{amp}_compile", "skip",
                         f"{left:.0f} s left of the time limit, {COMPILE_SECONDS} needed")
            continue
        check.dtrain(f"model_{amp}_compile", "bench", "model", *_model_args(s), "--amp", amp, "--channels-last",
                     "--compile", *_timing_args(s), figure=_img_s)
    print(f"[gpu-check] {'FAILED' if check.failed else 'passed'}: {out / 'summary.md'}", flush=True)
    return 1 if check.failed else 0


def gpu_tests(check: Check, env: dict, dry_run: bool) -> None:
    if dry_run or "pytest" in env["missing"]:
        return check.record("gpu_tests", "skip", "CPU dry run" if dry_run else "pytest is not installed")
    # Only the data/model tests: other test modules import MLflow or scikit-learn, absent on a bare machine.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                           *GPU_TEST_FILES], cwd=ROOT, capture_output=True, text=True, timeout=300)
    (check.out / "gpu_tests.log").write_text(done.stdout + done.stderr)
    tail = (done.stdout.strip().splitlines() or ["?"])[-1]
    check.record("gpu_tests", "ok" if done.returncode in (0, 5) else "FAIL", tail)


def _model_args(s: Sizes) -> list[str]:
    return ["--model", s.model, "--batch", str(s.batch), "--image-size", str(s.crop), "--num-classes",
            str(s.num_classes), "--device", s.device]


def _timing_args(s: Sizes) -> list[str]:
    return ["--warmup", "2", "--iters", str(s.iters), "--repeats", "2" if s.device == "cpu" else "3"]


def measure(check: Check, s: Sizes, data: Path, env: dict) -> None:
    """Model-only (each AMP mode; the first also compiled), end-to-end per loader, overhead, checkpoint."""
    model, timing = _model_args(s), _timing_args(s)
    for amp in s.amps:
        for compiled in (False, True) if amp == s.amps[0] and s.compile_amps else (False,):
            check.dtrain(f"model_{amp}{'_compile' if compiled else ''}", "bench", "model", *model, "--amp", amp,
                         "--channels-last", *(["--compile"] if compiled else []), *timing, figure=_img_s)
    amp = s.amps[0]
    loader = ["--data", str(data), "--source", "shards", "--crop", str(s.crop), "--augment", "random_resized_crop"]
    has_dali = s.device == "cuda" and "nvidia.dali" not in env["missing"]  # FFCV would need a .beton from prepare
    for name in ["gpu", "torch"] + (["dali"] if has_dali else []):
        check.dtrain(f"e2e_{name}", "bench", "e2e", *model, "--amp", amp, "--channels-last", *loader,
                     "--loader", name, "--workers", str(max(1, s.workers)), *timing, figure=_img_s)
    check.dtrain("overhead", "bench", "overhead", *model, "--amp", amp, "--channels-last", *timing, figure=_img_s)
    dry = s.device == "cpu"
    check.dtrain("checkpoint", "bench", "checkpoint", "--models", "resnet20" if dry else "resnet50,resnet200",
                 "--saves", "1" if dry else "3", "--device", s.device, figure=_blocked)


def train(check: Check, s: Sizes, data: Path, runs: Path, amp: str) -> None:
    """torchrun with one process (a process group: DDP, SyncBatchNorm, NCCL on a GPU), the gpu loader:
    the whole run, and the same run stopped half way and resumed (a rerun of the same run_dir
    resumes from its last checkpoint)."""
    # data.val_split=val: the synthetic tree has no minival, which the R1 recipe's plateau rule reads.
    common = [f"data.root={data}", "data.val_split=val", "data.loader=gpu", "data.source=shards",
              f"data.crop_size={s.crop}",
              f"data.val_crop={s.crop}", f"data.val_resize={s.crop + s.crop // 7}",
              f"data.scale_range=[{s.crop + s.crop // 7},{2 * s.crop}]", f"data.workers={s.workers}",
              f"model.name={s.model}", f"model.num_classes={s.num_classes}", f"optim.batch_size={s.batch}",
              f"eval.batch_size={s.batch}", f"train.device={s.device}", f"train.amp={amp}",
              "train.channels_last=true", "train.deterministic=true", "distributed.sync_bn=true",
              "tracking.backend=jsonl", f"tracking.metrics_every_iters={max(1, min(10, s.train_iters // 4))}",
              "checkpoint.every_minutes=0",
              "schedule.epochs=null"]
    half = s.train_iters // 2
    check.dtrain("train_whole", "train", "resnet50", *common, f"run_dir={runs / 'whole'}",
                 f"schedule.max_iters={s.train_iters}", torchrun=True)
    check.dtrain("train_first_half", "train", "resnet50", *common, f"run_dir={runs / 'resumed'}",
                 f"schedule.max_iters={half}", torchrun=True)
    # A longer max_iters changes the run's fingerprint: resume=force says "continue it anyway".
    check.dtrain("train_resumed", "train", "resnet50", *common, f"run_dir={runs / 'resumed'}",
                 f"schedule.max_iters={s.train_iters}", "checkpoint.resume=force", torchrun=True)
    trained_through_ddp(check, runs, "gloo" if s.device == "cpu" else "nccl")
    resume_is_exact(check, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Directory for the JSON files and summary.md.")
    parser.add_argument("--cpu-dry-run", action="store_true", help="Tiny sizes on CPU: the same steps.")
    args = parser.parse_args(argv)
    return run(args.out, args.cpu_dry_run, float(os.environ.get("GPU_CHECK_TIMEOUT", "480")))


if __name__ == "__main__":
    sys.exit(main())
