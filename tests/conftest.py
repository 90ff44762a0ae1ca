"""Shared fixtures: hand-checkable GeoTIFF scenes, RNG guard, a real S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

# Objects painted by `make_scene`: (x1, y1, x2, y2) scene px and the band (0=red,1=green,2=blue)
Obj = tuple[int, int, int, int, int]


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests must not leak RNG state into each other."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)


def write_scene(
    path: Path,
    objects: Sequence[Obj],
    *,
    width: int = 64,
    height: int = 64,
    transform: Affine = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0),
    crs: str | None = "EPSG:32633",
    dtype: str = "uint8",
    count: int = 3,
    nodata: float | None = None,
    fill: float = 0,
) -> Path:
    """Write a scene with solid objects (255 in one band) on a flat background."""
    data = np.full((count, height, width), fill, dtype=dtype)
    for x1, y1, x2, y2, band in objects:
        data[band, y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=dtype,
        transform=transform,
        tiled=width >= 256 and height >= 256,
        nodata=nodata,
    )
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def write_voc(
    path: Path,
    image: str,
    boxes: Sequence[Sequence[float]],
    *,
    labels: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write a Pascal VOC file naming ``image``: ``boxes`` xyxy px, each ``Tree`` unless ``labels`` says.

    ``size`` = (width, height) adds the ``<size>`` element.
    """
    names = labels or ["Tree"] * len(boxes)
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, (x1, y1, x2, y2) in zip(names, boxes, strict=True)
    )
    head = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    path.write_text(f"<annotation><filename>{image}</filename>{head}{body}</annotation>")
    return path


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_scene(name, objects, **kwargs)`` -> path of a GeoTIFF in tmp_path."""

    def factory(name: str, objects: Sequence[Obj] = (), **kwargs: object) -> Path:
        return write_scene(tmp_path / name, objects, **kwargs)  # type: ignore[arg-type]

    return factory


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where CUDA is absent (CI and this project's machines have no GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server():
    """moto in server mode: a real S3-speaking HTTP server on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout_s`` passes (False)."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
