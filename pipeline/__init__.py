"""aerialdet's detect pipeline: plain stages, with Ray only in ``ray_stages``.

=============  ====================================================  ==========================
stage          what it produces                                      module
=============  ====================================================  ==========================
list           scene URIs of a folder, glob or ``s3://`` prefix      ``pipeline.sources``
open           ``SceneInfo`` from a scene's header (no pixels)        ``pipeline.reading``
tile           ``TileSpec`` windows with overlap and cores            ``pipeline.tiling``
read           float32 ``[C, H, W]`` tiles, clamped reads + padding   ``pipeline.reading``
detect         ``TileDetections`` in tile pixels                      ``pipeline.detection``
merge          scene-pixel boxes, one per object (cross-tile NMS)     ``pipeline.merging``
georeference   CRS polygons from box corners                          ``pipeline.georef``
write          one GeoParquet 1.1 file per scene + ``_run.json``      ``pipeline.output``,
                                                                      ``pipeline.geoparquet``,
                                                                      ``pipeline.report``
query          GeoDataFrames / SQL over the output                    ``pipeline.query``
look           a PNG of a scene with its detections                   ``pipeline.quicklook``
=============  ====================================================  ==========================

``pipeline.ray_stages.run_detect`` wires the stages into a Ray Data graph;
every other module runs and is tested without Ray.
"""

from pipeline.detection import detect_tiles, load_model
from pipeline.errors import (
    InvalidSceneError,
    OutputError,
    PipelineError,
    SourceError,
    TileReadError,
)
from pipeline.geoparquet import write_geoparquet
from pipeline.georef import scene_px_to_crs, tile_to_scene_px
from pipeline.merging import MergeConfig, merge_scene
from pipeline.query import read_detections
from pipeline.reading import ReadConfig, open_scene, read_tiles
from pipeline.sources import list_scenes
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import SceneInfo, TileDetections, TileSpec

__all__ = [
    "InvalidSceneError",
    "MergeConfig",
    "OutputError",
    "PipelineError",
    "ReadConfig",
    "SceneInfo",
    "SourceError",
    "TileDetections",
    "TileReadError",
    "TileSpec",
    "TilingConfig",
    "detect_tiles",
    "list_scenes",
    "load_model",
    "merge_scene",
    "open_scene",
    "read_detections",
    "read_tiles",
    "scene_px_to_crs",
    "tile_scene",
    "tile_to_scene_px",
    "write_geoparquet",
]
