"""``aerialdet synth --gsd-m``: objects keep their sizes in metres at any GSD (issue 21's bench relies on it)."""

from __future__ import annotations

import numpy as np
import pytest

from retinanet.synth import CLASS_NAMES, SynthConfig, place_objects

# class -> (shortest, longest) side on the ground, metres (retinanet.synth's table)
SIDES_M = {"vehicle": (2.0, 4.5), "building": (9.0 * 0.7, 18.0), "tree": (3.0, 7.0)}


@pytest.mark.parametrize("gsd_m", [0.075, 0.15, 0.3, 0.6, 1.2])
def test_objects_keep_their_metre_sizes_at_any_gsd(gsd_m):
    extent_m = 300.0
    cfg = SynthConfig(size_px=round(extent_m / gsd_m), gsd_m=gsd_m)
    boxes_px, labels = place_objects(np.random.default_rng(3), cfg)
    assert len(boxes_px) > 50
    sides_m = (
        np.sort(np.stack([boxes_px[:, 2] - boxes_px[:, 0], boxes_px[:, 3] - boxes_px[:, 1]], 1), 1) * gsd_m
    )
    for label, name in enumerate(CLASS_NAMES):
        lo, hi = SIDES_M[name]
        mine = sides_m[labels == label]
        assert len(mine) > 0, name
        # whole pixels: each side is off by at most one pixel (and at least 2 px)
        slack = max(gsd_m, 2 * gsd_m - lo) + 1e-9
        assert (mine[:, 0] >= lo - slack).all() and (mine[:, 1] <= hi + slack).all(), (
            name,
            mine.min(),
            mine.max(),
        )
    vehicles = sides_m[labels == 0]
    assert np.allclose(vehicles.mean(axis=0), (2.0, 4.5), atol=gsd_m)
