import numpy as np
import pytest
import torch

from retinanet.checkpoint import save_dir
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.labeled_tiles import LabeledTiles, collate, read_labels
from retinanet.model import build_model
from retinanet.ray_train import init_from_checkpoint
from retinanet.synth import SynthConfig, write_scenes
from retinanet.train_loop import TrainConfig, evaluate_model, make_optimizer, train_one_epoch

BANDS = BandConfig(mean=(100, 110, 80), std=(50, 50, 50))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("s")
    write_scenes(d, num_scenes=1, cfg=SynthConfig(size_px=256, seam_tile_px=128, seam_overlap_px=0), seed=9)
    return d / "labels.parquet"


def cfg(classes):
    return ModelConfig(
        class_names=classes,
        backbone="resnet18",
        anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX,
        band_config=BANDS,
        tile_size_px=128,
    )


def test_train_steps_reduce_loss_on_one_batch(synth):
    torch.manual_seed(0)
    ls = read_labels([synth], ("vehicle", "building", "tree"), tile_size_px=128)
    model = build_model(cfg(ls.class_names))
    batch = collate([LabeledTiles(ls.images, BANDS.bands)[i] for i in range(2)])
    tc = TrainConfig(lr=1e-3, warmup_steps=1)
    opt = make_optimizer(model, tc)
    first = train_one_epoch(model, opt, [batch], BANDS, tc, start_step=0, total_steps=20)["loss"]
    for step in range(1, 12):
        last = train_one_epoch(model, opt, [batch], BANDS, tc, start_step=step, total_steps=20)["loss"]
    assert last < first * 0.7
    metrics = evaluate_model(model, [batch], BANDS, ls.class_names)
    assert set(metrics) == {"vehicle", "building", "tree", "overall"}


def test_finetune_from_one_class_adds_a_second(synth, tmp_path):
    one = read_labels([synth], ("vehicle",), tile_size_px=128)
    assert any("unknown class" in str(i) for i in one.issues)  # other classes reported, not silently used
    old_cfg = cfg(("vehicle",))
    old = build_model(old_cfg)
    torch.nn.init.normal_(old.head.classification_head.cls_logits.weight)
    save_dir(tmp_path / "one", old, old_cfg)

    new_cfg = cfg(("vehicle", "building"))
    model = build_model(new_cfg)
    carried = init_from_checkpoint(model, new_cfg, str(tmp_path / "one"))
    assert carried == ["vehicle"]
    w_old = old.head.classification_head.cls_logits.weight
    w_new = model.head.classification_head.cls_logits.weight
    assert w_new.shape[0] == 9 * 2
    for a in range(9):  # vehicle rows copied, building rows keep the prior init
        assert torch.equal(w_new[a * 2], w_old[a])
    assert torch.sigmoid(model.head.classification_head.cls_logits.bias[1]).item() == pytest.approx(
        0.01, rel=1e-3
    )
    assert torch.equal(model.backbone.body.conv1.weight, old.backbone.body.conv1.weight)
    two = read_labels([synth], ("vehicle", "building"), tile_size_px=128)
    batch = collate([LabeledTiles(two.images, BANDS.bands)[0]])
    tc = TrainConfig(warmup_steps=1)
    out = train_one_epoch(model, make_optimizer(model, tc), [batch], BANDS, tc, start_step=0, total_steps=2)
    assert np.isfinite(out["loss"])
