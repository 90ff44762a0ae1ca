"""Review over S3: scenes and detections in a bucket (moto's real S3 server on 127.0.0.1), tiles and boxes served."""

from __future__ import annotations

import boto3
import numpy as np
from morecantile import tms

from pipeline.reading import ReadConfig
from tests.review_helpers import CLASSES, make_review_case


def test_scenes_and_detections_in_a_bucket(tmp_path, s3_server):
    from jobs.review_session import open_session
    from pipeline.merging import MergedBoxes
    from pipeline.output import encode_scene_detections, write_scene_file
    from pipeline.reading import open_scene

    case = make_review_case(tmp_path)
    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="review")
    uris = []
    for scene in case.scenes:
        name = scene.rsplit("/", 1)[1]
        s3.upload_file(scene, "review", f"scenes/{name}")
        uri = f"s3://review/scenes/{name}"
        info = open_scene(uri, ReadConfig())
        merged = MergedBoxes(np.array([[40.0, 40.0, 72.0, 72.0]]), np.array([0.9], np.float32), np.array([0]))
        data = encode_scene_detections(
            info, merged, class_names=CLASSES, out_crs=_utm(), model_id="m", run_id="r"
        )
        write_scene_file("s3://review/det", uri, data, num_detections=1, model_id="m", run_id="r")
        uris.append(uri)
    session = open_session(
        "s3://review/det", tuple(uris), tmp_path / "labels.parquet",
        thresholds={}, class_names=CLASSES, reviewer="ann", read_config=ReadConfig(),
    )  # fmt: skip
    assert len(session.detections) == 2 and len(session.state.rows) == 2
    bounds = session.config()["scenes"][0]["bbox"]
    assert len(session.viewport(bounds, [], None)["items"]) == 1
    mercator = tms.get("WebMercatorQuad")
    tile = mercator.tile(*mercator.lnglat((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2), 17)
    assert session.tile(0, tile.z, tile.x, tile.y).startswith(b"\x89PNG")


def _utm():
    from pyproj import CRS

    return CRS.from_epsg(32633)
