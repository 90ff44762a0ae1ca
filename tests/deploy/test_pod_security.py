"""Every pod the manifests make passes the Kubernetes Pod Security Standards "restricted" profile.

The checks are those of the documented profile
(https://kubernetes.io/docs/concepts/security/pod-security-standards/,
baseline and restricted, as of Kubernetes 1.33), written out here: no PyPI
package implements them offline. Pod specs are found by walking every
manifest generically (any mapping with `containers` is a pod spec), after
adding what KubeRay adds to them (tests/deploy/_kuberay_pods.py): its
autoscaler sidecar, its wait-gcs-ready init container and the RayJob
submitter pod. Each check is also run on a broken pod to show it catches it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy._deploy_files import manifests
from tests.deploy._kuberay_pods import rendered

# restricted: "Volume Types"
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# baseline: "Sysctls"
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
# baseline: "SELinux"
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def pod_specs(
    node: Any, where: str = "", annotations: dict | None = None
) -> Iterator[tuple[str, dict, dict]]:
    """(place, pod spec, the pod's annotations) of every mapping with `containers`, at any depth."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from pod_specs(item, f"{where}[{i}]", annotations)
    elif isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield where, node, annotations or {}
            return
        for key, value in node.items():
            meta = (
                node.get("metadata", {}) if key == "spec" and isinstance(node.get("metadata"), dict) else {}
            )
            yield from pod_specs(value, f"{where}.{key}", meta.get("annotations") or annotations)


def _containers(pod: dict) -> list[dict]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in pod.get(key) or []]


def _shared_context_problems(ctx: dict, who: str) -> list[str]:
    """Checks that apply alike to the pod's and to a container's securityContext."""
    problems = []
    if (ctx.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{who}: windowsOptions.hostProcess")
    selinux = ctx.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES:
        problems.append(f"{who}: seLinuxOptions.type {selinux['type']}")
    if selinux.get("user") or selinux.get("role"):
        problems.append(f"{who}: seLinuxOptions user/role set")
    if (ctx.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in (
        "RuntimeDefault",
        "Localhost",
    ):
        problems.append(f"{who}: appArmorProfile {ctx['appArmorProfile']['type']}")
    if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{who}: seccompProfile Unconfined")
    if ctx.get("runAsNonRoot") is False:
        problems.append(f"{who}: runAsNonRoot false")
    if ctx.get("runAsUser") == 0:
        problems.append(f"{who}: runAsUser 0")
    return problems


def _container_problems(c: dict, pod_ctx: dict) -> list[str]:
    who = f"container {c.get('name')}"
    ctx = c.get("securityContext") or {}
    problems = _shared_context_problems(ctx, who)
    if ctx.get("privileged"):
        problems.append(f"{who}: privileged")
    problems += [f"{who}: hostPort {p['hostPort']}" for p in c.get("ports") or [] if p.get("hostPort")]
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{who}: allowPrivilegeEscalation is not false")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{who}: capabilities do not drop ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        problems.append(f"{who}: capabilities add {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
    if ctx.get("procMount", "Default") != "Default":
        problems.append(f"{who}: procMount {ctx['procMount']}")
    if not pod_ctx.get("runAsNonRoot") and ctx.get("runAsNonRoot") is not True:
        problems.append(f"{who}: runAsNonRoot is not true (nor the pod's)")
    if (pod_ctx.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost") and (
        ctx.get("seccompProfile") or {}
    ).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{who}: no seccompProfile RuntimeDefault or Localhost (nor the pod's)")
    return problems


def restricted_problems(pod: dict, annotations: dict | None = None) -> list[str]:
    """Every way the pod spec fails the Pod Security Standards "restricted" profile (baseline included)."""
    problems = [f"pod: {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    ctx = pod.get("securityContext") or {}
    problems += _shared_context_problems(ctx, "pod")
    problems += [
        f"pod: unsafe sysctl {s['name']}" for s in ctx.get("sysctls") or [] if s["name"] not in SAFE_SYSCTLS
    ]
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds - ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - ALLOWED_VOLUMES)}")
    for key, value in (annotations or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            problems.append(f"annotation {key}: {value}")
    for c in _containers(pod):
        problems += _container_problems(c, ctx)
    return problems


ALL_PODS = [
    (f"{path.name}{where}", pod, annotations)
    for path, doc in manifests()
    for where, pod, annotations in pod_specs(rendered(doc))
]


def test_the_walk_finds_every_pod_kuberay_makes():
    places = {place for place, _, _ in ALL_PODS}
    for name in ("raycluster.yaml", "rayjob-detect.yaml", "rayjob-train.yaml"):
        assert sum(p.startswith(f"{name}") for p in places) == (3 if name == "raycluster.yaml" else 4), name
    assert "rayjob-train.yaml.spec.submitterPodTemplate.spec" in places
    heads = [pod for place, pod, _ in ALL_PODS if "headGroupSpec" in place]
    assert all(c["name"] == "autoscaler" for pod in heads for c in pod["containers"][1:]) and all(
        len(pod["containers"]) == 2 for pod in heads
    )


@pytest.mark.parametrize("place,pod,annotations", ALL_PODS, ids=[p for p, _, _ in ALL_PODS])
def test_every_pod_passes_pod_security_restricted(place, pod, annotations):
    assert restricted_problems(pod, annotations) == [], place


def test_pods_run_as_the_images_ray_user():
    for place, pod, _ in ALL_PODS:
        ctx = pod["securityContext"]
        assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (1000, 100, 100), place
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, place


GOOD_POD = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "c",
            "image": "i",
            "ports": [{"containerPort": 8265}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "x"}}],
}


def _ctx(pod: dict) -> dict:
    return pod["containers"][0]["securityContext"]


BREAKAGES = {
    "privileged": lambda p: _ctx(p).update(privileged=True),
    "host-network": lambda p: p.update(hostNetwork=True),
    "host-pid": lambda p: p.update(hostPID=True),
    "host-ipc": lambda p: p.update(hostIPC=True),
    "host-path": lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "nfs-volume": lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
    "host-port": lambda p: p["containers"][0]["ports"][0].update(hostPort=8265),
    "escalation-unset": lambda p: _ctx(p).pop("allowPrivilegeEscalation"),
    "escalation-true": lambda p: _ctx(p).update(allowPrivilegeEscalation=True),
    "root-allowed": lambda p: p["securityContext"].pop("runAsNonRoot"),
    "container-root-allowed": lambda p: _ctx(p).update(runAsNonRoot=False),
    "uid-0": lambda p: _ctx(p).update(runAsUser=0),
    "pod-uid-0": lambda p: p["securityContext"].update(runAsUser=0),
    "no-seccomp": lambda p: p["securityContext"].pop("seccompProfile"),
    "seccomp-unconfined": lambda p: _ctx(p).update(seccompProfile={"type": "Unconfined"}),
    "caps-not-dropped": lambda p: _ctx(p).pop("capabilities"),
    "caps-add": lambda p: _ctx(p)["capabilities"].update(add=["SYS_ADMIN"]),
    "unsafe-sysctl": lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    "proc-mount": lambda p: _ctx(p).update(procMount="Unmasked"),
    "apparmor-unconfined": lambda p: _ctx(p).update(appArmorProfile={"type": "Unconfined"}),
    "selinux-type": lambda p: p["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
    "host-process": lambda p: _ctx(p).update(windowsOptions={"hostProcess": True}),
    "init-container": lambda p: p.update(initContainers=[{"name": "init", "image": "i"}]),
}


def test_a_restricted_pod_passes():
    assert restricted_problems(GOOD_POD) == []
    # NET_BIND_SERVICE is the one capability restricted allows; seccomp may be set per container instead
    pod = copy.deepcopy(GOOD_POD)
    _ctx(pod)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    _ctx(pod)["seccompProfile"] = pod["securityContext"].pop("seccompProfile")
    assert restricted_problems(pod) == []


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_the_restricted_check_catches(breakage):
    pod = copy.deepcopy(GOOD_POD)
    breakage(pod)
    assert restricted_problems(pod)


def test_the_apparmor_annotation_is_checked_too():
    annotation = {f"{APPARMOR_ANNOTATION}c": "unconfined"}
    assert restricted_problems(GOOD_POD, annotation)
    assert not restricted_problems(GOOD_POD, {f"{APPARMOR_ANNOTATION}c": "runtime/default"})


def test_a_sidecar_kuberay_adds_is_checked():
    """Without autoscalerOptions.securityContext the head pod's autoscaler container fails restricted."""
    path, doc = next((p, d) for p, d in manifests("RayCluster"))
    doc = copy.deepcopy(doc)
    doc["spec"]["autoscalerOptions"].pop("securityContext")
    head = rendered(doc)["spec"]["headGroupSpec"]["template"]["spec"]
    assert any("container autoscaler" in p for p in restricted_problems(head)), path
