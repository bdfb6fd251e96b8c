"""Multi-process training with torchrun over gloo: the same weights as one process (sync BN),
a simulated 2-node run, and failures that end every rank with the cause printed once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import free_port

from dtrain.checkpoint import atomic_load  # weights only, like every dtrain reader

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TINY = ["data.loader=synthetic", "data.synthetic_samples=32", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", "eval.batch_size=16", "schedule.epochs=2", "schedule.milestones=[1]",
        "tracking.backend=none", "train.deterministic=true", "distributed.sync_bn=true",
        "distributed.timeout_minutes=2",
        "optim.lr=0.01"]  # random labels at lr 0.1 diverge and amplify fp noise into 1e-3 differences
TIMEOUT = 300


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT)


def _train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return ["-m", "dtrain.train", "digits_resnet20", *TINY, f"run_dir={run_dir}", *extra]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / "ckpt-000000008.pt"
    return atomic_load(path)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].double(), b[key].double(), atol=2e-5, rtol=1e-4, msg=key)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("single")
    done = _run([sys.executable, *_train_cmd(run_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_two_processes_with_sync_bn_train_the_same_weights_as_one(single_run, tmp_path):
    done = _run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", *_train_cmd(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished: finished at step 8" in done.stdout
    _assert_same_weights(_weights(single_run), _weights(tmp_path))


def _two_nodes(run_dir: Path) -> list[tuple[int, str, str]]:
    """Two torchrun invocations, as two machines would run them, meeting at a c10d rendezvous."""
    port = free_port()
    nodes = []
    for node_rank in (0, 1):
        cmd = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"dtrain-test-{port}", "--node-rank",
               str(node_rank), *_train_cmd(run_dir)]
        nodes.append(subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=TIMEOUT) for node in nodes]
    return [(node.returncode, out, err) for node, (out, err) in zip(nodes, outputs, strict=True)]


def test_simulated_two_node_run_with_c10d_rendezvous(single_run, tmp_path):
    results = _two_nodes(tmp_path)
    if any(code for code, _, _ in results) and any("Address already in use" in err for _, _, err in results):
        results = _two_nodes(tmp_path)  # another process took the free port between pick and bind
    for code, out, err in results:
        assert code == 0, out[-2000:] + err[-3000:]
    summaries = [out for _, out, _ in results if "finished: finished at step 8" in out]
    assert len(summaries) == 1  # rank 0 alone reports
    # Rank 0's node is whichever agent joined first: its header line is how a user finds it.
    assert [out for _, out, _ in results if "dtrain rank 0 of 2 (process group gloo) | run dir" in out] == summaries
    _assert_same_weights(_weights(single_run), _weights(tmp_path))


def test_failure_on_one_rank_ends_all_ranks_with_the_cause_printed_once(tmp_path):
    started = time.monotonic()
    done = _run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", *_train_cmd(tmp_path, "schedule.epochs=50")],
                DTRAIN_TEST_RAISE_AT="1:2")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert time.monotonic() - started < 120  # no rank left waiting in a collective
    assert output.count("simulated failure on rank 1 at step 2") == 1, output[-3000:]
    assert output.count("training failed:") == 1, output[-3000:]  # rank 0 stays silent
    # (torchrun adds its own ChildFailedError summary; the workers print one traceback in all)
    assert output.count('dtrain/distributed/failure.py", line') == 1, output[-3000:]  # its top frame
    frames = [line for line in output.splitlines() if 'File "' in line and "dtrain/" in line]
    assert frames and all(line.startswith("[rank 1] ") for line in frames)  # rank 1's lines say so


def test_batch_not_divisible_by_world_size_is_one_line_printed_once(tmp_path):
    done = _run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", *_train_cmd(tmp_path, "optim.batch_size=9")])
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count("optim.batch_size=9 does not divide by world size 2") == 1, output[-3000:]
    assert 'dtrain/' not in output.replace("-m dtrain.train", "")  # no traceback through our code
