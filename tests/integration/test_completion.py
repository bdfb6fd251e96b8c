"""Shell completion of key=value words: keys end in `=` with no space after them, values are
completed (registry names, booleans, chart enums, recipes, bundled values files), and `dtrain k8s
render` completes chart values and the training config under `overrides.`.

Bash splits words at `=` and `:`; dtrain's bash script sends the line itself, so the protocol is
tested here as bash drives it (COMP_LINE_BEFORE, COMP_WORDBREAKS), and once in a real bash."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.shell_completion import shell_complete
from processes import CHECKOUT_PYTHONPATH

from dtrain.cli import cli

ROOT = Path(__file__).resolve().parents[2]
BASH_WORDBREAKS = "\"'><=;|&(:"


def bash_complete(line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> list[str]:
    """What dtrain answers bash for the line typed up to the cursor: ["type,value", ...]."""
    monkeypatch.setenv("COMP_LINE_BEFORE", line)
    monkeypatch.setenv("COMP_WORDBREAKS", BASH_WORDBREAKS)
    capsys.readouterr()
    assert shell_complete(cli, {}, "dtrain", "_DTRAIN_COMPLETE", "bash_complete") == 0
    return capsys.readouterr().out.split()


CASES = [
    ("dtrain train resnet50 optim.l", ["nospace,optim.lr="]),  # a key: no space after its '='
    ("dtrain train resnet50 data.loader=", [f"plain,{n}" for n in ("torch", "synthetic", "gpu", "dali", "ffcv",
                                                                   "auto")]),
    ("dtrain train resnet50 data.loader=sy", ["plain,synthetic"]),  # bash replaces only `sy`
    ("dtrain show-config resnet50 --set train.amp=", ["plain,none", "plain,bf16", "plain,fp16", "plain,auto"]),
    ("dtrain train resnet50 train.deterministic=", ["plain,true", "plain,false"]),
    ("dtrain train resnet50 train.channels_last=", ["plain,true", "plain,false", "plain,auto"]),
    ("dtrain train resnet50 optim.lr=0", []),  # a number: nothing to offer
    ("dtrain train resnet50 data.root=/da", ["dir,/da"]),  # bash completes the path after the '='
    ("dtrain k8s render jobKind=", ["plain,PyTorchJob", "plain,IndexedJob"]),
    ("dtrain k8s render --set pytorchJob.cleanPodPolicy=", ["plain,Running", "plain,All", "plain,None"]),
    ("dtrain k8s render mlflow.en", ["nospace,mlflow.enabled="]),
    ("dtrain k8s render mlflow.enabled=f", ["plain,false"]),
    ("dtrain k8s render podLab", ["nospace,podLabels."]),  # a free-form map: its keys are the user's
    ("dtrain k8s render recipe=cifar10_resnet110_1", ["plain,cifar10_resnet110_1layer",
                                                      "plain,cifar10_resnet110_1layer_preact"]),
    ("dtrain k8s render overrides.data.lo", ["nospace,overrides.data.loader="]),
    ("dtrain k8s render overrides.data.loader=da", ["plain,dali"]),
    ("dtrain k8s render --values resnet200", ["plain,resnet200-preact-4node", "plain,resnet200-preact-4node-cluster"]),
    ("dtrain k8s render --values ./my", ["file,./my"]),
    ("dtrain k8s values digits", ["plain,digits-cpu-2node"]),
]


@pytest.mark.parametrize("line, expected", CASES, ids=[line for line, _ in CASES])
def test_bash_gets_keys_and_values(line: str, expected: list[str], monkeypatch, capsys) -> None:
    assert bash_complete(line, monkeypatch, capsys) == expected


def test_every_chart_value_is_offered(monkeypatch, capsys) -> None:
    offered = {item.split(",", 1)[1] for item in bash_complete("dtrain k8s render ", monkeypatch, capsys)}
    assert {"nodes=", "rdzvJoinTimeoutSeconds=", "mlflow.backendStoreUri=", "overrides.", "labels."} <= offered


def test_completing_a_value_imports_no_torch() -> None:
    probe = ("import sys; sys.argv[0] = 'dtrain'\nfrom dtrain.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PYTHONPATH, "_DTRAIN_COMPLETE": "bash_complete",
           "COMP_LINE_BEFORE": "dtrain train resnet50 data.loader=", "COMP_WORDBREAKS": BASH_WORDBREAKS}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert "plain,torch" in done.stdout.split() and done.stderr.strip().splitlines()[-1] == "False", done.stderr


# -- a real bash -----------------------------------------------------------------------------------


def _read_until(fd: int, pattern: str, timeout: float = 30.0) -> str:
    seen, end = "", time.monotonic() + timeout
    while time.monotonic() < end and not re.search(pattern, seen):
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:
                break
    return seen


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_in_bash_a_key_gets_no_space_and_a_value_completes(tmp_path: Path) -> None:
    (tmp_path / "dtrain").write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; sys.argv[0] = \"dtrain\"; "
                                     "from dtrain.cli import main; main()' \"$@\"\n")
    (tmp_path / "dtrain").chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "TERM": "dumb", "PS1": "$ ", "HOME": str(tmp_path),
           "PYTHONPATH": CHECKOUT_PYTHONPATH}
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive bash with dtrain's completion loaded
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    try:
        os.write(fd, b'eval "$(_DTRAIN_COMPLETE=bash_source dtrain)"; echo READY\n')
        assert "READY" in _read_until(fd, r"READY\r?\n")
        # Complete, then wrap the line in echo '...' to see exactly what the completion left.
        command = "dtrain train resnet50 "
        for typed, completed in ((f"{command}optim.l", f"{command}optim.lr="),
                                 (f"{command}data.loader=sy", f"{command}data.loader=synthetic ")):
            os.write(fd, typed.encode() + b"\t")
            _read_until(fd, re.escape(completed.split()[-1]))
            os.write(fd, b"\x01echo '\x05'\n")
            shown = _read_until(fd, r"\n" + re.escape(completed.strip()) + r" ?\r?\n")
            assert re.search(r"\n" + re.escape(completed) + r"\r?\n", shown), shown
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
