"""bench/retrain_real.py: row bands of the blocks setup and what --evaluate-only refuses (no training)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_voc

_SPEC = importlib.util.spec_from_file_location(
    "retrain_real", Path(__file__).resolve().parents[3] / "bench" / "retrain_real.py"
)
retrain_real = importlib.util.module_from_spec(_SPEC)
sys.modules["retrain_real"] = retrain_real
_SPEC.loader.exec_module(retrain_real)


def _image(data_dir, stem, boxes, height=100, width=40):
    """A ``height`` x ``width`` PNG and its VOC file with ``boxes`` (xyxy px)."""
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(data_dir / f"{stem}.png")
    write_voc(data_dir / f"{stem}.xml", f"{stem}.png", boxes)


def test_blocks_cut_each_image_into_train_validation_and_new_rows(tmp_path):
    # rows 0-59 train, 60-69 validate, 70-99 are new; one box in each band
    _image(tmp_path, "A", [(0, 10, 10, 20), (0, 61, 10, 68), (0, 80, 10, 95)])
    setup = retrain_real.Setup({"A": (0.6, 0.7)}, chips=False)
    parts, counts = retrain_real.split_images(tmp_path, setup)
    assert [p.name for p in parts["train"]] == ["A.rows0-60.xml"]
    assert [p.name for p in parts["val"]] == ["A.rows60-70.xml"]
    assert [p.name for p in parts["new"]] == ["A.rows70-100.xml"]
    assert counts == {"train": 1, "val": 1, "new": 1}
    assert Image.open(tmp_path / "A.rows70-100.png").size == (40, 30)
    # the new band's box is in the band's own rows
    assert retrain_real.voc_boxes(parts["new"][0]).tolist() == [[0.0, 10.0, 10.0, 25.0]]


def test_train_from_leaves_the_top_rows_out_and_keeps_the_other_bands(tmp_path):
    # blocks-half: rows 0-29 unused, 30-59 train; validation and new rows as in blocks
    _image(tmp_path, "A", [(0, 5, 10, 15), (0, 40, 10, 50), (0, 61, 10, 68), (0, 80, 10, 95)])
    setup = retrain_real.Setup({"A": (0.6, 0.7)}, chips=False, train_from=0.3)
    parts, counts = retrain_real.split_images(tmp_path, setup)
    assert [p.name for p in parts["train"]] == ["A.rows30-60.xml"]
    assert [p.name for p in parts["new"]] == ["A.rows70-100.xml"]
    assert counts == {"train": 1, "val": 1, "new": 1}
    assert retrain_real.voc_boxes(parts["train"][0]).tolist() == [[0.0, 10.0, 10.0, 20.0]]


def test_a_whole_new_image_is_listed_as_it_is(tmp_path):
    _image(tmp_path, "A", [(0, 10, 10, 20)])
    _image(tmp_path, "B", [(0, 10, 10, 20), (20, 10, 30, 20)])
    parts, counts = retrain_real.split_images(tmp_path, retrain_real.Setup({"A": (0.8, 1.0)}, False, ("B",)))
    assert [p.name for p in parts["new"]] == ["B.xml"] and counts["new"] == 2
    assert [p.name for p in parts["val"]] == ["A.rows80-100.xml"]


def test_a_crown_reaching_from_training_rows_into_new_rows_stops_the_cut(tmp_path):
    _image(tmp_path, "A", [(0, 55, 10, 75)])  # rows 55-75: across the 60-70 validation band
    with pytest.raises(SystemExit, match="A: 1 crown"):
        retrain_real.split_images(tmp_path, retrain_real.Setup({"A": (0.6, 0.7)}, chips=False))


def _run(tmp_path, labels, val_labels):
    run = tmp_path / "out" / "run"
    run.mkdir(parents=True)
    (run / "train_spec.json").write_text(json.dumps({"labels": labels, "val_labels": val_labels}))
    return tmp_path / "out"


def _evaluate_only(out, setup, parts, new=None):
    parser = retrain_real.argparse.ArgumentParser()
    args = retrain_real.argparse.Namespace(out=out, setup=setup, new=new)
    retrain_real._evaluate_only(parser, args, parts)


def test_evaluate_only_refuses_a_setup_the_run_did_not_train_on(tmp_path, capsys):
    closed, opened = retrain_real.CLOSED_STAND, retrain_real.OPEN_STAND
    out = _run(tmp_path, [f"/d/{closed}.train.xml", "/d/OSBS_029.tree.xml"], [f"/d/{closed}.val.xml"])
    blocks = {"train": [Path(f"/d/{closed}.rows0-60.xml"), Path(f"/d/{opened}.rows0-60.xml")], "new": []}
    with pytest.raises(SystemExit):
        _evaluate_only(out, "blocks", blocks)
    assert "not on --setup blocks's images" in capsys.readouterr().err


def test_evaluate_only_refuses_new_files_of_an_image_the_run_trained_on(tmp_path, capsys):
    closed, opened = retrain_real.CLOSED_STAND, retrain_real.OPEN_STAND
    out = _run(tmp_path, [f"/d/{closed}.train.xml"], [f"/d/{closed}.val.xml"])
    dense = {"train": [Path(f"/d/{closed}.rows0-80.xml")], "new": [Path(f"/d/{opened}.xml")]}
    with pytest.raises(SystemExit):
        _evaluate_only(out, "dense", dense, new=[Path(f"/d/{closed}.rows70-100.xml")])
    assert "include an image the run trained or validated on" in capsys.readouterr().err


def test_evaluate_only_on_a_blocks_run_scores_its_own_new_rows_pooled_and_per_image(tmp_path):
    from retinanet import ModelConfig, build_model
    from retinanet.checkpoint import save_dir

    _image(tmp_path, "A", [(0, 10, 10, 20), (0, 80, 10, 95)])
    _image(tmp_path, "B", [(0, 75, 10, 90), (20, 85, 30, 99)])
    setup = retrain_real.Setup({"A": (0.6, 0.7), "B": (0.6, 0.7)}, chips=False)
    parts, _ = retrain_real.split_images(tmp_path, setup)
    out = _run(tmp_path, [str(p) for p in parts["train"]], [str(p) for p in parts["val"]])
    config = ModelConfig(backbone="resnet18", class_names=("Tree",), tile_size_px=64)
    save_dir(
        out / "run" / "best", build_model(config), config, extra_meta={"score_thresholds": {"Tree": 0.5}}
    )
    _evaluate_only(out, "blocks", parts)  # the images trained, but these rows did not
    result = json.loads((out / "evaluated-A.rows70-100+B.rows70-100.json").read_text())
    assert result["new"] == ["A.rows70-100", "B.rows70-100"]
    assert result["num_gt"] == 3 and result["calibrated_threshold"] == 0.5
    assert set(result["per_image"]) == {"A.rows70-100", "B.rows70-100"}
    assert result["iou0.4"]["tp"] + result["iou0.4"]["fn"] == 3


def test_evaluate_only_names_a_missing_run_or_new_file_in_one_line(tmp_path, capsys):
    closed, opened = retrain_real.CLOSED_STAND, retrain_real.OPEN_STAND
    dense = {"train": [Path(f"/d/{closed}.rows0-80.xml")], "new": [Path(f"/d/{opened}.xml")]}
    with pytest.raises(SystemExit):
        _evaluate_only(tmp_path / "nothing", "dense", dense)
    assert "train_spec.json not found" in capsys.readouterr().err
    out = _run(tmp_path, [f"/d/{closed}.train.xml"], [f"/d/{closed}.val.xml"])
    _image(tmp_path, "C", [(0, 10, 10, 20)])
    (tmp_path / "C.png").unlink()
    with pytest.raises(SystemExit):
        _evaluate_only(out, "dense", dense, new=[tmp_path / "C.xml"])
    assert f"not found: {tmp_path / 'C.png'}" in capsys.readouterr().err
