"""Issue 24: labels whose classes disagree (NEON's Tree vs Alive/Dead) -> one trained class, validated.

Label files shaped like DeepForest's NEON sample data: two DeepForest CSV files
labelled ``Tree``, one labelled ``Alive``/``Dead``.  Read as they are, the run
trained three classes and held out the Alive/Dead image, so validation held
no box of a trained class.  Plain code, no Ray: ``read_train_data`` and
``plan_training`` as ``aerialdet train`` calls them, and ``fit`` in-process.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jobs.train import train_command, train_options
from retinanet.class_map import ClassMap, parse_rename
from retinanet.errors import LabelError
from retinanet.labeled_tiles import read_train_data
from retinanet.train_plan import TrainPlanError, plan_training

TO_TREE = (("Alive", "Tree"), ("Dead", "Tree"))


def _chip(folder, name, squares, size=64):
    """A 64 px PNG chip with green squares (x, y, side, label) and its DeepForest CSV."""
    pixels = np.full((size, size, 3), 90, np.uint8)
    for x, y, side, _ in squares:
        pixels[y : y + side, x : x + side] = (30, 170, 40)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    rows = [f"{name}.png,{x},{y},{x + s},{y + s},{label}" for x, y, s, label in squares]
    (folder / f"{name}.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "\n".join(rows) + "\n")
    return str(folder / f"{name}.csv")


def neon_like(folder):
    """Two files of Tree boxes, one of Alive/Dead boxes (DeepForest's NEON sample data, in small)."""
    return [
        _chip(folder, "tree_a", [(6, 8, 14, "Tree"), (36, 30, 18, "Tree")]),
        _chip(folder, "tree_b", [(10, 30, 16, "Tree"), (40, 6, 12, "Tree")]),
        _chip(folder, "alive_dead", [(4, 4, 12, "Alive"), (30, 30, 14, "Dead"), (44, 6, 10, "Alive")]),
    ]


def _opts(tmp_path, labels, *args):
    ctx = train_command.make_context("train", [*labels, "--out", str(tmp_path / "run"), *args])
    return train_options(ctx.params)


def test_with_the_map_the_run_trains_one_class_whose_validation_has_boxes(tmp_path):
    labels = neon_like(tmp_path)
    opts = _opts(tmp_path, labels, "--classes", "Tree", "--map", "Alive=Tree,Dead=Tree", "--steps", "2")
    plan = plan_training(opts)
    assert plan.spec.model.class_names == ("Tree",)
    assert plan.data.issues == []  # no Alive/Dead row left out: all became Tree
    train, val = (plan.data.objects_per_class(part)["Tree"] for part in (plan.data.train, plan.data.val))
    assert train > 0 and val > 0 and train + val == 7
    assert plan.spec.class_map == TO_TREE  # recorded in train_spec.json, for --resume


def test_a_single_class_trains_every_label_as_it(tmp_path):
    plan = plan_training(_opts(tmp_path, neon_like(tmp_path), "--single-class", "Tree", "--steps", "2"))
    assert plan.spec.model.class_names == ("Tree",) and plan.data.issues == []
    assert sum(plan.data.objects_per_class(plan.data.train + plan.data.val).values()) == 7


def test_without_a_map_a_class_labelled_in_one_image_only_is_refused_in_one_line(tmp_path):
    # before: three classes, validation = the Alive/Dead image, AP50 0 at every epoch
    labels = neon_like(tmp_path)
    with pytest.raises(TrainPlanError) as err:
        plan_training(_opts(tmp_path, labels, "--steps", "2"))
    message = str(err.value)
    assert "\n" not in message and "Alive only in" in message and "Dead only in" in message
    assert str(tmp_path / "alive_dead.png") in message and "--map" in message and "--val" in message
    assert message.startswith(f"{labels[0]} (and 2 more): ")


def test_the_cli_refuses_the_unmapped_labels_before_anything_runs(tmp_path):
    labels = neon_like(tmp_path)
    result = CliRunner().invoke(train_command, [*labels, "--out", str(tmp_path / "run"), "--steps", "2"])
    assert result.exit_code == 2 and "Alive only in" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_classes_alone_leave_other_labels_out_as_counted_label_issues(tmp_path):
    plan = plan_training(_opts(tmp_path, neon_like(tmp_path), "--classes", "Tree", "--steps", "2"))
    assert plan.spec.model.class_names == ("Tree",) and len(plan.data.issues) == 3
    assert "unknown class 'Alive'" in str(plan.data.issues[0])
    assert any(line.startswith("warning: 3 label row(s) left out") for line in plan.lines)


def test_a_map_name_no_label_holds_is_refused_naming_the_files(tmp_path):
    labels = neon_like(tmp_path)
    with pytest.raises(LabelError, match=r"--map alive=Tree: no box in .*tree_a.csv \(and 2 more\)") as err:
        read_train_data(labels, class_map=ClassMap(classes=("Tree",), rename=(("alive", "Tree"),)))
    assert "unknown class 'Alive'" in str(err.value)  # the first row left out shows the label meant


@pytest.mark.parametrize(
    "args, hint",
    [
        (["--map", "Alive"], "LABEL=CLASS"),
        (["--map", "Alive=Tree,Alive=Bush"], "renamed twice"),
        (["--classes", "Tree", "--map", "Alive=Bush"], "not a class of --classes Tree"),
        (["--single-class", "Tree", "--map", "Alive=Tree"], "leave out --map"),
        (["--single-class", "Tree", "--classes", "Bush"], "leave out --classes"),
    ],
)
def test_contradictory_class_options_are_one_line_usage_errors(tmp_path, args, hint):
    labels = neon_like(tmp_path)
    result = CliRunner().invoke(train_command, [*labels, "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2 and hint in result.output and "Traceback" not in result.output


def test_parse_rename():
    assert parse_rename("Alive=Tree, Dead = Tree") == TO_TREE
    with pytest.raises(ValueError, match="LABEL=CLASS"):
        parse_rename("Alive=")


def test_a_resumed_run_reads_its_labels_with_the_map_it_was_started_with(tmp_path):
    from retinanet.train_spec import SPEC_FILE, spec_to_json

    labels = neon_like(tmp_path)
    plan = plan_training(_opts(tmp_path, labels, "--map", "Alive=Tree,Dead=Tree", "--steps", "2"))
    (tmp_path / "run").mkdir()
    import json

    (tmp_path / "run" / SPEC_FILE).write_text(json.dumps(spec_to_json(plan.spec)))
    resumed = plan_training(dataclasses.replace(_opts(tmp_path, labels, "--steps", "2"), resume=True))
    assert resumed.spec.model.class_names == ("Tree",) and resumed.data.issues == []
    assert resumed.spec.class_map == TO_TREE


def test_explicit_validation_labels_without_a_trained_class_are_warned_about(tmp_path):
    labels = neon_like(tmp_path)
    opts = _opts(tmp_path, labels[:1] + labels[2:], "--val", labels[1], "--steps", "2")
    lines = plan_training(opts).lines
    assert any("validation images hold no box of class(es) Alive, Dead" in line for line in lines)


def test_the_mapped_run_trains_and_validates_on_boxes(tmp_path):
    # fit in-process (no Ray): one step of one class, validation measures its boxes
    from retinanet.fit import fit
    from retinanet.train_report import METRICS_FILE, read_metrics

    opts = _opts(tmp_path, neon_like(tmp_path), "--map", "Alive=Tree,Dead=Tree", "--tile-size-px", "64")
    plan = plan_training(
        dataclasses.replace(opts, steps=1, max_steps_per_epoch=1, batch_size=1, augment=False)
    )
    spec = dataclasses.replace(plan.spec, train=dataclasses.replace(plan.spec.train, epochs=1, total_steps=1))

    class Quiet:
        def report(self, metrics, checkpoint_dir):
            pass

    fit(spec, plan.data, Quiet())
    (row,) = read_metrics(tmp_path / "run" / METRICS_FILE)
    assert row["val_num_gt"] > 0 and set(row["val_per_class"]) == {"Tree"}
