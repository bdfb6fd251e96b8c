"""The CLI as a process: a config error is one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

from processes import checkout_env


def test_cli_prints_one_line_for_a_config_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dtrain", "show-config", "resnet50", "optim.lrr=1"],
        capture_output=True, text=True, timeout=120, env=checkout_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: unknown config key optim.lrr (did you mean optim.lr?)"
    assert "Traceback" not in result.stderr
