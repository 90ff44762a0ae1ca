import json
from pathlib import Path

import geopandas as gpd
import jsonschema
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyproj import CRS

from pipeline.geoparquet import COLUMNS, read_geo_metadata
from pipeline.geoparquet import SCHEMA as ARROW_SCHEMA
from pipeline.merging import MergedBoxes
from pipeline.output import choose_output_crs, scene_output_path, write_scene_detections
from pipeline.query import connect, read_detections
from pipeline.types import SceneInfo

SCHEMA = json.loads(
    (Path(__file__).parents[3] / "pipeline" / "schema" / "geoparquet-1.1.schema.json").read_text()
)


def scene(uri, epsg, x0, y0, gsd=0.5):
    return SceneInfo(uri, 1000, 1000, 3, "uint8", CRS.from_epsg(epsg).to_wkt(), (gsd, 0.0, x0, 0.0, -gsd, y0))


def merged(n, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 900, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1)
    return MergedBoxes(boxes, rng.uniform(0.05, 1, n).astype(np.float32), rng.integers(0, 2, n))


def write(out, sc, m, crs=None):
    out_crs = crs or CRS.from_wkt(sc.crs_wkt)
    return write_scene_detections(
        out, sc, m, class_names=("car", "tree"), out_crs=out_crs, model_id="m@1", run_id="r1"
    )


def check_contract(path):
    meta = read_geo_metadata(path)
    jsonschema.validate(meta, SCHEMA)
    assert meta["version"] == "1.1.0" and meta["primary_column"] == "geometry"
    col = meta["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert tuple(pq.read_schema(path).names) == COLUMNS
    return meta


def test_scene_file_contract_and_readers(tmp_path):
    sc = scene("s3://b/a.tif", 32633, 500000, 5000000)
    path = write(tmp_path, sc, merged(50))
    assert path == scene_output_path(tmp_path, "s3://b/a.tif")
    meta = check_contract(path)
    assert CRS.from_json_dict(meta["columns"]["geometry"]["crs"]) == CRS.from_epsg(32633)
    # geopandas: CRS equal to the scene's, bbox column equal to geometry bounds
    gdf = gpd.read_parquet(path)
    assert gdf.crs == CRS.from_epsg(32633) and len(gdf) == 50
    # pyarrow: the covering struct equals the geometry bounds
    bbox = pq.read_table(path).column("bbox").combine_chunks()
    cover = np.stack([bbox.field(k).to_numpy() for k in ("xmin", "ymin", "xmax", "ymax")], 1)
    assert np.allclose(gdf.geometry.bounds.to_numpy(), cover)
    # pixel columns map to CRS by the affine: x = 500000 + 0.5 * col, y = 5000000 - 0.5 * row
    assert np.allclose(cover[:, 0], 500000 + 0.5 * gdf["xmin_px"])
    assert np.allclose(cover[:, 3], 5000000 - 0.5 * gdf["ymin_px"])
    # pyarrow dataset filter on the covering struct
    t = pads.dataset(path).to_table(filter=pads.field("bbox", "xmin") < 500100)
    assert t.num_rows == int((cover[:, 0] < 500100).sum())


def test_two_crs_dataset_is_reprojected_to_crs84_and_keeps_scene_crs(tmp_path):
    a = scene("a.tif", 32633, 500000, 5000000)
    b = scene("b.tif", 32632, 500000, 5000000)
    out_crs = choose_output_crs([a.crs_wkt, b.crs_wkt], None)
    assert out_crs == CRS.from_user_input("OGC:CRS84")
    pa_, pb = write(tmp_path, a, merged(10), out_crs), write(tmp_path, b, merged(10, 1), out_crs)
    for p in (pa_, pb):
        check_contract(p)
    gdf = gpd.read_parquet(tmp_path)  # a directory of files reads as one dataset
    assert gdf.crs == out_crs and set(gdf["scene_crs"]) == {"EPSG:32633", "EPSG:32632"}
    # zone 33 (central meridian 15E) vs zone 32 (9E), both at easting 500000
    lon_a = gdf[gdf.scene == "a.tif"].geometry.bounds["minx"].mean()
    lon_b = gdf[gdf.scene == "b.tif"].geometry.bounds["minx"].mean()
    assert 15.0 < lon_a < 15.02 and 9.0 < lon_b < 9.02
    con = connect()
    n = con.execute(
        f"SELECT count(*) FROM read_parquet('{tmp_path}/*.parquet') WHERE ST_Intersects(geometry, ST_MakeEnvelope(14, 40, 16, 50))"
    ).fetchone()[0]
    assert n == 10


def test_same_crs_scenes_keep_it():
    wkt = CRS.from_epsg(32633).to_wkt()
    assert choose_output_crs([wkt, wkt], None) == CRS.from_epsg(32633)
    assert choose_output_crs([wkt], "EPSG:3857") == CRS.from_epsg(3857)


def test_duckdb_bbox_query_and_spatial_order(tmp_path):
    sc = scene("a.tif", 32633, 500000, 5000000)
    path = write(tmp_path, sc, merged(400))
    con = connect()
    q = "SELECT count(*) FROM read_parquet(?) WHERE bbox.xmax >= 500100 AND bbox.xmin <= 500200 AND bbox.ymax >= 4999700 AND bbox.ymin <= 4999800"
    n = con.execute(q, [str(path)]).fetchone()[0]
    gdf = gpd.read_parquet(path)
    expect = int(gdf.intersects(__import__("shapely").box(500100, 4999700, 500200, 4999800)).sum())
    assert n == expect
    # Hilbert order: consecutive rows are close together (far closer than random order)
    c = gdf.geometry.centroid
    step = np.hypot(np.diff(c.x), np.diff(c.y)).mean()
    rand = np.hypot(
        np.diff(c.x.sample(frac=1, random_state=0)), np.diff(c.y.sample(frac=1, random_state=0))
    ).mean()
    assert step < rand / 3


def test_rows_follow_geopandas_hilbert_distance(tmp_path):
    # (was test_hilbert_index_is_a_curve: the hand-written curve is gone, geopandas' is the order now)
    path = write(tmp_path, scene("a.tif", 32633, 500000, 5000000), merged(300))
    distance = gpd.read_parquet(path).geometry.hilbert_distance().to_numpy()
    assert (np.diff(distance.astype(np.int64)) >= 0).all()


def test_file_schema_and_metadata_are_pinned(tmp_path):
    """The contract readers and `query` rely on: exact Arrow schema, metadata keys, `geo` keys."""
    path = write(tmp_path, scene("a.tif", 32633, 500000, 5000000), merged(20))
    schema = pq.read_schema(path)
    assert schema.remove_metadata() == ARROW_SCHEMA  # names, order (bbox second), types
    assert all(field.metadata is None for field in schema)  # no GeoArrow extension field metadata
    assert set(schema.metadata) == {b"geo", b"aerialdet"}  # no `pandas` key either
    meta = check_contract(path)
    assert set(meta) == {"version", "primary_column", "columns", "creator"}
    assert meta["creator"]["library"] == "geopandas"
    assert set(meta["columns"]) == {"geometry"}
    assert set(meta["columns"]["geometry"]) == {"encoding", "geometry_types", "crs", "bbox", "covering"}
    assert meta["columns"]["geometry"]["covering"] == {
        "bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}
    }
    rg = pq.ParquetFile(path).metadata.row_group(0)
    assert rg.column(0).compression == "ZSTD" and all(
        rg.column(j).statistics.has_min_max for j in range(1, 5)
    )


def test_non_polygon_geometry_is_refused():
    import pytest
    import shapely

    from pipeline.geoparquet import DetectionColumns, build_table, encode_geoparquet

    points = np.array([shapely.Point(0, 0)], dtype=object)
    cols = DetectionColumns(
        points,
        np.zeros((1, 4)),
        None,
        np.zeros(1, np.int64),
        ("car",),
        "a.tif",
        np.zeros((1, 4)),
        None,
        None,
        "EPSG:32633",
    )
    with pytest.raises(ValueError, match=r"\['Point'\]; the detections contract is one Polygon per row"):
        encode_geoparquet(build_table(cols), CRS.from_epsg(32633))


def test_write_is_atomic_no_temp_left(tmp_path):
    write(tmp_path, scene("a.tif", 32633, 0, 0), merged(5))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_empty_scene_still_valid(tmp_path):
    empty = MergedBoxes(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    p = write(tmp_path, scene("a.tif", 32633, 0, 0), empty)
    meta = check_contract(p)  # geometry_types ["Polygon"], not geopandas' [] for an empty frame
    assert "bbox" not in meta["columns"]["geometry"]  # no extent to declare
    assert len(gpd.read_parquet(p)) == 0
    # no row group without bbox statistics (issue 24: a validator's distribution check failed on one)
    assert pq.ParquetFile(p).metadata.num_row_groups == 0
    con = connect()
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [str(p)]).fetchone() == (0,)
    assert pads.dataset(p).to_table(filter=pads.field("bbox", "xmin") < 0).num_rows == 0
    # beside a scene with rows, the empty file reads as part of one dataset
    write(tmp_path, scene("b.tif", 32633, 0, 0), merged(7))
    assert len(read_detections(tmp_path)) == 7 and pads.dataset(tmp_path).count_rows() == 7


def test_bbox_filter_skips_most_row_groups(tmp_path):
    """Hilbert order + small row groups: pyarrow's own statistics prune a bbox query."""
    n = 100_000
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 20_000, (n, 2))
    m = MergedBoxes(np.concatenate([xy, xy + 10], 1), np.full(n, 0.5, np.float32), np.zeros(n, np.int64))
    sc = SceneInfo(
        "big.tif", 20_010, 20_010, 3, "uint8", CRS.from_epsg(32633).to_wkt(), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    )
    path = write(tmp_path, sc, m)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups >= 12
    flt = (
        (pads.field("bbox", "xmax") >= 1000)
        & (pads.field("bbox", "xmin") <= 1500)
        & (pads.field("bbox", "ymax") >= -1500)
        & (pads.field("bbox", "ymin") <= -1000)
    )
    (frag,) = pads.dataset(path).get_fragments()
    kept = [rg.id for f in frag.split_by_row_group(flt) for rg in f.row_groups]
    assert 1 <= len(kept) <= meta.num_row_groups // 4
    # and the kept row groups hold every matching row
    full = pads.dataset(path).to_table(filter=flt).num_rows
    assert full == int(
        (
            (xy[:, 0] + 10 >= 1000)
            & (xy[:, 0] <= 1500)
            & (-xy[:, 1] >= -1500 - 0)
            & (-xy[:, 1] - 10 <= -1000)
        ).sum()
    )


def test_aerialdet_metadata_names_the_scene_even_without_rows(tmp_path):
    from pipeline.geoparquet import read_aerialdet_metadata, write_geoparquet

    path = write(tmp_path, scene("/data/empty.tif", 32633, 500000.0, 4000000.0), merged(0))
    meta = read_aerialdet_metadata(path)
    assert meta["scene"] == "/data/empty.tif" and meta["class_names"] == ["car", "tree"]
    assert pq.read_table(path).num_rows == 0
    table = pq.read_table(path).replace_schema_metadata(None)
    plain = write_geoparquet(tmp_path / "plain.parquet", table, CRS.from_epsg(32633))
    assert read_aerialdet_metadata(plain) == {}
