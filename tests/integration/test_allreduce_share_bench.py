"""benchmarks/allreduce_share.py under torchrun on 2 gloo processes (loopback), at its smallest:
it runs, prints its table and writes the JSON the lead's multi-host runs are compared with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ROOT = Path(__file__).resolve().parents[2]


def test_allreduce_share_runs_on_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "share.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "benchmarks" / "allreduce_share.py"), "--link-mbit", "1000",
                           "--models", "resnet20", "--batch", "2", "--warmup", "0", "--repeats", "1",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 ranks on 1 host(s), gloo, link 1000 Mbit/s" in done.stdout
    assert "resnet20" in done.stdout and "(a) fp32 ms" in done.stdout and "(b) fp16 ms" in done.stdout
    record = json.loads(out.read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo" and record["link_mbit"] == 1000
    assert {"commit", "date_utc", "load_average", "quiet"} <= set(record["environment"])
    (result,) = record["results"]
    assert result["model"] == "resnet20" and result["parameters"] == 269_722  # R1's ResNet-20: 0.27 M
    assert result["gradient_bytes_fp32"] == 4 * 269_722 and result["buckets"] == 2  # 1 MiB, then the rest
    # Ring estimate, 2 ranks: 2(N-1)/N = 1 x the bytes, at 1,000 Mbit/s; fp16 sends half the bytes.
    assert result["ring_estimate_s"]["fp32"] == pytest.approx(4 * 269_722 * 8 / 1e9)
    assert result["ring_estimate_s"]["fp16"] == pytest.approx(result["ring_estimate_s"]["fp32"] / 2)
    assert set(result["step_s"]) == {"ddp", "ddp_fp16", "no_allreduce"}
    assert all(value > 0 for value in [*result["allreduce_s"].values(), *result["step_s"].values()])
