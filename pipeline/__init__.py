"""aerialdet's detect pipeline: plain stages, with Ray only in ``ray_stages``.

=============  ====================================================  ==========================
stage          what it produces                                      module
=============  ====================================================  ==========================
run            the lifecycle: list, claim, open, plan, stream, finish ``pipeline.run``
               record, release (a bounded window of scenes)           (``pipeline.executor``: seam)
list           scene URIs of a folder, glob or ``s3://`` prefix      ``pipeline.sources``
open           ``SceneInfo`` from a scene's header (no pixels)        ``pipeline.reading``
mosaic         each scene's part of an overlapping mosaic (footprints ``pipeline.mosaic``,
               recorded before the first tile)                        ``pipeline.mosaic_index``
tile           ``TileSpec`` windows with overlap and cores, in the    ``pipeline.tiling``,
               model's pixels (its GSD)                               ``pipeline.resolution``
read           ``[C, H, W]`` tiles in the scene's dtype, or in the    ``pipeline.reading``
               model's (palettes expanded, rescaled at the header)    (``pipeline.pixel_kinds``)
detect         ``TileDetections`` in tile pixels                      ``pipeline.detection``
merge          scene-pixel boxes, one per object (cross-tile NMS)     ``pipeline.merging``
georeference   CRS polygons from box corners                          ``pipeline.georef``
write          one GeoParquet 1.1 file per scene + the run record     ``pipeline.output``,
                                                                      ``pipeline.geoparquet``,
                                                                      ``pipeline.report``
finish         merge + encode (a Ray task), then write (the driver)   ``pipeline.finishing``
query          GeoDataFrames / SQL over the output                    ``pipeline.query``
export         GeoJSON (RFC 7946), CSV, GPKG, FlatGeobuf files        ``pipeline.query_export``
look           a PNG of a scene with its detections                   ``pipeline.quicklook``
=============  ====================================================  ==========================

``pipeline.run.DetectRun`` drives the lifecycle through an ``Executor``;
``pipeline.ray_stages.RayExecutor`` (the only Ray code) runs reads, model
actors and finishes on a cluster, and ``run_detect`` wires the two.  Every
other module runs and is tested without Ray.  The model comes in as a
``ModelLoader`` (``pipeline.detection``): the pipeline never imports a model
package.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

# Public names and the module each lives in.  They load on first use, so
# ``import pipeline`` loads neither torch nor Ray (and never ``retinanet``).
_EXPORTS = {
    "DetectConfig": "pipeline.job",
    "DetectJob": "pipeline.job",
    "DetectRun": "pipeline.run",
    "Executor": "pipeline.executor",
    "InvalidSceneError": "pipeline.errors",
    "MergeConfig": "pipeline.merging",
    "ModelInfo": "pipeline.detection",
    "ModelLoader": "pipeline.detection",
    "OutputError": "pipeline.errors",
    "PipelineError": "pipeline.errors",
    "Precision": "pipeline.detection",
    "ReadConfig": "pipeline.reading",
    "SceneInfo": "pipeline.types",
    "SourceError": "pipeline.errors",
    "TileDetections": "pipeline.types",
    "TileReadError": "pipeline.errors",
    "TileSpec": "pipeline.types",
    "TilingConfig": "pipeline.tiling",
    "detect_tiles": "pipeline.detection",
    "iter_listing": "pipeline.sources",
    "list_scenes": "pipeline.sources",
    "merge_scene": "pipeline.merging",
    "open_scene": "pipeline.reading",
    "read_detections": "pipeline.query",
    "read_report": "pipeline.report",
    "read_tiles": "pipeline.reading",
    "scene_px_to_crs": "pipeline.georef",
    "tile_scene": "pipeline.tiling",
    "tile_to_scene_px": "pipeline.georef",
    "write_geoparquet": "pipeline.geoparquet",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("pipeline", _EXPORTS)
