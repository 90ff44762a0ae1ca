"""Bad label files and bad train/synth arguments: one line, exit 2, no traceback (issue 13).

Each case was a raw traceback before: ``--bands a,b`` / ``--bands 0``, a
truncated VOC XML, a COCO file without ``bbox`` or ``file_name`` or that is a
list, a label file with a single image (Ray Train died with num_samples=0 and
left OUT/ray + train_spec.json behind, so a re-run refused without
--resume), a ``scene`` that is not a raster, ``synth`` into a path under a
file or a directory that cannot be written.  The CLI cases run before Ray
would start, so no cluster is needed.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

from jobs.synth import synth_command
from jobs.train import train_command
from retinanet.errors import LabelError
from retinanet.labeled_tiles import read_labels, read_train_data

BOX = {"xmin": 3, "ymin": 4, "xmax": 13, "ymax": 9}


def _voc(path, image, boxes=(BOX,)):
    objects = "".join(
        "<object><name>tree</name><bndbox>"
        + "".join(f"<{k}>{v}</{k}>" for k, v in b.items())
        + "</bndbox></object>"
        for b in boxes
    )
    path.write_text(f"<annotation><filename>{image}</filename>{objects}</annotation>")
    return path


@pytest.fixture
def chips(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(tmp_path / name)
    return tmp_path


def _coco(chips, **changes):
    doc = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
            {"image_id": 2, "category_id": 1, "bbox": [1, 2, 10, 5]},
        ],
    }
    doc.update(changes)
    (chips / "l.json").write_text(json.dumps(doc))
    return chips / "l.json"


def _non_raster_scene(chips):
    (chips / "scene.tif").write_text("not a raster, just text")
    gdf = gpd.GeoDataFrame(
        {"label": ["car"], "scene": ["scene.tif"]}, geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32633"
    )
    gdf.to_parquet(chips / "labels.parquet")
    return chips / "labels.parquet"


def _coco_list(chips):
    (chips / "l.json").write_text("[]")
    return chips / "l.json"


def _truncated_voc(chips):
    full = _voc(chips / "a.xml", "a.png").read_text()
    (chips / "a.xml").write_text(full[: len(full) // 2])
    return chips / "a.xml"


# name -> (label file builder, text the message must hold)
BAD_LABELS = {
    "truncated VOC XML": (_truncated_voc, "not valid XML"),
    "COCO without bbox": (
        lambda c: _coco(
            c, annotations=[{"image_id": 1, "category_id": 1}, {"image_id": 2, "category_id": 1}]
        ),
        "no 'bbox'",
    ),
    "COCO image without file_name": (
        lambda c: _coco(c, images=[{"id": 1}, {"id": 2, "file_name": "b.png"}]),
        "file_name",
    ),
    "COCO top-level list": (_coco_list, "got a JSON list"),
    "scene not a raster": (_non_raster_scene, "not a raster"),
}


def _one_error_line(result):
    """The command failed as a user error: exit 2, no traceback, one 'Error:' line; returns it."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("case", sorted(set(BAD_LABELS) - {"COCO without bbox"}))
def test_bad_label_file_raises_label_error_naming_the_file(chips, case):
    build, expected = BAD_LABELS[case]
    label_file = build(chips)
    with pytest.raises(LabelError, match=expected) as err:
        read_labels([label_file])
    assert str(label_file) in str(err.value) and "\n" not in str(err.value)


def test_coco_annotations_without_bbox_are_rows_left_out(chips):
    doc = {
        "annotations": [
            {"image_id": 1, "category_id": 1},
            {"image_id": 2, "category_id": 1, "bbox": [1, 2, 3]},
        ]
    }
    labels = read_labels([_coco(chips, **doc)])
    assert sorted(str(i.row) for i in labels.issues) == ["annotations[0]", "annotations[1]"]
    assert "no 'bbox'" in str(labels.issues[0]) and "not [x, y, width, height]" in str(labels.issues[1])
    assert all(len(im.labels) == 0 for im in labels.images)


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_train_with_a_bad_label_file_is_one_line_naming_the_file(chips, case):
    build, expected = BAD_LABELS[case]
    label_file = build(chips)
    out = chips / "run"
    result = CliRunner().invoke(train_command, [str(label_file), "--out", str(out)])
    line = _one_error_line(result)
    assert str(label_file) in line and expected in line
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("bands", ["a,b", "0", "1,,2"])
def test_train_bad_bands_are_usage_errors(chips, bands):
    label_file = _voc(chips / "a.xml", "a.png")
    result = CliRunner().invoke(
        train_command, [str(label_file), "--out", str(chips / "run"), "--bands", bands]
    )
    assert "--bands" in _one_error_line(result)
    assert not (chips / "run").exists()


def test_train_bands_beyond_the_images_bands(chips):
    files = [_voc(chips / "a.xml", "a.png"), _voc(chips / "b.xml", "b.png")]
    result = CliRunner().invoke(
        train_command, [*map(str, files), "--out", str(chips / "run"), "--bands", "1,2,5"]
    )
    line = _one_error_line(result)
    assert "--bands" in line and "has 3 band(s)" in line
    assert not (chips / "run").exists()


def test_single_image_is_refused_before_ray_and_writes_nothing(chips):
    label_file = _voc(chips / "a.xml", "a.png")
    with pytest.raises(LabelError, match="only 1 labeled image"):
        read_train_data([label_file])
    out = chips / "run"
    result = CliRunner().invoke(train_command, [str(label_file), "--out", str(out)])
    line = _one_error_line(result)
    assert str(label_file) in line and "--val" in line
    assert not out.exists()  # no OUT/ray, no train_spec.json: a corrected re-run needs no --resume


def test_single_image_trains_when_validation_is_given(chips):
    data = read_train_data([_voc(chips / "a.xml", "a.png")], [_voc(chips / "b.xml", "b.png")])
    assert [len(im.labels) for im in data.train] == [1] and [len(im.labels) for im in data.val] == [1]


def test_labels_with_no_usable_box(chips):
    bad = {"xmin": 30, "ymin": 4, "xmax": 20, "ymax": 9}  # xmax < xmin
    files = [_voc(chips / "a.xml", "a.png", [bad]), _voc(chips / "b.xml", "b.png", [bad])]
    with pytest.raises(LabelError, match="no usable label box.*degenerate"):
        read_train_data(files)


def test_train_out_under_a_file(chips):
    files = [_voc(chips / "a.xml", "a.png"), _voc(chips / "b.xml", "b.png")]
    (chips / "file").write_text("x")
    result = CliRunner().invoke(train_command, [*map(str, files), "--out", str(chips / "file" / "run")])
    assert "is a file" in _one_error_line(result)


def test_synth_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "scenes"
    result = CliRunner().invoke(synth_command, [str(target), "--size-px", "64"])
    line = _one_error_line(result)
    assert str(target) in line


def test_synth_into_a_directory_that_cannot_be_written(tmp_path):
    target = "/proc/aerialdet-synth"  # not writable even for root
    result = CliRunner().invoke(synth_command, [target, "--size-px", "64"])
    assert target in _one_error_line(result)


@pytest.mark.parametrize("flag", ["--init", "--backbone-weights"])
def test_train_with_a_weights_file_that_is_not_one_is_one_line(chips, flag):
    files = [_voc(chips / "a.xml", "a.png"), _voc(chips / "b.xml", "b.png")]
    (chips / "notes.pt").write_text("not torch weights")
    out = chips / "run"
    result = CliRunner().invoke(
        train_command, [*map(str, files), "--out", str(out), flag, str(chips / "notes.pt")]
    )
    line = _one_error_line(result)
    assert flag in line and "notes.pt" in line
    assert not out.exists()  # refused before anything was written
