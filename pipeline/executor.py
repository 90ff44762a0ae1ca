"""The seam between the run's lifecycle (``pipeline.run``) and where its work runs.

``pipeline.run.DetectRun`` drives an ``Executor``: it opens headers, submits
tile groups while the executor has room, submits a scene's finish once all
its tiles are back, and takes what came back from ``wait``.  The messages
that cross the seam are small frozen values; pixels never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from pipeline.finishing import FinishSettings, PreparedScene
from pipeline.types import SceneInfo, TileDetections, TileSpec


class TileStatus(str, Enum):
    """What became of one tile: inferred, all nodata (not inferred), or its scene's read failed."""

    OK = "ok"
    NODATA = "nodata"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TileGroup:
    """Consecutive tiles of one scene that one read task reads (``pipeline.tiling.group_tile_rows``)."""

    scene_uri: str
    tiles: tuple[TileSpec, ...]


@dataclass(frozen=True, slots=True)
class TileResult:
    """One tile back from the executor.

    Attributes:
        scene_uri: its scene.
        tile_index: its index in the scene's plan.
        status: ``TileStatus``.
        error: the scene's error (status ``error``), naming the file.
        detections: what the model found (status ``ok``), tile pixels.
        node_id: the node whose model actor inferred it.
        actor: the actor's self-description (device, threads, precision).
        actor_id: the actor's id (Ray's), for the scene's line.
    """

    scene_uri: str
    tile_index: int
    status: TileStatus
    error: str = ""
    detections: TileDetections | None = None
    node_id: str = "local"
    actor: str = ""
    actor_id: str = ""


@dataclass(frozen=True, slots=True)
class Finished:
    """A scene's finish back from the executor: its encoded file, or why it could not be made."""

    scene_uri: str
    prepared: PreparedScene


class Executor(Protocol):
    """Where the work runs; the lifecycle above drives it."""

    def open_headers(self, uris: Sequence[str]) -> list[SceneInfo | str]:
        """Each scene's header, or the one-line reason it cannot be processed (naming the file)."""
        ...

    def has_room(self) -> bool:
        """Whether another tile group can be submitted now without passing the executor's bound."""
        ...

    def submit_tiles(self, group: TileGroup) -> None:
        """Read and infer a group of tiles; its ``TileResult``s come back from ``wait``."""
        ...

    def submit_finish(self, scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> None:
        """Merge and encode a scene (``finishing.prepare_scene``); a ``Finished`` comes back from ``wait``."""
        ...

    def wait(self, timeout_s: float) -> list[TileResult | Finished]:
        """What came back, waiting up to ``timeout_s`` for the first of it.

        Raises:
            PipelineError: the executor cannot go on (e.g. no model actor can start).
        """
        ...

    def close(self) -> None:
        """Release what the executor holds (actors, tasks in flight)."""
        ...
