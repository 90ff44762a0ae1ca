"""The detect run as plain code: one streaming lifecycle behind a small executor seam.

Every scene goes through the same steps, a bounded window of them at a time::

    list (lazily)  -> skipped / exists / held by another run -> its line at once
    claim          -> as the scene enters the window, never for the whole bucket
    open           -> headers in batches (``Executor.open_headers``)
    plan           -> lazy tile plan, checked against the size limits
    stream         -> tile groups to the executor while it has room; results back
    finish         -> merge + encode on the executor (``Executor.submit_finish``)
    record         -> write the file from the driver, append the scene's line
    release        -> drop the claim; the scene leaves the window

The window holds at most ``DetectJob.window_scenes`` scenes (claimed, opened,
in flight or finishing), so the driver's memory, its claims and the time to
the first tile do not grow with the bucket.  The lifecycle is single-threaded:
the executor is asked for what came back (``Executor.wait``), nothing else
runs beside it but the claim renewals (``pipeline.claims.ClaimKeeper``).

An ``Executor`` does the work: ``pipeline.ray_stages.RayExecutor`` on a Ray
cluster (read tasks, model actors, finish tasks) in production;
``tests/unit/pipeline/inline_executor.py`` in-process in the unit tests, which
so drive claims, accounting, finishing, failing scenes and broken streams
without a cluster.

The output CRS is fixed once per output (``pipeline.dataset``): ``--to-crs``,
else the CRS of the first batch of scenes opened when they share one, else
OGC:CRS84; it is recorded in ``OUT/_dataset.json`` and every later run keeps it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from pipeline.aoi import outside_reason
from pipeline.claims import ClaimKeeper, try_claim
from pipeline.dataset import check_resolution, check_to_crs, fix_output_crs
from pipeline.errors import PipelineError, first_line
from pipeline.executor import Executor, Finished, TileGroup, TileResult, TileStatus
from pipeline.finishing import FinishSettings, write_prepared
from pipeline.job import DetectJob, check_bands, min_scores
from pipeline.listing_once import ListingTape
from pipeline.mosaic import Footprints
from pipeline.mosaic_index import footprint_pass
from pipeline.output import check_reachable, scene_output_name
from pipeline.reading import scene_extensions
from pipeline.report import RunRecord, SceneReport, SceneStatus, new_run_id
from pipeline.resolution import ReadScale, detections_to_native, plan_read, resolution_fields
from pipeline.run_report_html import report_after_run
from pipeline.scene_headers import is_remote, open_header
from pipeline.scene_plan import ScenePlan, plan_scene
from pipeline.stac_out import writer_for
from pipeline.stac_source import SceneTags, listing_entries, tag_listing
from pipeline.storage import OutputStore, open_store
from pipeline.tiling import check_scene_size
from pipeline.types import SceneInfo, TileDetections

Log = Callable[[str], None]


@dataclass
class _Scene:
    """A scene in the window: its plan, what was submitted and what came back."""

    info: SceneInfo
    planned: ScenePlan  # its tiles, lazy groups, what --aoi and the mosaic left out
    submitted: int = 0
    seen: int = 0
    nodata: int = 0
    listed_all: bool = False  # every group submitted (or the scene failed)
    error: str | None = None
    finishing: bool = False
    received: list[TileDetections] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    tiles_by_node: dict[str, int] = field(default_factory=dict)
    actor_ids: set[str] = field(default_factory=set)
    read: ReadScale | None = None  # read at the model's GSD (None: native pixels)

    @property
    def all_back(self) -> bool:
        return self.listed_all and self.seen == self.submitted


def new_record(job: DetectJob, store: OutputStore | None) -> RunRecord:
    """The run's record, with the resolved configuration."""
    return RunRecord(
        run_id=new_run_id(),
        source=job.source,
        output=job.out_dir,
        model=job.model.info.model_id,
        store=store,
        config={
            "tiling": asdict(job.tiling),
            "read": asdict(job.read),
            "merge": asdict(job.merge),
            "resolution": asdict(job.resolution),
            "detect": asdict(job.detect),
            "to_crs": job.to_crs,
            "min_score": job.min_score,
            "score_thresholds": dict(zip(job.model.info.class_names, job.model.info.score_thresholds or ())),
            "window_scenes": job.window_scenes,
            "cross_scene_merge": job.cross_scene_merge,
            "model_actors": [],
            "stac": asdict(job.stac) if job.stac is not None else None,
            "aoi": job.aoi.source if job.aoi is not None else None,
        },
    )


class DetectRun:
    """One run of the lifecycle over a job with an executor; ``run()`` returns its record.

    Args:
        job: the run's settings.
        executor: where reads, inference and finishes run.
        log: one-line messages (failed scenes, warnings).
        progress: called with ``(tiles done, tiles planned so far, scenes recorded)``.
        stall_warning_s: say so once when nothing has come back for this long.
    """

    def __init__(
        self,
        job: DetectJob,
        executor: Executor,
        *,
        log: Log = print,
        progress: Callable[[int, int, int], None] | None = None,
        stall_warning_s: float = 300.0,
    ) -> None:
        check_bands(job)
        self.job, self.executor, self.log = job, executor, log
        self.opening: list[str] = []  # claimed, headers being opened
        self.progress = progress or (lambda done, planned, scenes: None)
        self.stall_warning_s = stall_warning_s
        self.store = open_store(job.out_dir)
        check_to_crs(self.store, job.to_crs)  # before any claim: a resume never changes the output's CRS
        self.tags = SceneTags()  # STAC items' ids and collections, by scene URI, until recorded
        entries = listing_entries(
            job.source, job.stac, scene_extensions(job.read.drivers), job.read.bands, job.aoi
        )
        # the first entry now: a source that does not exist or holds no file is the caller's error
        # (SourceError, one line), raised before anything is claimed or written
        self.listed = ListingTape(itertools.chain([next(entries)], entries))  # listed once (listing_once)
        self.listing = tag_listing(self.listed.replay(), self.tags)
        self.listing_done = False
        self.record = new_record(job, self.store)
        # before any claim: a resume never changes the output's read GSD either (--overwrite alone does)
        check_resolution(self.store, job.resolution, job.overwrite, self.record.run_id, log)
        self.record.tags = self.tags
        self.stac_out = writer_for(job, self.record.run_id)  # OUT/_stac/: collection.json, an item per scene
        self.claims = ClaimKeeper(self.store, self.record.run_id)
        self.window: dict[str, _Scene] = {}
        self.names: dict[str, str] = {}  # claimed scenes' output names, made once (a resolve, a sha1)
        self.settings: FinishSettings | None = None
        self.tiles_done = self.tiles_planned = 0
        self.footprints: Footprints | None = None

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self) -> RunRecord:
        """Run to the end (or until stopped); the record is finished and written in every case."""
        try:
            if self.job.cross_scene_merge:
                self._record_footprints()
            self._loop()
        except Exception as exc:  # the run itself broke (e.g. no model actor could start)
            self._abort(f"run aborted: {first_line(exc)}")
        except BaseException as exc:  # KeyboardInterrupt, SIGTERM turned into an exception: stop cleanly
            self._abort(f"run stopped ({str(exc) or type(exc).__name__})", stopped=True)
            raise
        finally:
            self._close()
        return self.record

    def _loop(self) -> None:
        last_event = time.time()
        warned = False
        while True:
            self._admit()
            self._feed()
            if not self.window and self.listing_done:
                if "first_tiles" in self.record.marks:
                    self.record.mark("last_tiles")
                return
            events = self.executor.wait(timeout_s=0.5)
            for event in events:
                self._on_event(event)
            self.record.flush_if_due()
            if events:
                last_event, warned = time.time(), False
            elif not warned and time.time() - last_event > self.stall_warning_s:
                warned = True
                self.log(
                    f"WARNING nothing has come back for {self.stall_warning_s:.0f} s: the cluster may lack the "
                    "CPUs or GPUs the model actors and read tasks need (`ray status` shows what waits)"
                )

    def _record_footprints(self) -> None:
        """Every listed scene's footprint, recorded in the output before the first tile (``pipeline.mosaic``)."""
        # the run's one listing: the pass walks it, the lifecycle replays what it walked
        self.footprints = footprint_pass(self.store, self.listed.walk(), self._footprint_headers)
        self.record.mark("footprints_recorded")

    def _footprint_headers(self, uris: list[str]) -> list[SceneInfo | str]:
        """Footprint headers: local files here (milliseconds each), the rest on the executor; ``open_header`` both."""
        remote = [u for u in uris if is_remote(u)]
        opened = dict(zip(remote, self.executor.open_headers(remote))) if remote else {}
        return [opened[u] if u in opened else open_header(u, self.job.read, self.job.tiling) for u in uris]

    def _close(self) -> None:
        try:
            self.executor.close()
        finally:
            self.stac_out.close_and_say(self.record.started_at, self.log)
            self.claims.stop()
            self.record.storage_retries = self.store.retries
            self.record.finish()
            self.record.close()
            report_after_run(self.job.out_dir, self.log, self.record.num_listed)  # OUT/_report.html

    def _abort(self, reason: str, *, stopped: bool = False) -> None:
        """Record every scene of the window as failed with ``reason`` and release it."""
        self.log(f"FAILED {reason}")
        if stopped:
            self.record.stopped = reason
        for uri in [*self.opening, *self.window]:
            self._record(SceneReport(uri, SceneStatus.FAILED, error=f"{uri}: {reason}"))
        self.opening = []
        self.listing_done = True

    # -- list, claim, open, plan ----------------------------------------------------------------------------

    def _admit(self) -> None:
        """Bring scenes into the window until it is full or the listing ends."""
        while not self.listing_done and len(self.window) < self.job.window_scenes:
            room = self.job.window_scenes - len(self.window)
            batch = self._claim_next(min(room, self.job.header_batch))
            if batch:
                self._open(batch)
            self.record.mark("scenes_opened")

    def _claim_next(self, num: int) -> list[str]:
        """Up to ``num`` listed scenes claimed for this run; the others listed meanwhile get their line."""
        claimed: list[str] = []
        while len(claimed) < num:
            try:
                uri, reason = next(self.listing)
            except StopIteration:
                self.listing_done = True
                break
            self.record.num_listed += 1
            if reason is not None:
                self.record.add(SceneReport(uri, SceneStatus.SKIPPED, error=f"{uri}: {reason}"))
            elif self._claimed(uri):  # iter_listing yields each scene once
                claimed.append(uri)
        return claimed

    def _claimed(self, uri: str) -> bool:
        """Claim ``uri`` for this run; else record it as ``exists`` or held by another live run."""
        name = scene_output_name(uri)
        if not self.job.overwrite and self.store.exists(name):
            self.record.add(SceneReport(uri, SceneStatus.EXISTS, output=self.store.uri(name)))
            return False
        taken_at = time.time()  # before the claim is written: its lease lasts at least until taken_at + lease
        held = try_claim(self.store, name, self.record.run_id)
        if held is not None:
            until = time.strftime("%H:%M:%S", time.localtime(held.expires_at))
            error = (
                f"{uri}: run {held.run_id} (pid {held.pid} on {held.host}) is processing it "
                f"(claim valid until {until}); re-run this command later to pick up what it leaves"
            )
            self.record.add(SceneReport(uri, SceneStatus.SKIPPED, error=error))
            return False
        if not self.job.overwrite and self.store.exists(name):  # finished by another run while we looked
            self.claims.drop(name)
            self.record.add(SceneReport(uri, SceneStatus.EXISTS, output=self.store.uri(name)))
            return False
        self.claims.hold(name, since=taken_at)
        self.names[uri] = name
        return True

    def _open(self, uris: list[str]) -> None:
        """Open the claimed scenes' headers; plan each, or fail it alone with its reason."""
        self.opening = uris
        headers = self.executor.open_headers(uris)
        opened = [h for h in headers if isinstance(h, SceneInfo)]
        if self.settings is None and opened:
            out_crs = fix_output_crs(
                self.store,
                [h.crs_wkt for h in opened],
                self.job.to_crs,
                self.record.run_id,
                self.job.resolution,
            )
            self.record.crs = out_crs.to_string()
            self.settings = FinishSettings(
                out_dir=self.job.out_dir,
                out_crs_wkt=out_crs.to_wkt(),
                merge=self.job.merge,
                class_names=self.job.model.info.class_names,
                min_score_per_class=min_scores(self.job),
                model_id=self.job.model.info.model_id,
                run_id=self.record.run_id,
                replace=self.job.overwrite,
            )
        for uri, header in zip(uris, headers):
            if isinstance(header, str):
                self._fail_now(uri, header)
                continue
            try:
                assert self.settings is not None
                check_scene_size(uri, header.width_px, header.height_px, self.job.tiling)
                if header.crs_wkt != self.settings.out_crs_wkt:  # the same CRS always reaches itself
                    check_reachable(header, self.settings.out_crs_wkt)
                read = plan_read(header, self.job.resolution)
            except PipelineError as exc:
                self._fail_now(uri, str(exc))
                continue
            if not self._plan(uri, header, read):
                continue
        self.opening = []

    def _plan(self, uri: str, header: SceneInfo, read: ReadScale | None) -> bool:
        """Plan the scene into the window (``pipeline.scene_plan``); False, recorded skipped, when --aoi leaves none."""
        planned = plan_scene(self.job, header, read, self.footprints)
        if not planned.tiles:
            assert self.job.aoi is not None  # a scene always has a tile
            reason = outside_reason(header, self.job.aoi)
            self._record(
                SceneReport(uri, SceneStatus.SKIPPED, error=reason, num_tiles_outside_aoi=planned.outside_aoi)
            )
            return False
        self.window[uri] = _Scene(header, planned, read=read)
        self.tiles_planned += len(planned.tiles)
        return True

    def _fail_now(self, uri: str, error: str) -> None:
        self.log(f"FAILED {error}")
        self.record.add(SceneReport(uri, SceneStatus.FAILED, error=error))
        self.claims.drop(self.names.pop(uri, "") or scene_output_name(uri))

    # -- stream, finish, record, release -------------------------------------------------------------------

    def _feed(self) -> None:
        """Submit tile groups, oldest scene first, while the executor has room."""
        for uri, scene in list(self.window.items()):
            while not scene.listed_all and self.executor.has_room():
                group = next(scene.planned.groups, None)
                if group is None:
                    scene.listed_all = True
                    break
                self.executor.submit_tiles(TileGroup(uri, tuple(group)))
                scene.submitted += len(group)
            if scene.all_back and not scene.finishing:
                self._finish(uri, scene)  # a scene with no tile to wait for
            if not self.executor.has_room():
                return

    def _on_event(self, event: TileResult | Finished) -> None:
        if isinstance(event, Finished):
            self._write(event)
            return
        scene = self.window.get(event.scene_uri)
        if scene is None:
            return  # a tile of a scene already recorded (it failed): dropped
        self.record.mark("first_tiles")
        scene.seen += 1
        self.tiles_done += 1
        if event.status is TileStatus.ERROR:
            scene.error = scene.error or event.error
            scene.listed_all = True  # a scene failing on a tile reads no more of its tiles
        elif event.status is TileStatus.NODATA:
            scene.nodata += 1
        else:
            assert event.detections is not None
            scene.received.append(event.detections)
            scene.tiles_by_node[event.node_id] = scene.tiles_by_node.get(event.node_id, 0) + 1
            if event.actor_id:
                scene.actor_ids.add(event.actor_id)
            actors = self.record.config["model_actors"]
            if event.actor and event.actor not in actors:
                actors.append(event.actor)
                actors.sort()
        self.progress(self.tiles_done, self.tiles_planned, self.record.num_lines)
        if scene.all_back and not scene.finishing:
            self._finish(event.scene_uri, scene)

    def _finish(self, uri: str, scene: _Scene) -> None:
        """All of a scene's tiles are back: fail it, or hand it to the executor to merge and encode."""
        scene.finishing = True
        if scene.error is not None:
            self._record_scene(uri, scene, SceneStatus.FAILED, error=scene.error)
            return
        assert self.settings is not None
        # by tile index, not arrival: equal scores are broken the same way in every run
        tiles = [detections_to_native(td) for td in sorted(scene.received, key=lambda td: td.tile.index)]
        settings = self.settings
        if scene.planned.keep_px is not None:  # owned in the mosaic, within --aoi (pipeline.scene_plan)
            settings = replace(settings, keep_region_px=scene.planned.keep_px)
        self.executor.submit_finish(scene.info, tiles, settings)

    def _write(self, event: Finished) -> None:
        """Write a finished scene from the driver (its own credentials), record it, release it."""
        scene = self.window[event.scene_uri]
        assert self.settings is not None
        outcome = write_prepared(self.store, scene.info, event.prepared, self.settings)
        if outcome.status == SceneStatus.DONE.value:  # its STAC item, before its line drops the item ref
            ref = self.tags.peek(event.scene_uri)
            self.stac_out.add(scene.info, self.names[event.scene_uri], outcome.num_detections, ref)
        self._record_scene(
            event.scene_uri,
            scene,
            SceneStatus(outcome.status),
            output=outcome.output,
            error=outcome.error,
            num_detections=outcome.num_detections,
        )

    def _record_scene(self, uri: str, scene: _Scene, status: SceneStatus, **fields: object) -> None:
        line = SceneReport(
            uri,
            status,
            num_tiles=len(scene.planned.tiles),
            num_tiles_skipped_nodata=scene.nodata,
            num_tiles_not_owned=scene.planned.not_owned[0],
            seconds=round(time.time() - scene.started, 3),
            tiles_by_node=dict(sorted(scene.tiles_by_node.items())),
            actor_ids=sorted(scene.actor_ids),
            note=scene.info.note,
            **resolution_fields(scene.info, scene.read, scene.received),
            num_tiles_outside_aoi=scene.planned.outside_aoi,
            **fields,  # type: ignore[arg-type]
        )
        if line.error:
            self.log(f"FAILED {line.error}")
        self._record(line)

    def _record(self, line: SceneReport) -> None:
        """The scene's line, its claim released, the scene out of the window."""
        self.record.add(line)
        self.window.pop(line.uri, None)
        try:
            self.claims.drop(self.names.pop(line.uri, "") or scene_output_name(line.uri))
        except Exception as exc:  # the scene is recorded; its claim runs out with its lease
            self.log(f"WARNING {line.uri}: cannot release its claim: {first_line(exc)}")
        self.progress(self.tiles_done, self.tiles_planned, self.record.num_lines)
