"""Before any tile on a joined cluster: does every node that may work see the paths the run reads?

On a cluster of separate hosts a local SOURCE and the ``--model`` directory
are read by every node's tasks and actors, not only by the driver that
checked them: a folder only the head mounts made scenes fail as "no longer
exists" and the model actor fail without naming the node, and which scenes
failed depended on where Ray placed the tasks.  ``check_nodes_see`` runs
one small task pinned (hard ``NodeAffinitySchedulingStrategy``, no CPU
asked, so it runs beside a busy actor or on a 0-CPU node) on each alive node
that has CPUs or GPUs, before any scene is claimed, and refuses the run in
one line naming every node that cannot see a path, by IP and node id.
S3 URIs, URLs and GDAL ``/vsi`` paths are not checked: every node reads them
the same way (with its own credentials).

Decision (docs/deploy.md): a blind node fails the run rather than being
left out of it.  Leaving it out would mean pinning every read, header and
merge task and every actor away from it for the whole run, and a node the
cluster can lend to a run must see its data; the line says what to fix
(mount the folder at the same path on every node, or put the scenes in S3).

Besides ``pipeline/ray_stages.py`` this is the only module in ``pipeline/``
that imports Ray, and only inside ``check_nodes_see``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.sources import is_glob, is_s3_uri, normalize_scene_uri

__all__ = ["NeededPath", "NodeCheckError", "check_nodes_see", "needed_paths", "path_problem"]

ANSWER_TIMEOUT_S = 120.0  # a node's first task may start a worker process: slow on a loaded machine


class NodeCheckError(PipelineError, OSError):
    """A node of the cluster cannot see a path the run reads."""


@dataclass(frozen=True, slots=True)
class NeededPath:
    """A local path every working node must see.

    Attributes:
        what: what the path is, as the user named it (``SOURCE``, ``--model``).
        path: the absolute path, as the driver resolved it (tasks read it so).
        is_dir: it must be a folder (listable) rather than a readable file.
        files: names that must be readable files in that folder (e.g. ``meta.json``).
    """

    what: str
    path: str
    is_dir: bool
    files: tuple[str, ...] = ()


def _glob_root(pattern: str) -> str:
    """The folder a glob lists: its components up to the first one with a glob character."""
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, p in enumerate(parts) if is_glob(p))]
    return str(Path(*fixed)) if fixed else "."


def needed_paths(source: str | None, model_dir: str | None) -> tuple[NeededPath, ...]:
    """The local paths of a detect run: a local SOURCE (file, folder or a glob's folder) and the model.

    Args:
        source: the run's SOURCE as given (a file, folder, glob, s3:// URI ...);
            None for a STAC API search (its assets' hrefs are not checked).
        model_dir: the checkpoint directory the model actors load, or None (nothing on disk).

    Example:
        >>> [p.path for p in needed_paths("/data/scenes/*.tif", None)]
        ['/data/scenes']
    """
    out: list[NeededPath] = []
    if source is not None and not (is_s3_uri(source) or "://" in source or source.startswith("/vsi")):
        path = Path(source)
        if path.is_file():  # as the listing decides: an existing file is never a pattern
            out.append(NeededPath("SOURCE", normalize_scene_uri(source), is_dir=False))
        elif path.is_dir() or not is_glob(source):
            out.append(NeededPath("SOURCE", normalize_scene_uri(source), is_dir=True))
        else:
            out.append(NeededPath("SOURCE", normalize_scene_uri(_glob_root(source)), is_dir=True))
    if model_dir is not None:
        out.append(NeededPath("--model", str(Path(model_dir).resolve()), is_dir=True, files=("meta.json",)))
    return tuple(out)


def path_problem(needed: NeededPath) -> str | None:
    """What is wrong with ``needed`` on this machine, or None when it is there and readable.

    Example:
        >>> path_problem(NeededPath("SOURCE", "/no/such/folder", is_dir=True))
        'does not exist'
    """
    path = Path(needed.path)
    if not path.exists():
        return "does not exist"
    if needed.is_dir and not path.is_dir():
        return "is not a folder"
    if not needed.is_dir and not path.is_file():
        return "is not a file"
    if not os.access(path, (os.R_OK | os.X_OK) if needed.is_dir else os.R_OK):
        return "is not readable"
    missing = [name for name in needed.files if not os.access(path / name, os.R_OK)]
    return f"has no readable {', '.join(missing)}" if missing else None


def _problems_here(paths: Sequence[NeededPath]) -> list[tuple[str, str, str]]:
    """Task body: ``(what, path, problem)`` for each path this node cannot see."""
    return [(p.what, p.path, why) for p in paths if (why := path_problem(p)) is not None]


def _working_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alive nodes where tasks or actors can land (some CPU or GPU)."""
    return [
        n
        for n in nodes
        if n.get("Alive", True)
        and (n.get("Resources", {}).get("CPU", 0) > 0 or n.get("Resources", {}).get("GPU", 0) > 0)
    ]


def _node_name(node: dict[str, Any]) -> str:
    return f"node {node.get('NodeManagerAddress', '?')} (id {str(node.get('NodeID', '?'))[:12]})"


def check_nodes_see(
    paths: Sequence[NeededPath],
    *,
    timeout_s: float = ANSWER_TIMEOUT_S,
    log: Callable[[str], Any] = print,
) -> None:
    """Refuse the run when a working node of the cluster cannot see one of ``paths``.

    One task per alive node with CPUs or GPUs, pinned there (hard node
    affinity, ``num_cpus=0``).  A node that does not answer within
    ``timeout_s`` is named in a warning through ``log`` (the run's fault
    handling copes with a node that is lost); Ray must be initialised.

    Raises:
        NodeCheckError: one line naming each blind node (IP and node id),
            the path and what to do.
    """
    if not paths:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task: Any = ray.remote(num_cpus=0, max_retries=1)(_problems_here)
    nodes = _working_nodes(ray.nodes())  # type: ignore[no-untyped-call]
    if not nodes:  # nothing can work yet (an autoscaler adds nodes later): the run waits for them
        return
    refs = {
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            list(paths)
        ): n
        for n in nodes
    }
    done, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    blind: list[str] = []
    for ref in done:
        try:
            problems = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the node died under the check: the run copes
            log(f"warning: {_node_name(refs[ref])} failed the path check: {type(exc).__name__}")
            continue
        blind.extend(f"{_node_name(refs[ref])}: {what} {path} {why} there" for what, path, why in problems)
    for ref in late:
        ray.cancel(ref, force=True)
        log(f"warning: {_node_name(refs[ref])} did not answer the path check within {timeout_s:.0f} s")
    if blind:
        raise NodeCheckError(
            "; ".join(sorted(blind))
            + ", and every node of the run reads it; mount it at the same path on every node "
            "(scenes can also be read from S3: s3://bucket/prefix)"
        )
