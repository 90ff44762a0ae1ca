"""Issue 24: a validation that cannot rank epochs (AP50 0 every epoch) never chooses best/.

Before, epoch 0 (the untrained start) scored AP50 0.000 > -1 and became
``best/``; ``detect --model RUN`` then used it.  Now ``best/`` needs an AP50
above 0 that beats every earlier epoch; until then the run directory says
why in ``no_best.txt``, the summary says so, and ``resolve_checkpoint``
picks ``last/`` with that reason.
"""

from __future__ import annotations

from retinanet.checkpoint import resolve_checkpoint
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.model import build_model
from retinanet.train_report import NO_BEST_FILE, summary_lines
from retinanet.train_sink import write_epoch

CONFIG = ModelConfig(
    class_names=("Tree",),
    backbone="resnet18",
    anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX,
    band_config=BandConfig(mean=(100, 110, 80), std=(50, 50, 50)),
    tile_size_px=64,
)


def _epoch(run, tmp_path, model, epoch, ap50, best, num_gt=37):
    metrics = {"epoch": epoch, "global_step": epoch + 1, "loss": 1.0, "val_ap50": ap50, "val_map": ap50}
    metrics.update(val_num_gt=num_gt, score_thresholds={"Tree": 0.5})
    state = {"epoch": epoch, "global_step": epoch + 1, "best_ap50": best}
    return write_epoch(run, model, CONFIG, metrics, state, tmp_path / f"t{epoch}")[1]


def test_zero_ap_at_every_epoch_chooses_last_and_says_why(tmp_path):
    run, model = tmp_path / "run", build_model(CONFIG)
    best = _epoch(run, tmp_path, model, 0, 0.0, -1.0)
    best = _epoch(run, tmp_path, model, 1, 0.0, best)
    assert not (run / "best").exists() and (run / "last" / "meta.json").is_file()
    reason = (run / NO_BEST_FILE).read_text()
    assert "AP50 was 0.000 at every epoch (37 validation boxes, none found)" in reason
    path, note = resolve_checkpoint(run)  # what detect --model RUN and evaluate --model RUN use
    assert path == run / "last" and "could not rank the epochs" in note
    text = "\n".join(summary_lines(run))
    assert f"checkpoint: {run / 'last'} (last epoch). No best/: validation AP50 was 0.000" in text


def test_the_first_epoch_that_finds_something_becomes_best(tmp_path):
    run, model = tmp_path / "run", build_model(CONFIG)
    best = _epoch(run, tmp_path, model, 0, 0.0, -1.0)
    best = _epoch(run, tmp_path, model, 1, 0.25, best)
    assert (run / "best" / "meta.json").is_file() and not (run / NO_BEST_FILE).exists()
    best = _epoch(run, tmp_path, model, 2, 0.1, best)
    assert best == 0.25 and resolve_checkpoint(run)[0] == run / "best"


def test_no_validation_boxes_says_so(tmp_path):
    run = tmp_path / "run"
    _epoch(run, tmp_path, build_model(CONFIG), 0, -1.0, -1.0, num_gt=0)
    assert "hold no boxes of the trained classes" in (run / NO_BEST_FILE).read_text()
    assert "no boxes of the trained classes" in resolve_checkpoint(run)[1]
