"""Commands that need no torch do not import it: `dtrain --help`, `recipes`, `keys`, `k8s values`
answer in a fraction of a second instead of the seconds importing torch takes on a busy machine.

Each command runs in a fresh interpreter (this test process has torch imported long ago)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import CHECKOUT_PYTHONPATH

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from dtrain.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "numpy", "mlflow", "pyarrow") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["recipes"], ["recipes", "--format", "json"], ["keys"], ["keys", "data"],
                                  ["train", "--help"], ["show-config", "--help"], ["k8s", "values"], ["--version"]],
                         ids=" ".join)
def test_commands_that_need_no_torch_do_not_import_it(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PYTHONPATH}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result["code"] in (0, None), done.stdout + done.stderr
    assert "torch" not in result["heavy"], f"dtrain {' '.join(args)} imported {result['heavy']}"
    assert done.stdout.strip()


def test_keys_still_lists_the_registry_names_without_torch() -> None:
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PYTHONPATH}
    done = subprocess.run([sys.executable, "-c", PROBE, "keys", "data"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    (loader,) = [line for line in done.stdout.splitlines() if line.startswith("data.loader ")]
    assert "torch | synthetic | gpu | dali | ffcv | auto" in loader
