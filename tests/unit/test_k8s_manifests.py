"""`dtrain k8s render`: every values file renders into manifests that validate offline
(kubernetes-validate for core kinds, the vendored PyTorchJob schema for the Kubeflow CRD), and the
manifests wire up what a cluster run relies on (rendezvous, shared volumes, /dev/shm, GPUs, MLflow)."""

from __future__ import annotations

import copy
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from dtrain.commands import k8s as k8s_cmd

pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (pip install 'dtrain[dev]')")

VALUES_DIR = Path(k8s_cmd.k8s_dir()) / "values"
VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
WORKED_EXAMPLE = VALUES_DIR / "resnet200-preact-4node.yaml"


def rendered_documents(values_file: Path | None, *sets: str) -> dict[str, list[dict]]:
    values = k8s_cmd.load_values(values_file, sets)
    return {name: k8s_cmd.parse_documents(text, name) for name, text in k8s_cmd.render(values, values_file).items()}


def by_kind(docs: dict[str, list[dict]], file: str, kind: str) -> dict:
    (doc,) = [d for d in docs[file] if d["kind"] == kind]
    return doc


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_there_is_a_worked_example_and_more_than_one_size() -> None:
    assert WORKED_EXAMPLE in VALUES_FILES and len(VALUES_FILES) >= 2


@pytest.mark.parametrize("job_kind", k8s_cmd.JOB_KINDS)
@pytest.mark.parametrize("values_file", [None, *VALUES_FILES], ids=lambda p: p.name if p else "defaults")
def test_every_values_file_renders_valid_manifests(values_file: Path | None, job_kind: str) -> None:
    values = k8s_cmd.load_values(values_file, (f"jobKind={job_kind}",))
    rendered = k8s_cmd.render(values, values_file)
    k8s_cmd.check_recipe(values, rendered)  # the recipe + the job's overrides load, the batch divides
    docs = {name: k8s_cmd.parse_documents(text, name) for name, text in rendered.items()}
    job_file = "pytorchjob.yaml" if job_kind == "PyTorchJob" else "indexed-job.yaml"
    assert {"storage.yaml", job_file} <= set(docs) and len({"pytorchjob.yaml", "indexed-job.yaml"} & set(docs)) == 1
    kinds = sorted(d["kind"] for file_docs in docs.values() for d in file_docs)
    assert ("PyTorchJob" in kinds) == (job_kind == "PyTorchJob") and ("Job" in kinds) == (job_kind == "IndexedJob")
    problems = k8s_cmd.validate_documents([d for file_docs in docs.values() for d in file_docs])
    assert problems == []


def test_worked_example_pytorchjob_is_4_nodes_of_8_gpus_with_c10d_rendezvous_on_the_master() -> None:
    docs = rendered_documents(WORKED_EXAMPLE)
    job = by_kind(docs, "pytorchjob.yaml", "PyTorchJob")
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    assert spec["nprocPerNode"] == "8"
    elastic = spec["elasticPolicy"]
    assert elastic["rdzvBackend"] == "c10d" and elastic["rdzvHost"] == "resnet200-preact-master-0"
    assert (elastic["minReplicas"], elastic["maxReplicas"]) == (4, 4)
    for role in ("Master", "Worker"):
        pod = replicas[role]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"  # the operator injects its variables into this one
        assert container["command"] == ["/opt/dtrain/launch/torchrun.sh"]
        assert container["args"][0] == "resnet200_preact"
        assert "run_dir=/runs/resnet200-preact" in container["args"]  # shared by nodes and restarts
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert {"name": "pytorchjob-port", "containerPort": elastic["rdzvPort"]} in container["ports"]
        assert env_of(container)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "imagenet-prepared"
        assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == "dtrain-runs"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"data": "/data", "runs": "/runs", "dshm": "/dev/shm"}
        # SIGTERM -> checkpoint: the pod must outlive torchrun's shutdown timeout.
        assert pod["terminationGracePeriodSeconds"] > int(env_of(container)["SHUTDOWN_TIMEOUT"])


def test_indexed_job_meets_at_pod_0_through_the_headless_service() -> None:
    docs = rendered_documents(WORKED_EXAMPLE, "jobKind=IndexedJob")
    service = by_kind(docs, "indexed-job.yaml", "Service")
    job = by_kind(docs, "indexed-job.yaml", "Job")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    pod = spec["template"]
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    env = env_of(pod["spec"]["containers"][0])
    # Pods of an Indexed Job are named JOB-INDEX; with the subdomain, JOB-0.SERVICE resolves to pod 0.
    assert env["RDZV_ENDPOINT"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}:29400"
    assert env["NNODES"] == "4" and env["NPROC_PER_NODE"] == "8"


def test_mlflow_server_deployment_service_and_volume_fit_together() -> None:
    docs = rendered_documents(WORKED_EXAMPLE)
    deployment = by_kind(docs, "mlflow.yaml", "Deployment")
    service = by_kind(docs, "mlflow.yaml", "Service")
    claim = by_kind(docs, "mlflow.yaml", "PersistentVolumeClaim")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[0] == "mlflow-server"  # the image's entrypoint is `dtrain`
    assert args[args.index("--backend-store-uri") + 1] == "sqlite:////mlflow/mlflow.db"
    assert "mlflow:*" in args[args.index("--allowed-hosts") + 1].split(",")  # Host header of the pods' URI
    assert service["metadata"]["name"] == "mlflow" and service["spec"]["ports"][0]["port"] == 5000
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_one_node_pytorchjob_has_no_elastic_policy_and_no_workers() -> None:
    docs = rendered_documents(VALUES_DIR / "resnet50-1node.yaml")
    spec = by_kind(docs, "pytorchjob.yaml", "PyTorchJob")["spec"]
    assert "elasticPolicy" not in spec and list(spec["pytorchReplicaSpecs"]) == ["Master"]


def test_set_overrides_values_and_can_drop_mlflow() -> None:
    docs = rendered_documents(WORKED_EXAMPLE, "nodes=2", "mlflow.enabled=false", "overrides.optim.lr=0.05")
    assert "mlflow.yaml" not in docs
    spec = by_kind(docs, "pytorchjob.yaml", "PyTorchJob")["spec"]
    container = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert "optim.lr=0.05" in container["args"] and "MLFLOW_TRACKING_URI" not in env_of(container)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["nodez=3"], "unknown value nodez (did you mean nodes?)"),
        (["imagePullSecret=[]"], "unknown value imagePullSecret (did you mean imagePullSecrets?)"),
        (["overrides.data={root: /data}"], "overrides.data is a mapping; write config overrides as dotted keys"),
        (["jobKind=MPIJob"], "jobKind='MPIJob' must be one of PyTorchJob, IndexedJob"),
        (["ttlSecondsAfterFinished=-1"], "ttlSecondsAfterFinished=-1 must be a non-negative integer"),
        (["name=ResNet_200"], "DNS label"),
        (["minNodes=5"], "minNodes=5 must be between 1 and nodes=4"),
        (["nprocPerNode=16"], "one training process per GPU"),
    ],
)
def test_bad_values_are_one_line_errors(sets: list[str], message: str) -> None:
    with pytest.raises(click.UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        k8s_cmd.load_values(WORKED_EXAMPLE, tuple(sets))


def test_recipe_check_refuses_a_world_size_the_batch_does_not_divide() -> None:
    values = k8s_cmd.load_values(WORKED_EXAMPLE, ("nodes=3",))  # 24 processes, batch 256
    with pytest.raises(click.UsageError, match="does not divide by world size 24"):
        k8s_cmd.check_recipe(values, k8s_cmd.render(values))


def _pytorchjob() -> dict:
    return copy.deepcopy(by_kind(rendered_documents(WORKED_EXAMPLE), "pytorchjob.yaml", "PyTorchJob"))


def test_validation_catches_pytorchjob_mistakes() -> None:
    misspelt = _pytorchjob()
    misspelt["spec"]["nprocPerNodes"] = misspelt["spec"].pop("nprocPerNode")
    two_masters = _pytorchjob()
    two_masters["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    renamed = _pytorchjob()
    renamed["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "train"
    bad_pod = _pytorchjob()  # caught by the core PodTemplateSpec check, not the CRD schema
    bad_pod["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"][2]["emptyDir"]["medum"] = "x"
    for broken in (misspelt, two_masters, renamed, bad_pod):
        assert k8s_cmd.validate_documents([broken]), broken["spec"]


def test_validation_catches_core_kind_mistakes() -> None:
    job = copy.deepcopy(by_kind(rendered_documents(WORKED_EXAMPLE, "jobKind=IndexedJob"), "indexed-job.yaml", "Job"))
    job["spec"]["completions"] = "four"
    (problem,) = k8s_cmd.validate_documents([job])
    assert "Job/resnet200-preact" in problem and "completions" in problem


def test_cli_render_writes_files_that_cli_validate_accepts(tmp_path: Path) -> None:
    from dtrain.cli import cli

    runner = CliRunner()
    out = tmp_path / "manifests"
    result = runner.invoke(cli, ["k8s", "render", "--values", str(WORKED_EXAMPLE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["mlflow.yaml", "pytorchjob.yaml", "storage.yaml"]
    assert "world size 32" in result.output
    result = runner.invoke(cli, ["k8s", "validate", str(out)])
    assert result.exit_code == 0, result.output
    (out / "broken.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service",
                                                     "metadata": {"name": "x"}, "spec": {"ports": "many"}}))
    result = runner.invoke(cli, ["k8s", "validate", str(out)])
    assert result.exit_code == 1 and "Service/x" in result.output
