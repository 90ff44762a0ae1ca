import numpy as np
from pyproj import CRS

from pipeline.manifest import manifest_name, read_manifest
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.query import summary
from pipeline.reading import ReadConfig, open_scene
from pipeline.storage import LocalStore

UTM = CRS.from_epsg(32633)


def _write(tmp_path, name, boxes, run_id):
    from tests.conftest import write_scene

    scene = open_scene(str(write_scene(tmp_path / "in" / name, [], width=64, height=64)), ReadConfig())
    merged = MergedBoxes(
        np.array(boxes, float).reshape(-1, 4),
        np.full(len(boxes), 0.9, np.float32),
        np.zeros(len(boxes), np.int64),
    )
    return write_scene_detections(
        tmp_path / "out", scene, merged, class_names=("car",), out_crs=UTM, model_id="m@1", run_id=run_id
    )


def test_each_written_scene_is_recorded_with_its_run_and_checksum(tmp_path):
    _write(tmp_path, "a.tif", [[0, 0, 4, 4], [8, 8, 12, 12]], "run-1")
    path = _write(tmp_path, "b.tif", [[1, 1, 5, 5]], "run-2")  # a later run (a resume) adds a scene
    manifest = read_manifest(str(tmp_path / "out"), verify=True)
    assert manifest["runs"] == {
        "run-1": {"scenes": 1, "detections": 2},
        "run-2": {"scenes": 1, "detections": 1},
    }
    assert manifest["files_without_entry"] == [] and manifest["checksum_mismatch"] == []
    assert [e["scene"].endswith(n) for e, n in zip(manifest["scenes"], ["a.tif", "b.tif"])] == [True, True]
    # summary reads it: the dataset says which runs made it
    out = summary(tmp_path / "out")
    assert out["runs"]["run-2"]["scenes"] == 1 and out["num_detections"] == 3
    # a file changed behind the manifest's back, and one without an entry, are both reported
    path.write_bytes(path.read_bytes())  # same bytes: still matches
    store = LocalStore(tmp_path / "out")
    store.write_text(manifest_name(path.name), "{torn")
    again = read_manifest(store, verify=True)
    assert again["files_without_entry"] == [path.name] and set(again["runs"]) == {"run-1"}


def test_manifest_entries_are_not_detections(tmp_path):
    _write(tmp_path, "a.tif", [[0, 0, 4, 4]], "run-1")
    assert LocalStore(tmp_path / "out").list_parquet() == [
        p.name for p in (tmp_path / "out").glob("a-*.parquet")
    ]
