"""Nothing in the deployment publishes Ray's job API, GCS or client port beyond localhost, or turns auth off.

The job API runs whatever code it is sent (ShadowRay, CVE-2023-48022): it
must be reachable only on a loopback address, and every Ray node must demand
the token.  Each check is also run on a broken copy to show it catches it.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

import pytest

from tests.deploy._deploy_files import COMPOSE, DOCKERFILE, KUBERAY, RAY_PORTS, ROOT, compose, manifests

DEPLOY_TEXTS = [COMPOSE, DOCKERFILE, ROOT / ".env.example", *sorted(KUBERAY.glob("*"))]
RAY_NODES = ("ray-head", "ray-worker", "ray-worker-gpu")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "[::1]", "localhost"}


def _published(port: Any) -> tuple[str | None, int | None]:
    """(host ip or None for all interfaces, container port) of a compose `ports` entry."""
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip"), int(port["target"])
    parts = str(port).split("/")[0].rsplit(":", 2)
    host_ip = parts[0] if len(parts) == 3 else None
    return host_ip, int(parts[-1].split("-")[0])


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """Every way the compose file exposes Ray or disables its auth."""
    problems = []
    for name, svc in doc["services"].items():
        for port in svc.get("ports", []):
            host_ip, target = _published(port)
            if target in RAY_PORTS and host_ip not in LOOPBACK_HOSTS:
                problems.append(f"{name}: publishes {target} on {host_ip or 'all interfaces'}")
            if host_ip not in LOOPBACK_HOSTS:
                problems.append(f"{name}: publishes {port} beyond localhost")
        if svc.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host exposes every port it binds")
        env = svc.get("environment", {})
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        if name in RAY_NODES:
            if env.get("RAY_AUTH_MODE") != "token" or not env.get("RAY_AUTH_TOKEN"):
                problems.append(f"{name}: Ray node without RAY_AUTH_MODE=token and a RAY_AUTH_TOKEN")
        if str(env.get("RAY_AUTH_MODE", "token")).lower() != "token":
            problems.append(f"{name}: RAY_AUTH_MODE={env['RAY_AUTH_MODE']}")
    return problems


def kube_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every way the manifests expose Ray beyond the cluster, turn auth off or inline a credential."""
    problems = []
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] in ("Service", "Ingress"):
            problems.append(f"{name}: a {doc['kind']} next to the cluster; use kubectl port-forward")
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        cluster = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        if cluster.get("authOptions", {}).get("mode") != "token":
            problems.append(f"{name}: authOptions.mode is not token")
        head = cluster["headGroupSpec"]
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"{name}: head serviceType {head['serviceType']}")
        if head.get("enableIngress"):
            problems.append(f"{name}: enableIngress")
        pods = [head["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
        for pod in pods:
            if pod.get("hostNetwork"):
                problems.append(f"{name}: hostNetwork")
            for c in pod["containers"] + pod.get("initContainers", []):
                problems += [
                    f"{name}: hostPort {p['hostPort']}" for p in c.get("ports", []) if "hostPort" in p
                ]
                for e in c.get("env", []):
                    if e["name"] == "RAY_AUTH_MODE" and e.get("value") != "token":
                        problems.append(f"{name}: RAY_AUTH_MODE={e.get('value')}")
                    if re.search(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", e["name"]) and "value" in e:
                        problems.append(f"{name}: {e['name']} inline; use valueFrom.secretKeyRef")
    return problems


def test_compose_publishes_nothing_beyond_localhost_and_keeps_auth():
    assert compose_problems(compose()) == []
    published = [p for svc in compose()["services"].values() for p in svc.get("ports", [])]
    assert "127.0.0.1:8265:8265" in published


def test_manifests_stay_in_cluster_and_keep_auth():
    assert kube_problems([d for _, d in manifests()]) == []


def test_no_deploy_file_disables_auth_or_binds_ray_to_all_interfaces():
    """A plain-text scan too, so a port mapping in any form or file is caught."""
    mapping = re.compile(r"""["'\s-]((?:[\d.]+:)?)(6379|8265|10001):\d+""")
    for path in DEPLOY_TEXTS:
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_MODE\W{0,3}disabled", text), path
        assert all(host == "127.0.0.1:" for host, _ in mapping.findall(text)), path
        assert "--dashboard-host=0.0.0.0" not in text or "127.0.0.1:8265:8265" in text, path


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["services"]["ray-head"].update(ports=["8265:8265"]),
        lambda d: d["services"]["ray-head"].update(ports=["0.0.0.0:8265:8265"]),
        lambda d: d["services"]["ray-head"].update(ports=[{"target": 10001, "published": 10001}]),
        lambda d: d["services"]["ray-head"].update(ports=["6379:6379"]),
        lambda d: d["services"]["minio"].update(ports=["9000:9000"]),
        lambda d: d["services"]["ray-worker"].update(network_mode="host"),
        lambda d: d["services"]["ray-worker"]["environment"].update(RAY_AUTH_MODE="disabled"),
        lambda d: d["services"]["ray-head"]["environment"].pop("RAY_AUTH_TOKEN"),
    ],
    ids=[
        "8265-all",
        "8265-0.0.0.0",
        "10001-long-syntax",
        "6379",
        "minio-all",
        "host-network",
        "auth-off",
        "no-token",
    ],
)
def test_compose_check_catches(breakage):
    doc = copy.deepcopy(compose())
    breakage(doc)
    assert compose_problems(doc)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["spec"].update(authOptions={"mode": "disabled"}),
        lambda c: c["spec"]["headGroupSpec"].update(serviceType="LoadBalancer"),
        lambda c: c["spec"]["headGroupSpec"].update(enableIngress=True),
        lambda c: c["spec"]["headGroupSpec"]["template"]["spec"].update(hostNetwork=True),
        lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][1].update(
            hostPort=8265
        ),
        lambda c: c["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "AWS_SECRET_ACCESS_KEY", "value": "inline"}
        ),
    ],
    ids=["auth-off", "loadbalancer", "ingress", "host-network", "host-port", "inline-secret"],
)
def test_kube_check_catches(breakage):
    cluster = copy.deepcopy(next(d for _, d in manifests("RayCluster")))
    breakage(cluster)
    assert kube_problems([cluster])


def test_loopback_hosts_are_loopback():
    assert all(ipaddress.ip_address(h.strip("[]")).is_loopback for h in LOOPBACK_HOSTS - {"localhost"})
