"""`pip install dtrain` (a wheel, not editable) works outside the repository: recipes, launch files
and Kubernetes templates come with it, the data-prep tool is `dtrain_prep` (no bare top-level
`data_prep` in site-packages), and a short training run finishes.

The wheel is built without network (--no-build-isolation) and installed without dependencies into
a fresh venv whose only view of the dependencies (torch, mlflow, ...) is a .pth line pointing at
this interpreter's site-packages; every command runs from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    # Nothing of the checkout on the path (PYTHONPATH would show pip its dtrain.egg-info as installed).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DTRAIN_CONFIGS", "DTRAIN_HOME", "MLFLOW_TRACKING_URI")}
    env["OMP_NUM_THREADS"] = "1"
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    # Built from the checkout's files as git sees them (tracked and untracked, not ignored), as a
    # fresh clone would: setuptools' build/ in a working checkout keeps modules deleted since.
    source = base / "source"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next(dist.glob("dtrain-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=300, env=env, cwd=base)
    assert install.returncode == 0, install.stdout + install.stderr
    # Then the dependencies: a plain path line, so that site's .pth files (an editable dtrain) stay
    # inactive (added after the install, so pip never sees another dtrain there).
    Path(purelib, "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    workdir = base / "elsewhere"
    workdir.mkdir()
    return {"bin": env_dir / "bin", "purelib": Path(purelib), "cwd": workdir, "env": env}


def run(installed: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["bin"] / args[0]), *args[1:]], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_installs_dtrain_prep_and_no_bare_data_prep(installed) -> None:
    assert (installed["purelib"] / "dtrain_prep" / "cli.py").is_file()
    assert (installed["purelib"] / "dtrain_prep" / "sources" / "imagenet.py").is_file()  # subpackages too
    assert not (installed["purelib"] / "data_prep").exists()
    probe = run(installed, "python", "-c",
                "import sys, dtrain_prep.cli, dtrain_prep.layout\n"
                "assert not any(m.split('.')[0] == 'dtrain' for m in sys.modules), 'imported dtrain'\n"
                "import dtrain; print(dtrain.__file__)")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(installed["purelib"]))  # not the checkout's
    assert run(installed, "python", "-c", "import data_prep").returncode != 0


# show-config and k8s render in one process of the installed dtrain (each process start costs
# seconds of imports); `dtrain recipes` goes through the console script.
IN_PROCESS = """
import json
from click.testing import CliRunner
from dtrain.cli import cli
out = {}
for name, args in (("show", ["show-config", "resnet50", "optim.lr=1e-3"]),
                   ("k8s", ["k8s", "render", "--set", "image=registry.example/dtrain:1", "--out", "k8s"]),
                   ("worked", ["k8s", "render", "--values", "resnet200-preact-4node", "--out", "k8s-worked"]),
                   ("chart", ["k8s", "chart"])):
    result = CliRunner().invoke(cli, args)
    out[name] = [result.exit_code, result.output]
from dtrain.provenance import system_tags
out["tags"] = system_tags(1, ["cpu"])
print(json.dumps(out))
"""


def test_recipes_show_config_and_k8s_render_work_outside_the_checkout(installed) -> None:
    recipes = run(installed, "dtrain", "recipes")
    assert recipes.returncode == 0, recipes.stderr
    listed = {line.split()[0] for line in recipes.stdout.splitlines()[1:]}
    shipped = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    assert listed == shipped

    commands = run(installed, "python", "-c", IN_PROCESS)
    assert commands.returncode == 0, commands.stderr
    results = json.loads(commands.stdout.splitlines()[-1])
    (show_code, shown), (k8s_code, rendered) = results["show"], results["k8s"]
    assert show_code == 0 and "name: resnet50" in shown and "lr: 0.001" in shown, shown
    assert k8s_code == 0, rendered
    manifest = (installed["cwd"] / "k8s" / "pytorchjob.yaml").read_text()
    assert "registry.example/dtrain:1" in manifest
    # The README's worked example by the name of its bundled values file; the chart helm installs.
    assert results["worked"][0] == 0, results["worked"][1]
    assert "world size 32" in results["worked"][1]
    chart_code, chart = results["chart"]
    assert chart_code == 0 and chart.strip().startswith(str(installed["purelib"])), chart
    assert (Path(chart.strip()) / "Chart.yaml").is_file()

    # A run of the wheel names its code without git: the version, and the digest of this very tree.
    import dtrain
    from dtrain.provenance import source_digest

    tags = results["tags"]
    assert "git.commit" not in tags and tags["version.dtrain"] == dtrain.__version__
    assert tags["source.digest"] == source_digest()

    launch = run(installed, "python", "-m", "dtrain.resources")
    assert launch.returncode == 0 and str(installed["purelib"]) in launch.stdout
    assert (installed["purelib"] / "dtrain" / "_resources" / "launch" / "torchrun.sh").stat().st_mode & 0o111


@pytest.mark.slow  # ~15 s: a 2-step run of a small net from the installed wheel
def test_a_two_step_synthetic_training_run_finishes_from_the_wheel(installed) -> None:
    trained = run(installed, "dtrain", "train", "digits_resnet20", "data.loader=synthetic",
                  "data.synthetic_samples=32", "data.workers=0", "optim.batch_size=8", "eval.batch_size=16",
                  "schedule.max_iters=2", "tracking.backend=jsonl", "run_dir=run")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "finished: finished at step 2" in trained.stdout
    assert (installed["cwd"] / "run" / "checkpoints" / "ckpt-000000002.pt").is_file()
