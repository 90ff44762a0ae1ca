"""How a loaded RetinaNet's network runs in the model actors: ``aerialdet detect --backend``.

==========  ================================================================
``eager``   torch as built (the default)
``compile`` ``torch.compile`` (inductor, weight freezing) of the backbone +
            FPN and of the two head subnets; measured 1.16x eager on this
            project's CPU after a 7 s compile (bench/backends.py,
            bench/RESULTS.md). Compilation is lazy: it happens in each
            actor on its first batch, and again once per new batch shape
            (the last, smaller batch of a run), so it pays on long runs only
==========  ================================================================

Only the network is compiled.  Anchors, box decoding, score thresholds and
NMS stay eager torchvision, and so does ``model.head`` itself: the float32
cast hook of ``pipeline.detection.reduced_precision`` is registered on it per
call, and a compiled module would recompile on every new hook.  Detections
match eager within float32 rounding (tests/unit/retinanet/test_backends.py).

OpenVINO (1.21x eager bf16 on this CPU in bench/backends.py) is not a
backend here: it would need the network converted per actor and its own
runner; ``aerialdet export --format onnx`` gives the file it reads.

Importing this module loads no torch.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchvision.models.detection.retinanet import RetinaNet


class Backend(str, Enum):
    """What runs the network (``aerialdet detect --backend``)."""

    EAGER = "eager"
    COMPILE = "compile"


def apply_backend(model: RetinaNet, backend: Backend | str) -> RetinaNet:
    """``model`` with its network set to run on ``backend`` (in place; returned for chaining).

    Args:
        model: a torchvision RetinaNet in eval mode.
        backend: ``eager`` leaves it as it is; ``compile`` compiles the
            backbone and the head subnets with inductor and weight freezing
            (static shapes: one graph per batch shape).

    Returns:
        The same model.

    Raises:
        ValueError: an unknown backend name.
    """
    backend = Backend(backend)
    if backend is Backend.EAGER:
        return model
    # freezing folds the weights into the graph so inductor can prepack them for
    # oneDNN (PyTorch's CPU inference recipe); set per compile, not globally
    options = {"freezing": True}
    for module in (model.backbone, model.head.classification_head, model.head.regression_head):
        module.compile(dynamic=False, options=options)
    return model
