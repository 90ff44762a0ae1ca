"""deploy/kuberay/networkpolicy.yaml selects every Ray pod and lets in only what it should.

Ray pods (with the labels KubeRay gives them, tests/deploy/_kuberay_pods.py)
reach each other on any port; other pods of the namespace reach the job API
(8265) only; nothing from other namespaces or from outside the cluster gets
in. The policy is evaluated here with the NetworkPolicy rules (a pod selected
by an Ingress policy takes only what some rule allows; a peer with only a
podSelector means this namespace; no `from` means every source); each check
is also run on a broken policy to show it catches it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy._deploy_files import manifests
from tests.deploy._kuberay_pods import RayPod, ray_pods

JOB_API_PORT = 8265
RAY_ONLY_PORTS = (6379, 10001, 8080, 52365, 20000)  # GCS, client, metrics, agent, a worker port
NAMED_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
POLICIES = [d for _, d in manifests("NetworkPolicy")]
PODS: list[RayPod] = [pod for path, doc in manifests() for pod in ray_pods(path.name, doc)]
RAY_NODES = [pod for pod in PODS if pod.ray_node]


@dataclass(frozen=True)
class Source:
    """Where a connection comes from: a pod's labels and whether it is in the policy's namespace."""

    labels: dict[str, str]
    same_namespace: bool = True
    is_pod: bool = True


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches the labels ({} matches everything)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _port_matches(rule: dict[str, Any], port: int) -> bool:
    if not rule.get("ports"):
        return True
    for p in rule["ports"]:
        if "port" not in p:  # every port of that protocol
            return True
        first = NAMED_PORTS.get(p["port"], p["port"])
        if first <= port <= p.get("endPort", first):
            return True
    return False


def _peer_matches(peer: dict[str, Any], source: Source) -> bool:
    if "ipBlock" in peer:
        return True  # an address range: treat it as letting in what it may hold, pods or not
    if not source.is_pod:
        return False
    if "namespaceSelector" in peer:  # namespaces by labels not known here: assume it may be any
        return selects(peer.get("podSelector") or {}, source.labels)
    return source.same_namespace and selects(peer.get("podSelector") or {}, source.labels)


def allowed(policies: list[dict[str, Any]], target: dict[str, str], source: Source, port: int) -> bool:
    """Whether the policies let the source connect to the target pod (its labels) on the TCP port."""
    ingress = [
        p for p in policies if selects(p["spec"]["podSelector"], target) and "Ingress" in _types(p["spec"])
    ]
    if not ingress:
        return True  # no policy isolates the pod
    for policy in ingress:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if _port_matches(rule, port) and (
                not peers or any(_peer_matches(peer, source) for peer in peers)
            ):
                return True
    return False


def _types(spec: dict[str, Any]) -> list[str]:
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def policy_problems(policies: list[dict[str, Any]], pods: list[RayPod]) -> list[str]:
    """Every Ray pod the policies leave open, or cut off from what it needs."""
    problems = []
    nodes = [pod for pod in pods if pod.ray_node]
    others = [Source({}), Source({"app": "something-else"})] + [
        Source(pod.labels) for pod in pods if not pod.ray_node
    ]
    for target in nodes:
        if not any(
            selects(p["spec"]["podSelector"], target.labels) and "Ingress" in _types(p["spec"])
            for p in policies
        ):
            problems.append(f"{target.where}: no NetworkPolicy selects it")
        for peer in nodes:
            for port in (JOB_API_PORT, *RAY_ONLY_PORTS):
                if not allowed(policies, target.labels, Source(peer.labels), port):
                    problems.append(f"{target.where}: {peer.where} cannot reach port {port}")
        for source in others:
            if not allowed(policies, target.labels, source, JOB_API_PORT):
                problems.append(
                    f"{target.where}: a pod of the namespace {source.labels} cannot reach the job API"
                )
            problems += [
                f"{target.where}: a pod of the namespace {source.labels} reaches port {port}"
                for port in RAY_ONLY_PORTS
                if allowed(policies, target.labels, source, port)
            ]
        for source in (Source(target.labels, same_namespace=False), Source({}, is_pod=False)):
            problems += [
                f"{target.where}: {'another namespace' if source.is_pod else 'outside the cluster'} reaches {port}"
                for port in (JOB_API_PORT, *RAY_ONLY_PORTS)
                if allowed(policies, target.labels, source, port)
            ]
    return problems


def test_there_is_one_ingress_policy_for_the_ray_pods():
    assert len(POLICIES) == 1
    assert POLICIES[0]["apiVersion"] == "networking.k8s.io/v1"
    assert _types(POLICIES[0]["spec"]) == ["Ingress"]


def test_the_policy_selects_every_ray_pod_of_every_manifest():
    assert {pod.where.split(":")[0] for pod in RAY_NODES} == {
        "raycluster.yaml",
        "rayjob-detect.yaml",
        "rayjob-train.yaml",
    }
    assert len(RAY_NODES) == 9  # a head and two worker groups each
    for pod in RAY_NODES:
        assert selects(POLICIES[0]["spec"]["podSelector"], pod.labels), pod.where


def test_the_policy_keeps_everything_else_out():
    assert policy_problems(POLICIES, PODS) == []


def test_the_submitter_is_not_a_ray_pod_but_reaches_the_job_api():
    submitters = [pod for pod in PODS if not pod.ray_node]
    assert len(submitters) == 2
    head = RAY_NODES[0].labels
    for pod in submitters:
        assert not selects(POLICIES[0]["spec"]["podSelector"], pod.labels)
        assert allowed(POLICIES, head, Source(pod.labels), JOB_API_PORT)
        assert not allowed(POLICIES, head, Source(pod.labels), 6379)


def _rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return policy["spec"]["ingress"]


BREAKAGES = {
    "none": lambda p: p.clear(),
    "selects-nothing": lambda p: p[0]["spec"]["podSelector"]["matchLabels"].update(app="x"),
    "egress-only": lambda p: p[0]["spec"].update(policyTypes=["Egress"]),
    "open-to-all": lambda p: _rules(p[0]).append({}),
    "all-namespaces": lambda p: _rules(p[0])[1]["from"].append({"namespaceSelector": {}}),
    "ip-block": lambda p: _rules(p[0])[1]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
    "job-api-all-ports": lambda p: _rules(p[0])[1].pop("ports"),
    "job-api-from-anywhere": lambda p: _rules(p[0])[1].pop("from"),
    "ray-pods-cut-off": lambda p: _rules(p[0]).pop(0),
    "no-job-api": lambda p: _rules(p[0]).pop(1),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_the_policy_check_catches(breakage):
    policies = copy.deepcopy(POLICIES)
    breakage(policies)
    assert policy_problems(policies, PODS)
