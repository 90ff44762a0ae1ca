"""finish_scene: the per-scene merge + score floor + write that ray_stages runs as a Ray task."""

import numpy as np
import pyarrow.parquet as pq
from pyproj import CRS

from pipeline.finishing import FinishSettings, finish_scene, keep_scores, prepare_scene, write_prepared
from pipeline.merging import MergeConfig, MergedBoxes
from pipeline.output import scene_output_name
from pipeline.reading import ReadConfig, open_scene
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import TileDetections

UTM = CRS.from_epsg(32633)


def _scene(tmp_path, name="a.tif"):
    from tests.conftest import write_scene

    return open_scene(str(write_scene(tmp_path / "in" / name, [], width=300, height=200)), ReadConfig())


def _settings(tmp_path, **kw):
    base = dict(
        out_dir=str(tmp_path / "out"),
        out_crs_wkt=UTM.to_wkt(),
        merge=MergeConfig(),
        class_names=("car", "tree"),
        min_score_per_class=None,
        model_id="m@1",
        run_id="run-1",
        replace=False,
    )
    return FinishSettings(**{**base, **kw})


def _tiles(scene):
    """Two overlapping tiles that both see one object on their seam, plus a low-score tree."""
    plan = tile_scene(
        scene.uri, scene.width_px, scene.height_px, TilingConfig(tile_size_px=200, overlap_px=100)
    )
    left, right = plan[0], plan[1]
    # the car spans scene px x 140..160: left tile sees it at 140..160, right (offset 100) at 40..60
    return [
        TileDetections(
            left, np.array([[140, 10, 160, 30]], np.float32), np.array([0.9], np.float32), np.array([0])
        ),
        TileDetections(
            right,
            np.array([[40, 10, 60, 30], [150, 150, 170, 170]], np.float32),
            np.array([0.9, 0.2], np.float32),
            np.array([0, 1]),
        ),
    ]


def test_finish_scene_merges_seams_and_writes_once(tmp_path):
    scene = _scene(tmp_path)
    outcome = finish_scene(scene, _tiles(scene), _settings(tmp_path))
    assert outcome.status == "done" and outcome.error is None
    table = pq.read_table(outcome.output)
    assert outcome.num_detections == table.num_rows == 2  # the seam car once, the tree once
    assert sorted(table.column("label").to_pylist()) == ["car", "tree"]
    assert set(table.column("run_id").to_pylist()) == {"run-1"}
    # a second run finding the output written keeps it (write-once) and says so
    again = finish_scene(scene, _tiles(scene), _settings(tmp_path, run_id="run-2"))
    assert again.status == "exists" and again.output.endswith(scene_output_name(scene.uri))
    assert set(pq.read_table(outcome.output).column("run_id").to_pylist()) == {"run-1"}


def test_finish_scene_applies_the_score_floor_per_class(tmp_path):
    scene = _scene(tmp_path)
    outcome = finish_scene(scene, _tiles(scene), _settings(tmp_path, min_score_per_class=(0.5, 0.1)))
    assert outcome.num_detections == 2
    outcome = finish_scene(
        scene, _tiles(scene), _settings(tmp_path, min_score_per_class=(0.5, 0.3), replace=True)
    )
    assert outcome.num_detections == 1
    assert pq.read_table(outcome.output).column("label").to_pylist() == ["car"]


def test_finish_scene_failure_names_the_scene_and_does_not_raise(tmp_path):
    scene = _scene(tmp_path)
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    outcome = finish_scene(scene, _tiles(scene), _settings(tmp_path))
    assert outcome.status == "failed" and outcome.output is None
    assert scene.uri in outcome.error and "writing failed" in outcome.error


def test_keep_scores_none_keeps_everything():
    merged = MergedBoxes(
        np.zeros((3, 4), np.float32), np.array([0.1, 0.5, 0.9], np.float32), np.array([0, 1, 0])
    )
    assert keep_scores(merged, None) is merged
    kept = keep_scores(merged, (0.95, 0.4))
    assert kept.scores.tolist() == [0.5] and kept.labels.tolist() == [1]


def test_prepare_then_write_is_finish_in_two_halves(tmp_path):
    # the Ray task prepares (merge + encode), the driver writes with its own store
    from pipeline.storage import open_store

    scene = _scene(tmp_path)
    prepared = prepare_scene(scene, _tiles(scene), _settings(tmp_path))
    assert prepared.error is None and prepared.num_detections == 2 and prepared.data[:4] == b"PAR1"
    assert not (tmp_path / "out").exists()  # preparing writes nothing
    outcome = write_prepared(open_store(str(tmp_path / "out")), scene, prepared, _settings(tmp_path))
    assert outcome.status == "done" and pq.read_table(outcome.output).num_rows == 2


def test_prepare_failure_is_returned_not_raised(tmp_path):
    scene = _scene(tmp_path)
    bad = _settings(tmp_path, min_score_per_class=(0.5,))  # one floor for two classes: indexing fails
    prepared = prepare_scene(scene, _tiles(scene), bad)
    assert prepared.data == b"" and "merging failed" in prepared.error and scene.uri in prepared.error
    from pipeline.storage import open_store

    outcome = write_prepared(open_store(str(tmp_path / "out")), scene, prepared, bad)
    assert outcome.status == "failed" and outcome.error == prepared.error
    assert not list((tmp_path / "out").glob("*.parquet"))
