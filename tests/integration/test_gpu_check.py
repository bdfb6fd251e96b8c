"""benchmarks/gpu_check.sh --cpu-dry-run: the GPU check's steps at tiny sizes on CPU, so the
script cannot rot between GPU leases (the GPU run itself needs a lent machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


# What the bare GPU machine lacks: importing any of them fails, as it would there.
ABSENT_ON_THE_GPU_MACHINE = ("mlflow", "sklearn", "matplotlib", "deepspeed", "ffcv", "nvidia")


def _without_optional_packages(tmp_path: Path) -> str:
    blocked = tmp_path / "blocked"
    for name in ABSENT_ON_THE_GPU_MACHINE:
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])


@pytest.mark.slow  # trains and benchmarks every step of the check: minutes on 2 cores
def test_gpu_check_cpu_dry_run_passes(tmp_path):
    """The whole sequence, with MLflow, scikit-learn, matplotlib, DeepSpeed, FFCV and DALI unimportable."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=_without_optional_packages(tmp_path))
    out = tmp_path / "out"
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "torch 2." in summary and "| resume_exact | ok |" in summary and "FAIL" not in summary
    assert "| ddp_sync_bn | ok | process group gloo" in summary and "| checkpoint | ok |" in summary
    for name in ("environment", "model_none", "e2e_gpu", "e2e_torch", "overhead", "checkpoint", "ddp_sync_bn",
                 "resume_exact"):
        assert json.loads((out / f"{name}.json").read_text())
    assert json.loads((out / "resume_exact.json").read_text())["max_abs_difference"] <= 1e-5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real check would run")
def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "--cpu-dry-run" in done.stderr
