"""RetinaNet for aerial imagery: what detect and retrain share.

torchvision owns the network (``torchvision.models.detection.RetinaNet``), its
focal loss, anchors, box coder and input normalisation.  This package owns
the aerial configuration around it:

==================  =====================================================
module              what it holds
==================  =====================================================
``config``          ``ModelConfig`` / ``BandConfig``: frozen, JSON-able
``model``           ``build_model(config)`` -> torchvision RetinaNet that
                    scales raw bands itself (``image_mean``/``image_std``)
``checkpoint``      checkpoint directory: ``model.pt`` + ``meta.json``
                    (``checkpoint_meta``: meta.json, versions, limits;
                    ``checkpoint_weights``: weight files, shape checks;
                    ``checkpoint_import``: torchvision / DeepForest)
``predictor``       the model loader the detect pipeline runs
                    (``backends``: ``--backend`` eager / torch.compile)
``export``          checkpoint -> ONNX network; ``decode_detections``
``label_formats``   COCO / VOC / DeepForest CSV readers -> ``LabelSet``
``geo_labels``      GeoParquet / GeoPackage labels over scenes -> tiles
``labeled_tiles``   every format -> one training set (``label_images``:
                    pixels through ``pipeline.reading``, band statistics;
                    ``training_tiles``: the Dataset and sampler)
``augment``         flips, 90-degree rotations, photometric jitter
``evaluate``        COCO mAP, AP50, precision/recall (pycocotools)
``synth``           synthetic georeferenced scenes + ground truth
                    (``synth_mosaic``: overlapping scenes over one ground)
``class_map``       ``--map`` / ``--single-class``: label names -> classes
``val_split``       a held-out split that holds every trained class
``train_plan``      a training request -> model config, schedule, ``TrainSpec``
``train_spec``      ``TrainSpec``: what one training run is, JSON-able
``train_loop``      ``train_one_epoch`` / ``evaluate_model``: plain torch
``fit``             one worker's epoch loop behind ``Reporter`` and
                    ``CheckpointSink`` (no Ray)
``train_sink``      the run directory: last/, best/, metrics.jsonl
``ray_train``       the only ``import ray.train``: adapts ``fit`` to TorchTrainer
``train_report``    the driver's progress bar, summary and training.png
``errors``          ``CheckpointError``, ``LabelError``
==================  =====================================================

Importing the package loads nothing heavy; its names load on first use.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "BandConfig": "retinanet.config",
    "ModelConfig": "retinanet.config",
    "build_model": "retinanet.model",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("retinanet", _EXPORTS)
