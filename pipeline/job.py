"""What one detect run is asked to do: ``DetectJob`` and its ``DetectConfig``, built only in ``jobs/``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.aoi import Aoi
from pipeline.detection import ModelLoader, Precision
from pipeline.errors import PipelineError
from pipeline.merging import MergeConfig
from pipeline.reading import ReadConfig
from pipeline.resolution import ResolutionConfig
from pipeline.stac_source import StacOptions
from pipeline.tiling import TilingConfig


@dataclass(frozen=True, slots=True)
class DetectConfig:
    """How the model actors run.

    Attributes:
        batch_size: tiles per model call.
        num_actors: model actors (None: one per GPU, else one per node).
        cpus_per_actor: CPUs (and torch threads) per CPU actor (None: all of
            a node's CPUs but the half a read task takes).
        use_gpu: None: GPUs when the cluster has them; True/False forces.
        precision: arithmetic of the network; ``auto`` is resolved in each
            actor (``pipeline.detection.resolve_precision``): bf16 on CPUs
            with native bfloat16, whose AP50 matched fp32 within 0.0002
            (tests/integration/test_precision.py, bench/RESULTS.md).
    """

    batch_size: int = 4
    num_actors: int | None = None
    cpus_per_actor: float | None = None
    use_gpu: bool | None = None
    precision: Precision = Precision.AUTO


@dataclass(frozen=True)
class DetectJob:
    """Everything one detect run needs.

    Attributes:
        source: folder, glob, file or ``s3://`` prefix of scenes.
        out_dir: output directory.
        model: loader of the model (``retinanet.predictor.CheckpointLoader``,
            ``pipeline.standin.StandinLoader``, or any ``ModelLoader``).
        detect: actor settings.
        tiling: tile size and overlap.
        read: bands, drivers, assumed CRS.
        merge: cross-tile merge settings.
        resolution: the GSD scenes are read at (None: native resolution).
        to_crs: output CRS (None: see the module docstring).
        min_score: keep detections scoring at least this; None: the model's
            calibrated per-class scores (``ModelInfo.score_thresholds``), or
            every detection when it has none.
        overwrite: redo scenes whose output exists.
        progress: show a progress bar.
        window_scenes: scenes in flight at once (claimed and not yet recorded).
        header_batch: scenes whose headers one executor call opens.
        cross_scene_merge: an object seen by overlapping scenes is reported by
            one of them (``pipeline.mosaic``); False keeps every scene's own.
        stac: how STAC items become scenes, and the API search when the source is one
            (``pipeline.stac_source``); a ``.json``/``.parquet`` source is read as STAC without it.
        aoi: the area of interest (``pipeline.aoi``): only tiles meeting it are read, detections
            outside it dropped, scenes outside it skipped; None: everything.
    """

    source: str
    out_dir: str
    model: ModelLoader
    detect: DetectConfig = field(default_factory=DetectConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    to_crs: str | None = None
    min_score: float | None = None
    overwrite: bool = False
    progress: bool = True
    window_scenes: int = 64
    header_batch: int = 16
    cross_scene_merge: bool = True
    stac: StacOptions | None = None
    aoi: Aoi | None = None

    def __post_init__(self) -> None:
        if self.window_scenes < 1 or self.header_batch < 1:
            raise ValueError(
                f"DetectJob.window_scenes and header_batch must be >= 1, got {self.window_scenes}, {self.header_batch}"
            )


def min_scores(job: DetectJob) -> tuple[float, ...] | None:
    """Per-class score floor: ``--min-score`` for all, else the model's calibrated scores, else none."""
    if job.min_score is not None:
        return (job.min_score,) * len(job.model.info.class_names)
    if job.model.info.score_thresholds is not None:
        return tuple(float(t) for t in job.model.info.score_thresholds)
    return None


def check_bands(job: DetectJob) -> None:
    """Refuse ``--bands`` that do not give the model its number of input bands."""
    info = job.model.info
    if len(job.read.bands) != len(info.bands):
        raise PipelineError(
            f"--bands {','.join(map(str, job.read.bands))} gives {len(job.read.bands)} band(s) but the model "
            f"takes {len(info.bands)} (its bands: {info.bands})"
        )
