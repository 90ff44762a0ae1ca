"""deploy/kuberay manifests validate against KubeRay's CRD schemas and agree with the project."""

from __future__ import annotations

from typing import Any

import click
import jsonschema
import pytest
import ray

from jobs.submit import JOB_MODULES
from tests.deploy._deploy_files import entrypoint_argv, manifests, schema

CRD_SCHEMAS = {"RayCluster": "ray.io_rayclusters.v1.json", "RayJob": "ray.io_rayjobs.v1.json"}
RAY_DOCS = [(p, d) for p, d in manifests() if d["apiVersion"] == "ray.io/v1"]


def strict(node: Any) -> Any:
    """The schema with unknown fields rejected, as `kubectl apply --validate=strict` does."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: ({n: strict(s) for n, s in v.items()} if k == "properties" else strict(v)) for k, v in node.items()
    }
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_VALIDATORS = {kind: jsonschema.Draft7Validator(strict(schema(name))) for kind, name in CRD_SCHEMAS.items()}


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, RayCluster spec) of the RayCluster and of every RayJob's own cluster."""
    out = []
    for path, doc in RAY_DOCS:
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        out.append((path.name, spec))
    return out


def pod_specs(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]
    ]


def test_there_are_a_cluster_and_a_job_for_detect_and_train():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in RAY_DOCS)
    assert kinds == [
        ("RayCluster", "aerialdet"),
        ("RayJob", "aerialdet-detect"),
        ("RayJob", "aerialdet-train"),
    ]


@pytest.mark.parametrize("path,doc", RAY_DOCS, ids=[p.name for p, _ in RAY_DOCS])
def test_manifest_validates_against_the_crd_schema(path, doc):
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _VALIDATORS[doc["kind"]].iter_errors(doc)]
    assert not errors, errors[:5]


def test_the_strict_schema_catches_a_misspelt_field():
    _, doc = next((p, d) for p, d in RAY_DOCS if d["kind"] == "RayCluster")
    bad = {**doc, "spec": {**doc["spec"], "enableIntreeAutoscaling": True}}
    assert list(_VALIDATORS["RayCluster"].iter_errors(bad))


@pytest.mark.parametrize("name,cluster", cluster_specs(), ids=[n for n, _ in cluster_specs()])
def test_cluster_autoscales_cpu_and_gpu_groups_at_the_projects_ray(name, cluster):
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups)
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"].endswith("-gpu")
    cpu = groups["cpu"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and cpu["image"].endswith("-cpu")


@pytest.mark.parametrize("name,cluster", cluster_specs(), ids=[n for n, _ in cluster_specs()])
def test_nodes_read_s3_with_secret_credentials(name, cluster):
    for pod in pod_specs(cluster):
        for container in pod["containers"] + pod.get("initContainers", []):
            env = {e["name"]: e for e in container["env"]}
            assert env["AWS_ENDPOINT_URL"]["value"].startswith("http")
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["name"], key
            assert {"name": "outputs", "mountPath": "/outputs"} in container["volumeMounts"]


@pytest.mark.parametrize("job", sorted(JOB_MODULES))
def test_rayjob_entrypoint_runs_a_job_module_with_its_real_flags(job):
    from jobs.cli import _register_optional, cli

    _register_optional()
    doc = next(d for _, d in RAY_DOCS if d["metadata"]["name"] == f"aerialdet-{job}")
    argv = entrypoint_argv(doc["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", JOB_MODULES[job]]
    command: click.Command = cli.commands[job]
    known = {o for p in command.params for o in (*getattr(p, "opts", []), *getattr(p, "secondary_opts", []))}
    assert {a for a in argv[3:] if a.startswith("--")} <= known
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    if job == "detect":
        assert argv[3].startswith("s3://")
    else:  # train reads labels from a path: the head's init container copies them from S3 first
        init = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["initContainers"][0]
        assert init["args"][:2] == ["s3", "sync"] and init["args"][-1].rstrip("/") in argv[3]
