"""The pods KubeRay makes from the manifests: what it adds to the pod templates, and the labels it sets.

A manifest's pod templates are not the whole pods: KubeRay (>= 1.6,
ray-operator/controllers/ray/common/pod.go and rayjob_controller.go) adds

- to the head pod, with in-tree autoscaling on, an `autoscaler` container
  whose securityContext is `autoscalerOptions.securityContext` (none
  otherwise), and emptyDir volumes for /dev/shm and the logs;
- to each worker pod, a `wait-gcs-ready` init container with a copy of the
  Ray container's securityContext, and an emptyDir for /dev/shm;
- for a RayJob in K8sJobMode (the default), a submitter pod: the
  `submitterPodTemplate` if given, else a default one with the head's image
  and no securityContext;
- to every Ray pod, the labels of `labelPod` (ray.io/is-ray-node: "yes",
  ray.io/cluster, ray.io/node-type, ray.io/group, app.kubernetes.io/name:
  kuberay, app.kubernetes.io/created-by), then the template's own labels on
  top, except ray.io/node-type, ray.io/group and ray.io/cluster.

The deploy tests check these pods, not just the templates, so that a sidecar
KubeRay injects cannot fail Pod Security or slip past the NetworkPolicy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

_NOT_OVERRIDABLE = {"ray.io/node-type", "ray.io/group", "ray.io/cluster"}


@dataclass(frozen=True)
class RayPod:
    """One kind of pod a Ray manifest makes.

    Attributes:
        where: manifest file name and the pod's place in it, for messages.
        labels: the labels KubeRay gives the pod.
        ray_node: whether it is a Ray node (head or worker), not a job submitter.
    """

    where: str
    labels: dict[str, str]
    ray_node: bool


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The RayCluster spec of a RayCluster, or a RayJob's own cluster; None for other kinds."""
    if doc.get("kind") == "RayCluster":
        return doc["spec"]
    if doc.get("kind") == "RayJob":
        return doc["spec"].get("rayClusterSpec")
    return None


def kuberay_labels(template: dict[str, Any], cluster_name: str, node_type: str, group: str) -> dict[str, str]:
    """The labels of a Ray pod, as KubeRay's labelPod sets them."""
    labels = {
        "ray.io/is-ray-node": "yes",
        "ray.io/cluster": cluster_name,
        "ray.io/node-type": node_type,
        "ray.io/group": group,
        "ray.io/identifier": f"{cluster_name}-{node_type}",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    own = template.get("metadata", {}).get("labels", {}) or {}
    labels.update({k: v for k, v in own.items() if k not in _NOT_OVERRIDABLE})
    return labels


def _add_volume(pod: dict[str, Any], name: str) -> None:
    volumes = pod.setdefault("volumes", [])
    if all(v["name"] != name for v in volumes):
        volumes.append({"name": name, "emptyDir": {}})


def rendered(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of the manifest with the containers, volumes and pods KubeRay adds (module docstring)."""
    doc = copy.deepcopy(doc)
    cluster = cluster_spec(doc)
    if cluster is None:
        return doc
    head = cluster["headGroupSpec"]["template"]
    head_pod = head["spec"]
    _add_volume(head_pod, "shared-mem")
    if cluster.get("enableInTreeAutoscaling"):
        autoscaler: dict[str, Any] = {"name": "autoscaler", "image": head_pod["containers"][0]["image"]}
        options = cluster.get("autoscalerOptions", {}) or {}
        if options.get("securityContext") is not None:
            autoscaler["securityContext"] = copy.deepcopy(options["securityContext"])
        head_pod["containers"].append(autoscaler)
        _add_volume(head_pod, "ray-logs")
    for group in cluster.get("workerGroupSpecs", []):
        pod = group["template"]["spec"]
        wait: dict[str, Any] = {"name": "wait-gcs-ready", "image": pod["containers"][0]["image"]}
        if pod["containers"][0].get("securityContext") is not None:
            wait["securityContext"] = copy.deepcopy(pod["containers"][0]["securityContext"])
        pod.setdefault("initContainers", []).append(wait)
        _add_volume(pod, "shared-mem")
    spec = doc["spec"]
    if doc["kind"] == "RayJob" and spec.get("submissionMode", "K8sJobMode") == "K8sJobMode":
        spec.setdefault(
            "submitterPodTemplate",
            {
                "spec": {
                    "containers": [
                        {"name": "ray-job-submitter", "image": head_pod["containers"][0]["image"]}
                    ],
                    "restartPolicy": "Never",
                }
            },
        )
    return doc


def ray_pods(path_name: str, doc: dict[str, Any]) -> list[RayPod]:
    """Every kind of pod a RayCluster or RayJob makes, with its labels ([] for other kinds)."""
    cluster = cluster_spec(doc)
    if cluster is None:
        return []
    name = doc["metadata"]["name"] if doc["kind"] == "RayCluster" else f"{doc['metadata']['name']}-x7k2q"
    head = cluster["headGroupSpec"]["template"]
    pods = [RayPod(f"{path_name}: head", kuberay_labels(head, name, "head", "headgroup"), True)]
    for group in cluster.get("workerGroupSpecs", []):
        labels = kuberay_labels(group["template"], name, "worker", group["groupName"])
        pods.append(RayPod(f"{path_name}: worker group {group['groupName']}", labels, True))
    submitter = rendered(doc)["spec"].get("submitterPodTemplate")
    if submitter is not None:
        labels = dict(submitter.get("metadata", {}).get("labels", {}) or {})
        pods.append(RayPod(f"{path_name}: job submitter", labels, False))
    return pods
