"""What a fresh interpreter loads: importing a light module pulls in nothing heavy or unrelated
(the static import rules are tests/unit/test_import_boundaries.py)."""

from __future__ import annotations

import subprocess
import sys

from processes import checkout_env

# dtrain.suggest is standard-library only: the one did-you-mean helper, shared with the models.
MODELS_ALLOWED = ("dtrain.models", "dtrain.suggest")


def _loaded_after(statement: str, *roots: str) -> list[str]:
    """The modules under `roots` that `statement` loads in a new interpreter."""
    code = f"import sys\n{statement}\nprint('\\n'.join(m for m in sys.modules if m.split('.')[0] in {roots!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=checkout_env())
    return done.stdout.split()


def test_importing_models_loads_no_other_dtrain_module() -> None:
    loaded = _loaded_after("import dtrain.models", "dtrain", "dtrain_prep")
    assert "dtrain.models" in loaded
    allowed = [m for m in loaded if m == "dtrain" or any(m == a or m.startswith(a + ".") for a in MODELS_ALLOWED)]
    assert loaded == allowed


def test_importing_tracking_does_not_import_mlflow() -> None:
    assert _loaded_after("import dtrain.tracking", "mlflow") == []
