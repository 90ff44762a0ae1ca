"""A STAC API to try ``detect --stac-search`` on: ``python -m tests.stac_demo [FOLDER]``.

Starts a moto S3 server and the pgstac STAC API (``tests/stac_server.py``) on
127.0.0.1, paints three 1536 x 1536 px scenes side by side (UTM 33N, 1 m), puts
them in ``s3://scenes/demo/``, seeds collection ``demo`` with their items,
creates bucket ``out`` and writes ``FOLDER/area.gpkg`` (an AOI over the first
scene and the west edge of the second, in EPSG:3857: any CRS works).  It prints
the environment and the commands, and runs until Ctrl-C.  The README's
commands are these; ``tests/integration/test_stac_api.py`` runs them.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SIZE_PX = 1536
COLLECTION = "demo"
SCENES_BUCKET, OUT_BUCKET = "scenes", "out"
X0, Y0 = 500000.0, 5000000.0


def _objects(i: int) -> list[tuple[int, int, int, int, int]]:
    """Squares of 16-30 px on a grid, band by position: the stand-in detector finds each once."""
    out = []
    for k, (col, row) in enumerate(
        (c, r) for r in range(100, SIZE_PX - 100, 220) for c in range(60, SIZE_PX - 60, 230)
    ):
        size = 16 + (k + i) % 15
        out.append((col, row, col + size, row + size, (k + i) % 3))
    return out


def write_demo(folder: Path, s3: Any, post_collection: Any, post_item: Any) -> Path:
    """Scenes to S3, items to the API, ``area.gpkg`` to ``folder``; returns the AOI's path."""
    import geopandas as gpd
    import shapely
    from rasterio.transform import Affine

    from tests.conftest import write_scene
    from tests.stac_items import collection, item

    for bucket in (SCENES_BUCKET, OUT_BUCKET):
        with contextlib.suppress(Exception):  # exists already
            s3.create_bucket(Bucket=bucket)
    items = []
    for i in range(3):
        transform = Affine(1.0, 0.0, X0 + i * SIZE_PX, 0.0, -1.0, Y0)
        path = write_scene(
            folder / f"scene_{i}.tif", _objects(i), width=SIZE_PX, height=SIZE_PX, transform=transform
        )
        s3.upload_file(str(path), SCENES_BUCKET, f"demo/scene_{i}.tif")
        items.append(
            item(f"scene_{i}", path, f"s3://{SCENES_BUCKET}/demo/scene_{i}.tif", collection=COLLECTION)
        )
    post_collection(collection(COLLECTION, items))
    for doc in items:
        post_item(doc)
    # the first scene and the west 400 m of the second, as a GeoPackage in Web Mercator
    area = shapely.box(X0 - 50, Y0 - SIZE_PX - 50, X0 + SIZE_PX + 400, Y0 + 50)
    aoi = folder / "area.gpkg"
    gpd.GeoDataFrame({"name": ["district"]}, geometry=[area], crs="EPSG:32633").to_crs("EPSG:3857").to_file(
        aoi
    )
    return aoi


@contextlib.contextmanager
def demo(folder: Path) -> Iterator[dict[str, str]]:
    """The S3 server, the STAC API and the seeded demo; yields the environment and URL."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port
    from tests.stac_server import stac_api

    port = free_port()
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3_server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    os.environ.update(env)
    try:
        with stac_api() as api:
            s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
            aoi = write_demo(folder, s3, api.add_collection, api.add_item)
            yield {**env, "STAC_URL": api.url, "AOI": str(aoi)}
    finally:
        s3_server.stop()


def main() -> None:
    """Run the demo until Ctrl-C (or SIGTERM)."""
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="aerialdet-stac-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with demo(folder) as env:
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            print(f"export {key}={env[key]}")
        print(f"# STAC API: {env['STAC_URL']}  (collection {COLLECTION}); AOI: {env['AOI']}")
        print(
            f"aerialdet detect --stac-search {env['STAC_URL']} --collections {COLLECTION} --aoi {env['AOI']} "
            f"--model standin:blobs --out s3://{OUT_BUCKET}/\naerialdet query s3://{OUT_BUCKET}/",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
