"""GeoParquet/GeoPackage label boxes over GeoTIFF scenes -> labeled tiles.

Each row needs a polygon ``geometry`` (in the scene's CRS or any CRS pyproj
can transform), a ``label`` and a ``scene`` (path to the GeoTIFF, absolute
or relative to the label file).  Steps: read the table, check each row,
open each scene, map its boxes to scene pixels, cut the scene into tiles
(``pipeline.tiling``) and keep, per tile, the boxes that are at least
``min_visible`` inside it, clipped to it.

A label file is sized up before it is read: a GeoParquet file's metadata
(rows, uncompressed bytes of the columns read, of the geometry column
apart) or a GeoPackage's feature count and file size, against
``MAX_LABEL_ROWS`` / ``MAX_LABEL_BYTES`` / ``MAX_GEOMETRY_BYTES``.  Parquet
compresses repeated rows to almost nothing (a 27 KB file held a million
rows, 1 GB once read), so the file's size says nothing.  Only the columns
the labels need are read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retinanet.errors import LabelError
from retinanet.label_formats import LabelBuilder, LabeledImage, LabelSet

# Reading costs about 1 KB of peak memory per row (measured: 1M rows, 1.0 GB),
# so 2M rows is about 2 GB; real label files hold far fewer boxes.
MAX_LABEL_ROWS = 2_000_000
MAX_LABEL_BYTES = 1 << 30  # uncompressed, of the columns read (a GeoPackage: its file size)
MAX_GEOMETRY_BYTES = 256 << 20  # WKB of all geometries (a box is 93 bytes: 2M boxes are 186 MB)
_COLUMNS = ("label", "scene", "label_id")
_SPLIT = "split it into several label files (aerialdet train takes several)"


@dataclass(frozen=True)
class _Scene:
    """What the chipping needs of one scene."""

    path: Path
    transform: Any  # rasterio Affine
    width: int
    height: int
    crs: str | None  # WKT


def _parquet_columns(path: Path) -> list[str] | None:
    """The columns to read of a GeoParquet file, after checking its declared size against the caps.

    None when the metadata cannot be read (``gpd.read_parquet`` names the problem).

    Raises:
        LabelError: more rows, or more uncompressed bytes, than the caps.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        geo = json.loads((meta.metadata or {})[b"geo"])
        geometry = str(geo["primary_column"])
    except Exception:  # not Parquet, no or bad "geo" metadata: the reader says which
        return None
    if meta.num_rows > MAX_LABEL_ROWS:
        raise LabelError(
            f"{path}: {meta.num_rows} label rows, more than the {MAX_LABEL_ROWS} one file may hold; {_SPLIT}"
        )
    names = set(meta.schema.to_arrow_schema().names)
    columns = [c for c in (*_COLUMNS, geometry) if c in names]
    total = geometry_bytes = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            top = chunk.path_in_schema.split(".")[0]
            if top in columns:
                total += chunk.total_uncompressed_size
                geometry_bytes += chunk.total_uncompressed_size if top == geometry else 0
    if geometry_bytes > MAX_GEOMETRY_BYTES:
        raise LabelError(
            f"{path}: its geometries are {geometry_bytes} bytes uncompressed, more than the "
            f"{MAX_GEOMETRY_BYTES} a label file may hold (a box is 93 bytes); simplify them or {_SPLIT}"
        )
    if total > MAX_LABEL_BYTES:
        raise LabelError(
            f"{path}: columns {columns} are {total} bytes uncompressed, more than the "
            f"{MAX_LABEL_BYTES} a label file may hold; {_SPLIT}"
        )
    return columns


def _check_geopackage(path: Path) -> None:
    """Refuse a GeoPackage larger than the caps (SQLite does not compress: its size bounds the data).

    Raises:
        LabelError: naming the file, its size or feature count, and the cap.
    """
    import pyogrio

    size = path.stat().st_size
    if size > MAX_LABEL_BYTES:
        raise LabelError(
            f"{path}: {size} bytes, more than the {MAX_LABEL_BYTES} a label file may hold; {_SPLIT}"
        )
    try:
        features = int(pyogrio.read_info(path)["features"])
    except Exception:  # not a GeoPackage: the reader says so
        return
    if features > MAX_LABEL_ROWS:
        raise LabelError(
            f"{path}: {features} label rows, more than the {MAX_LABEL_ROWS} one file may hold; {_SPLIT}"
        )


def _read_frame(path: Path) -> Any:
    """The label table (a GeoDataFrame, rows numbered from 0), its size and columns checked.

    Raises:
        LabelError: the file is over the caps, unreadable, or lacks a column.
    """
    import geopandas as gpd

    is_parquet = path.suffix.lower() == ".parquet"
    columns = None
    if is_parquet:
        columns = _parquet_columns(path)
    else:
        _check_geopackage(path)
    try:
        gdf = gpd.read_parquet(path, columns=columns) if is_parquet else gpd.read_file(path)
    except Exception as exc:  # pyarrow, pyogrio and GDAL raise their own types
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise LabelError(f"{path}: cannot be read as GeoParquet/GeoPackage ({first})") from None
    for col in ("label", "scene"):
        if col not in gdf.columns:
            raise LabelError(
                f"{path}: no {col!r} column; label boxes need 'label' and 'scene' (the GeoTIFF path)"
            )
    return gdf.reset_index(drop=True)


def _class_names(gdf: Any, class_names: Sequence[str] | None) -> tuple[list[str] | None, bool]:
    """(known classes, closed?): given ones, else the ``label_id`` order of our own GeoParquet."""
    if class_names is not None:
        return list(class_names), True
    if "label_id" in gdf.columns:
        pairs = gdf[["label_id", "label"]].drop_duplicates().sort_values("label_id")
        return list(dict.fromkeys(str(n) for n in pairs["label"])), False
    return None, False


def _usable_rows(gdf: Any, b: LabelBuilder) -> np.ndarray:
    """Rows with a scene and one polygon (bool ``[rows]``); an issue for each other row."""
    import shapely

    usable = np.ones(len(gdf), bool)
    kinds = shapely.get_type_id(gdf.geometry.to_numpy())
    parts = shapely.get_num_geometries(gdf.geometry.to_numpy())
    for i, (scene, kind, num_parts) in enumerate(zip(gdf["scene"], kinds, parts)):
        if scene is None or (isinstance(scene, float) and np.isnan(scene)) or str(scene) == "":
            b.issue(i, "no scene: the 'scene' column names the GeoTIFF the box lies on")
        elif kind not in (3, 6) or num_parts != 1:  # Polygon, or a MultiPolygon of one part
            name = gdf.geometry.iloc[i].geom_type if gdf.geometry.iloc[i] is not None else "missing geometry"
            b.issue(i, f"geometry is a {name} of {num_parts} part(s); a label box is one polygon")
        else:
            continue
        usable[i] = False
    return usable


def _open_scene(label_file: Path, scene: str, row_ids: Sequence[int], b: LabelBuilder) -> _Scene | None:
    """The scene's size and georeferencing; None (rows become issues) when the file is missing.

    The header is read as detect reads it (``pipeline.reading.read_header``:
    the GTiff driver only, never a VRT).

    Raises:
        LabelError: the file exists but is not a GeoTIFF.
    """
    from pipeline.errors import InvalidSceneError
    from pipeline.reading import ReadConfig, read_header

    scene_path = (Path(scene) if Path(scene).is_absolute() else label_file.parent / scene).absolute()
    if not scene_path.is_file():
        for i in row_ids:
            b.issue(int(i), f"unknown scene {scene_path} (file not found)")
        return None
    try:
        header = read_header(str(scene_path), ReadConfig(bands=(1,)))
    except InvalidSceneError as exc:
        why = " ".join(str(exc).removeprefix(f"{scene_path}: ").split())  # one line
        raise LabelError(
            f"{label_file}: scene {scene_path} is not a raster that can be read ({why}); "
            "the 'scene' column must name GeoTIFFs"
        ) from None
    return _Scene(scene_path, header.transform, header.width_px, header.height_px, header.crs_wkt)


def _box_problem(box: np.ndarray, scene: _Scene) -> str | None:
    """Why a scene-pixel box cannot be used, or None."""
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        return f"degenerate box {tuple(box)} px in {scene.path.name}"
    if x1 < -0.5 or y1 < -0.5 or x2 > scene.width + 0.5 or y2 > scene.height + 0.5:
        return (
            f"box {tuple(np.round(box, 1))} px lies outside scene {scene.path.name} "
            f"({scene.width}x{scene.height})"
        )
    return None


def _scene_boxes_px(rows: Any, scene: _Scene, b: LabelBuilder) -> tuple[np.ndarray, np.ndarray]:
    """(float64 ``[N, 4]`` scene px, int64 ``[N]`` class ids) of a scene's usable rows."""
    from pipeline.georef import crs_to_scene_px

    geoms = (
        rows.geometry.to_crs(scene.crs) if rows.crs is not None and scene.crs is not None else rows.geometry
    )
    px = crs_to_scene_px(geoms.bounds.to_numpy(), scene.transform)
    ok = np.zeros(len(rows), bool)
    label_ids = np.zeros(len(rows), np.int64)
    for j, (i, name) in enumerate(zip(rows.index, rows["label"])):
        label = b.class_id(str(name), int(i))
        problem = None if label is None else _box_problem(px[j], scene)
        if problem is not None:
            b.issue(int(i), problem)
        elif label is not None:
            ok[j], label_ids[j] = True, label
    return px[ok], label_ids[ok]


def _chip_scene(
    scene: _Scene, boxes: np.ndarray, labels: np.ndarray, tiling: Any, min_visible: float
) -> list[LabeledImage]:
    """One LabeledImage per tile: boxes at least ``min_visible`` inside, in tile px, clipped."""
    from pipeline.georef import clip_boxes_px, scene_to_tile_px
    from pipeline.tiling import tile_scene

    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    images = []
    for tile in tile_scene(str(scene.path), scene.width, scene.height, tiling):
        width, height = tile.valid_width_px, tile.valid_height_px
        visible, nonempty = clip_boxes_px(
            scene_to_tile_px(boxes, tile.col_off_px, tile.row_off_px), width, height
        )
        visible_area = (visible[:, 2] - visible[:, 0]) * (visible[:, 3] - visible[:, 1])
        keep = nonempty & (visible_area >= min_visible * area)
        window = (tile.col_off_px, tile.row_off_px, width, height)
        images.append(
            LabeledImage(
                str(scene.path),
                window,
                visible[keep].astype(np.float32),
                labels[keep],
                str(scene.path),
                (height, width),
            )
        )
    return images


def read_geo_labels(
    path: Path,
    class_names: Sequence[str] | None = None,
    *,
    tile_size_px: int = 512,
    overlap_px: int = 0,
    min_visible: float = 0.5,
) -> LabelSet:
    """GeoParquet/GeoPackage label boxes over GeoTIFF scenes, chipped into tiles.

    Args:
        path: ``.parquet`` or ``.gpkg`` with ``geometry``, ``label`` and ``scene``.
        class_names: the classes in id order (others are issues); None: the
            ``label_id`` order of our own GeoParquet, else first seen.
        tile_size_px: tile edge.
        overlap_px: overlap between neighbouring tiles.
        min_visible: share of a box that must lie in a tile for the tile to keep it.

    Returns:
        One LabeledImage per tile (``window`` set, ``group`` = the scene).

    Raises:
        LabelError: the file cannot be read, lacks a column, or a scene is not a raster.
    """
    from pipeline.tiling import TilingConfig

    gdf = _read_frame(path)
    names, fixed = _class_names(gdf, class_names)
    b = LabelBuilder(path, names, fixed=fixed)
    tiling = TilingConfig(tile_size_px=tile_size_px, overlap_px=overlap_px)
    rows_ok = gdf[_usable_rows(gdf, b)]
    images: list[LabeledImage] = []
    for scene_name, rows in rows_ok.groupby(rows_ok["scene"].astype(str), sort=True):
        scene = _open_scene(path, scene_name, list(rows.index), b)
        if scene is not None:
            boxes, labels = _scene_boxes_px(rows, scene, b)
            images += _chip_scene(scene, boxes, labels, tiling, min_visible)
    return LabelSet(images, tuple(b.class_names), b.issues)
