import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinanet.labeled_tiles import LabeledTiles, read_labels, split_by_group
from retinanet.synth import SynthConfig, write_scenes
from tests.conftest import write_voc


@pytest.fixture
def chips(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(tmp_path / name)
    return tmp_path


def test_coco_with_bad_rows(chips):
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "categories": [{"id": 7, "name": "car"}, {"id": 9, "name": "tree"}],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 5]},
            {"image_id": 2, "category_id": 9, "bbox": [0, 0, 0, 5]},  # degenerate
            {"image_id": 2, "category_id": 9, "bbox": [45, 30, 10, 5]},  # out of image
            {"image_id": 3, "category_id": 7, "bbox": [0, 0, 5, 5]},  # unknown image
        ],
    }
    (chips / "l.json").write_text(json.dumps(coco))
    ls = read_labels([chips / "l.json"])
    a = next(im for im in ls.images if im.path.endswith("a.png"))
    assert a.boxes_xyxy_px.tolist() == [[1, 2, 11, 7]] and ls.class_names[a.labels[0]] == "car"
    messages = [str(i) for i in ls.issues]
    assert any("annotations[1]" in m and "degenerate" in m for m in messages)
    assert any("annotations[2]" in m and "outside" in m for m in messages)
    assert any("annotations[3]" in m and "unknown image_id" in m for m in messages)
    assert all("l.json" in m for m in messages)


def test_voc(chips):
    (chips / "a.xml").write_text(
        "<annotation><filename>a.png</filename>"
        "<object><name>car</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>13</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>car</name><bndbox><xmin>30</xmin><ymin>4</ymin><xmax>20</xmax><ymax>9</ymax></bndbox></object>"
        "</annotation>"
    )
    ls = read_labels([chips / "a.xml"])
    assert ls.images[0].boxes_xyxy_px.tolist() == [[3, 4, 13, 9]]
    assert len(ls.issues) == 1 and "a.xml object 1" in str(ls.issues[0])


def test_deepforest_csv(chips):
    (chips / "l.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "a.png,1,1,5,5,Tree\n"
        "missing.png,1,1,5,5,Tree\n"
        "b.png,1,1,60,5,Tree\n"
    )
    ls = read_labels([chips / "l.csv"])
    assert [len(im.labels) for im in sorted(ls.images, key=lambda i: i.path)] == [1, 0]
    rows = sorted(str(i.row) for i in ls.issues)
    assert rows == ["3", "4"]
    ds = LabeledTiles(ls.images, (1, 2, 3))
    image, target = ds[[im.path.endswith("a.png") for im in ls.images].index(True)]
    assert image.shape == (3, 40, 50) and target["boxes"].tolist() == [[1, 1, 5, 5]]


def test_geoparquet_labels_over_scenes_are_chipped(tmp_path):
    truths = write_scenes(
        tmp_path, num_scenes=2, cfg=SynthConfig(size_px=512, seam_tile_px=256, seam_overlap_px=0), seed=3
    )
    ls = read_labels([tmp_path / "labels.parquet"], tile_size_px=256)
    assert ls.class_names == ("vehicle", "building", "tree") and ls.issues == []
    assert len(ls.images) == 2 * 4 and {im.window[2] for im in ls.images} == {256}
    # every object whose box lies wholly inside a tile is in that tile's targets, in tile px
    truth = truths[0]
    x1, y1, x2, y2 = truth.boxes_xyxy_px[
        np.argmax((truth.boxes_xyxy_px[:, 2] < 250) & (truth.boxes_xyxy_px[:, 3] < 250))
    ]
    tile0 = next(im for im in ls.images if im.path == str(truth.path) and im.window[:2] == (0, 0))
    assert np.isclose(tile0.boxes_xyxy_px, [x1, y1, x2, y2], atol=1e-3).all(axis=1).any()
    train, val = split_by_group(ls.images, 0.5)
    assert {im.group for im in train}.isdisjoint({im.group for im in val})


def test_geopackage_labels_with_bad_rows(tmp_path):
    import geopandas as gpd
    import shapely

    (truth,) = write_scenes(tmp_path, num_scenes=1, cfg=SynthConfig(size_px=256), seed=2)
    gdf = gpd.read_parquet(tmp_path / "labels.parquet")[["geometry", "label", "scene"]]
    bad = gpd.GeoDataFrame(
        {"label": ["vehicle", "vehicle"], "scene": [str(truth.path), str(tmp_path / "gone.tif")]},
        geometry=[shapely.box(400000, 0, 400010, 10), shapely.box(500000, 4999990, 500010, 5000000)],
        crs=gdf.crs,
    )
    gpd.pd.concat([gdf, bad], ignore_index=True).to_file(tmp_path / "labels.gpkg", driver="GPKG")
    ls = read_labels([tmp_path / "labels.gpkg"], tile_size_px=256)
    assert sum(len(im.labels) for im in ls.images) == len(truth.labels)
    messages = sorted(str(i) for i in ls.issues)
    assert len(messages) == 2 and all("labels.gpkg" in m for m in messages)
    assert any("outside scene" in m for m in messages) and any(
        "unknown scene" in m and "gone.tif" in m for m in messages
    )


def _voc(path, image, objects):
    """A VOC file: objects = [(class, (xmin, ymin, xmax, ymax)), ...]."""
    return write_voc(path, image, [box for _, box in objects], labels=[name for name, _ in objects])


def test_a_class_first_seen_in_a_later_file_is_added(chips):
    # issue 11: DeepForest's SOAP_061.xml (Dead, Alive) read before OSBS_029.xml (Tree) turned
    # every Tree box into "unknown class", so validation on a Tree image had num_gt 0
    a = _voc(chips / "a.xml", "a.png", [("Dead", (1, 1, 5, 5)), ("Alive", (6, 1, 9, 5))])
    b = _voc(chips / "b.xml", "b.png", [("Tree", (2, 2, 8, 8)), ("Alive", (10, 2, 14, 8))])
    ls = read_labels([a, b])
    assert ls.class_names == ("Dead", "Alive", "Tree") and ls.issues == []
    labels = {Path(im.path).name: im.labels.tolist() for im in ls.images}
    assert labels == {"a.png": [0, 1], "b.png": [2, 1]}
    fixed = read_labels([a, b], ("Tree",))  # given classes stay closed
    assert fixed.class_names == ("Tree",) and len(fixed.issues) == 3


def test_relabel_maps_ids_to_a_superset(chips):
    ls = read_labels([_voc(chips / "a.xml", "a.png", [("car", (1, 1, 5, 5)), ("tree", (6, 1, 9, 5))])])
    moved = ls.relabel(("truck", "tree", "car"))
    assert moved.class_names == ("truck", "tree", "car") and moved.images[0].labels.tolist() == [2, 1]
    with pytest.raises(ValueError, match="car"):
        ls.relabel(("tree",))


def test_geo_labels_keep_polygons_only(tmp_path):
    import geopandas as gpd
    import shapely

    (truth,) = write_scenes(tmp_path, num_scenes=1, cfg=SynthConfig(size_px=256), seed=2)
    x0, y0 = 500000.0 + 30 * 0.3, 5000000.0 - 40 * 0.3  # scene px (30, 40)
    box = shapely.box(x0, y0 - 3, x0 + 3, y0)  # 10 x 10 px
    far = shapely.box(x0 + 30, y0 - 3, x0 + 33, y0)
    gdf = gpd.GeoDataFrame(
        {"label": ["car"] * 5, "scene": [str(truth.path)] * 4 + [None]},
        geometry=[
            box,
            shapely.MultiPolygon([box]),  # one part: a GIS export of a polygon layer
            shapely.MultiPolygon([box, far]),  # was read as one large box
            shapely.LineString([(x0, y0), (x0 + 3, y0 - 3)]),
            box,  # no scene
        ],
        crs="EPSG:32633",
    )
    gdf.to_parquet(tmp_path / "mixed.parquet")
    ls = read_labels([tmp_path / "mixed.parquet"], tile_size_px=256)
    (tile,) = ls.images
    assert np.allclose(tile.boxes_xyxy_px, [[30, 40, 40, 50]] * 2)
    messages = {int(i.row): i.message for i in ls.issues}
    assert sorted(messages) == [2, 3, 4]
    assert "MultiPolygon of 2 part(s)" in messages[2] and "LineString" in messages[3]
    assert "no scene" in messages[4]


def test_image_paths_are_absolute_for_workers_in_another_directory(chips, monkeypatch):
    # labels are read once on the driver; Ray Train workers run in another working directory,
    # so a path relative to the driver's (`aerialdet train a.xml` in the data folder) must not survive
    _voc(chips / "a.xml", "a.png", [("car", (1, 1, 5, 5))])
    monkeypatch.chdir(chips)
    (image,) = read_labels(["a.xml"]).images
    assert Path(image.path).is_absolute() and Path(image.path) == chips / "a.png"
