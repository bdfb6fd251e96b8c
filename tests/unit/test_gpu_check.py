"""benchmarks/gpu_check.sh --cpu-dry-run: the GPU check's steps at tiny sizes on CPU, so the
script cannot rot between GPU leases (the GPU run itself needs a lent machine)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_dry_run_passes(tmp_path):
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", __import__("sys").executable), OMP_NUM_THREADS="1")
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = (tmp_path / "summary.md").read_text()
    assert "torch 2." in summary and "| resume_exact | ok |" in summary and "FAIL" not in summary
    for name in ("environment", "model_none", "e2e_gpu", "e2e_torch", "overhead", "resume_exact"):
        assert json.loads((tmp_path / f"{name}.json").read_text())
    assert json.loads((tmp_path / "resume_exact.json").read_text())["max_abs_difference"] <= 1e-5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real check would run")
def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    env = dict(os.environ, PYTHON=__import__("sys").executable)
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "--cpu-dry-run" in done.stderr
