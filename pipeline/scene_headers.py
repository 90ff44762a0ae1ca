"""A scene's header for detect, read one way wherever it is read.

The footprint pass (``pipeline.mosaic_index``, local files opened on the
driver) and the header tasks of the run (``pipeline.ray_stages``, on the
executor) both call ``open_header``, so a scene that cannot be processed
reads the same in both places: opened (``pipeline.reading.open_scene``),
its size checked against the limits (``pipeline.tiling.check_scene_size``),
or one line naming the file and the problem.  It never raises for a scene's
own problem.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import PipelineError, first_line
from pipeline.reading import ReadConfig, open_scene
from pipeline.tiling import TilingConfig, check_scene_size
from pipeline.types import SceneInfo


def open_header(uri: str, read_cfg: ReadConfig, tiling: TilingConfig) -> SceneInfo | str:
    """A scene's header, or the one line why it cannot be processed (naming the file).

    Args:
        uri: local path, ``s3://`` URI or GDAL path, as listed.
        read_cfg: bands, drivers, ``assume_crs``.
        tiling: the size limits (``--max-scene-px``).
    """
    try:
        info = open_scene(uri, read_cfg)
        check_scene_size(uri, info.width_px, info.height_px, tiling)
    except PipelineError as exc:
        return str(exc)
    except Exception as exc:  # anything GDAL/boto throws: the scene fails alone
        return f"{uri}: cannot open: {first_line(exc)}"
    return info


def open_headers(uris: Sequence[str], read_cfg: ReadConfig, tiling: TilingConfig) -> list[SceneInfo | str]:
    """``open_header`` of each scene, in order (the header task's body)."""
    return [open_header(uri, read_cfg, tiling) for uri in uris]


def is_remote(uri: str) -> bool:
    """Whether ``uri`` is read over the network (``s3://``, another URL, a GDAL ``/vsi`` path)."""
    return "://" in uri or uri.startswith("/vsi")
