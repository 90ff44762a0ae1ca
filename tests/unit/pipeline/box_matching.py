"""Compare two detectors' boxes for one tile: greedy IoU matching, then tolerances per precision.

The GPU tests of ``test_detection.py`` run the same random-weight RetinaNet on
the CPU (float32, the reference) and on CUDA in each ``Precision``, and need
more than equal counts: every detection must have a partner of the same label
at IoU >= 0.9 whose corners and score agree within the precision's tolerance.
A detection may lack a partner when its score is within the score tolerance
of the score threshold (it sits on the cut, so the other side may have dropped
it); under reduced precision also up to ``unmatched_share`` of the detections
(cross-class and cross-box NMS decisions flip when two scores are close).

Tolerances (``TOLERANCES``), reference float32 CPU against:

* fp32 CUDA (TF32 off): 1 px per corner, 0.02 score, none unmatched: only the
  summation order differs;
* fp16 autocast: 2 px, 0.03 score, 8 % unmatched (a 10-bit mantissa);
* bf16 autocast: 3 px, 0.05 score, 15 % unmatched (an 8-bit mantissa).

The reduced-precision figures come from bf16 autocast on the CPU against
float32 on the same test model (up to 0.9 px, 0.031 score, 10 % of a side unmatched,
all from NMS flips among its dense near-duplicate boxes), with room for
CUDA's kernels; tighten them from a GPU run (this project's machines have
no CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from pipeline.detection import Precision
from pipeline.types import TileDetections


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a matched pair may differ.

    Attributes:
        iou: lowest IoU of a match (same label only).
        box_px: largest difference of any corner coordinate, px.
        score: largest score difference; also the band above the score
            threshold in which a detection may go unmatched.
        unmatched_share: share of both sides' detections together that may
            go unmatched anywhere (NMS decisions that flip).
    """

    iou: float = 0.9
    box_px: float = 1.0
    score: float = 0.02
    unmatched_share: float = 0.0


TOLERANCES = {
    Precision.FP32: Tolerance(),
    Precision.FP16: Tolerance(box_px=2.0, score=0.03, unmatched_share=0.08),
    Precision.BF16: Tolerance(box_px=3.0, score=0.05, unmatched_share=0.15),
}


def greedy_match(a: TileDetections, b: TileDetections, iou_threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, iou)`` of same-label boxes, highest IoU first, each box used once, IoU >= threshold."""
    if not len(a) or not len(b):
        return []
    iou = box_iou(torch.from_numpy(a.boxes_xyxy_px), torch.from_numpy(b.boxes_xyxy_px)).numpy()
    iou = np.where(a.labels[:, None] == b.labels[None, :], iou, 0.0)  # (N_a, N_b), other labels never match
    pairs: list[tuple[int, int, float]] = []
    used_a, used_b = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < iou_threshold:
            break
        if i not in used_a and j not in used_b:
            used_a.add(int(i))
            used_b.add(int(j))
            pairs.append((int(i), int(j), float(iou[i, j])))
    return pairs


def detection_differences(
    reference: TileDetections, other: TileDetections, tolerance: Tolerance, score_threshold: float
) -> list[str]:
    """What breaks the tolerance, one line each (empty: the two agree)."""
    problems = []
    pairs = greedy_match(reference, other, tolerance.iou)
    for i, j, iou in pairs:
        corner = float(np.abs(reference.boxes_xyxy_px[i] - other.boxes_xyxy_px[j]).max())
        score = abs(float(reference.scores[i]) - float(other.scores[j]))
        if corner > tolerance.box_px or score > tolerance.score:
            problems.append(
                f"reference {i} ~ other {j} (IoU {iou:.3f}): corners {corner:.3f} px, score {score:.3f}"
            )
    on_the_cut = score_threshold + tolerance.score
    unmatched = []
    for name, dets, matched in (
        ("reference", reference, {p[0] for p in pairs}),
        ("other", other, {p[1] for p in pairs}),
    ):
        for k in sorted(set(range(len(dets))) - matched):
            if dets.scores[k] > on_the_cut:
                box = dets.boxes_xyxy_px[k].round(1).tolist()
                unmatched.append(
                    f"{name} {k} unmatched: label {dets.labels[k]}, score {dets.scores[k]:.3f}, box {box}"
                )
    allowed = int(tolerance.unmatched_share * (len(reference) + len(other)))  # both sides' unmatched count
    return problems + (unmatched if len(unmatched) > allowed else [])
