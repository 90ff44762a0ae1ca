"""Issue 24: ``evaluate --map`` scores ground truth labelled Alive/Dead against a Tree model."""

from __future__ import annotations

from tests.conftest import write_voc
from tests.unit.jobs.test_evaluate_cli import _chip_detections, _evaluate


def test_the_map_renames_ground_truth_classes_before_scoring(tmp_path):
    out = _chip_detections(tmp_path)  # a Tree model's detections of chip a
    gt = write_voc(
        tmp_path / "neon.xml", "a.tif", [(10, 10, 30, 30), (50, 50, 70, 70)], labels=["Alive", "Dead"]
    )
    _, unmapped = _evaluate(out, gt, "--json", "--score", "0.5")
    assert unmapped["Tree"]["num_gt"] == 0 and unmapped["Alive"]["num_gt"] == 1  # before: nothing to match
    result, mapped = _evaluate(out, gt, "--json", "--score", "0.5", "--map", "Alive=Tree,Dead=Tree")
    assert result.exit_code == 0, result.output
    assert (mapped["Tree"]["num_gt"], mapped["Tree"]["tp"]) == (2, 1) and "Alive" not in mapped


def test_a_map_name_the_ground_truth_lacks_is_one_line(tmp_path):
    out = _chip_detections(tmp_path)
    result, _ = _evaluate(out, tmp_path / "a.xml", "--map", "alive=Tree")
    assert (
        result.exit_code == 2
        and "--map alive=Tree: " in result.output
        and "its labels: Tree" in result.output
    )
    assert "Traceback" not in result.output
