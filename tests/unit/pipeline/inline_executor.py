"""An in-process ``pipeline.run.Executor`` for unit tests: the real stage functions, no Ray.

It reads with ``ray_stages.read_group``, infers with ``ray_stages.TileDetector``
(the model actor's class, called directly) and finishes with
``finishing.prepare_scene``, one step per ``wait``.  Hooks let a test see what
was submitted, shuffle the order results come back in, or break the stream.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence

from pipeline.executor import Finished, TileGroup, TileResult, TileStatus
from pipeline.finishing import FinishSettings, prepare_scene
from pipeline.job import DetectJob
from pipeline.ray_stages import TileDetector, open_headers, read_group, unpack_detections
from pipeline.types import SceneInfo, TileDetections


class InlineExecutor:
    """Runs each submitted group and finish in this process, a few per ``wait``.

    Args:
        job: the run's settings.
        max_groups: groups accepted before ``has_room`` says no.
        shuffle_seed: return each wait's results in a seeded random order.
        on_submit: called with each group as it is submitted.
        break_after: raise ``break_with`` from the ``wait`` after this many groups ran.
    """

    def __init__(
        self,
        job: DetectJob,
        *,
        max_groups: int = 3,
        shuffle_seed: int | None = None,
        on_submit: Callable[[TileGroup], None] | None = None,
        break_after: int | None = None,
        break_with: BaseException | None = None,
    ) -> None:
        self.job = job
        self.detector = TileDetector(job.model, job.detect.precision, 1, False, job.detect.batch_size)
        self.groups: deque[TileGroup] = deque()
        self.finishes: deque[tuple[SceneInfo, list[TileDetections], FinishSettings]] = deque()
        self.max_groups = max_groups
        self.rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
        self.on_submit = on_submit or (lambda group: None)
        self.break_after, self.break_with = break_after, break_with
        self.groups_run = 0
        self.header_calls: list[list[str]] = []
        self.closed = False

    def open_headers(self, uris: Sequence[str]) -> list[SceneInfo | str]:
        self.header_calls.append(list(uris))
        return open_headers(uris, self.job.read, self.job.tiling)

    def has_room(self) -> bool:
        return len(self.groups) < self.max_groups

    def submit_tiles(self, group: TileGroup) -> None:
        self.on_submit(group)
        self.groups.append(group)

    def submit_finish(self, scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> None:
        self.finishes.append((scene, tiles, settings))

    def wait(self, timeout_s: float) -> list[TileResult | Finished]:
        if self.break_after is not None and self.groups_run >= self.break_after:
            raise self.break_with or RuntimeError("the stream broke")
        events: list[TileResult | Finished] = []
        if self.groups:
            group = self.groups.popleft()
            self.groups_run += 1
            tiles = {t.index: t for t in group.tiles}
            for uri, index, status, error, packed in self.detector.detect(
                read_group(group.tiles, self.job.read)
            ):
                found = unpack_detections(tiles[index], packed) if status == "ok" else None
                events.append(
                    TileResult(uri, index, TileStatus(status), error, found, actor=self.detector.about)
                )
        if self.finishes:
            scene, tiles, settings = self.finishes.popleft()
            events.append(Finished(scene.uri, prepare_scene(scene, tiles, settings)))
        if self.rng is not None:
            self.rng.shuffle(events)
        return events

    def close(self) -> None:
        self.closed = True
