"""RetinaNet for aerial imagery: what detect and retrain share.

torchvision owns the network (``torchvision.models.detection.RetinaNet``), its
focal loss, anchors and box coder.  This package owns the aerial configuration
around it:

==================  =====================================================
module              what it holds
==================  =====================================================
``config``          ``ModelConfig`` / ``BandConfig``: frozen, JSON-able
``model``           ``build_model(config)`` -> torchvision RetinaNet
``normalize``       raw band values -> model input (detect and train)
``checkpoint``      checkpoint directory: ``model.pt`` + ``meta.json``;
                    torchvision / DeepForest imports
``labeled_tiles``   COCO / VOC / CSV / GeoParquet labels -> one Dataset
``augment``         flips, 90-degree rotations, photometric jitter
``evaluate``        COCO mAP, AP50, precision/recall (pycocotools)
``synth``           synthetic georeferenced scenes + ground truth
``train_loop``      ``train_one_epoch`` / ``fit``: plain torch, no Ray
``ray_train``       the only ``import ray.train``: TorchTrainer wiring
==================  =====================================================
"""

from retinanet.config import BandConfig, ModelConfig
from retinanet.model import build_model

__all__ = ["BandConfig", "ModelConfig", "build_model"]
