"""Paths and loaders shared by the deploy tests (no Docker, no Kubernetes needed)."""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
SCHEMAS = Path(__file__).parent / "schemas"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
RAY_PORTS = {6379, 8265, 10001}


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def manifests(kind: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    docs = [(p, d) for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]
    return [(p, d) for p, d in docs if kind is None or d["kind"] == kind]


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def dockerfile_args() -> dict[str, str]:
    """ARG defaults of the Dockerfile (quotes removed)."""
    args = {}
    for m in re.finditer(r"^ARG\s+(\w+)=(.*)$", DOCKERFILE.read_text(), re.MULTILINE):
        args[m.group(1)] = m.group(2).strip().strip('"')
    return args


def makefile_torch_pins() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.search(r"^TORCH_PINS\s*:?=\s*(.*)$", text, re.MULTILINE).group(1).split())


def entrypoint_argv(entrypoint: str) -> list[str]:
    return shlex.split(entrypoint)
