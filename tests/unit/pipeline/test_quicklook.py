import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.quicklook import PALETTE
from pipeline.reading import ReadConfig, open_scene
from retinanet.synth import SynthConfig, write_scenes
from tests.unit.pipeline.test_query import write_detections

_register_optional()


def test_quicklook_draws_boxes_from_a_downsampled_read(tmp_path):
    (truth,) = write_scenes(tmp_path / "s", num_scenes=1, cfg=SynthConfig(size_px=2048), seed=1)
    scene = open_scene(str(truth.path), ReadConfig())
    big = np.argsort(-(truth.boxes_xyxy_px[:, 2] - truth.boxes_xyxy_px[:, 0]))[:5]  # the largest objects
    merged = MergedBoxes(truth.boxes_xyxy_px[big], np.full(5, 0.9, np.float32), truth.labels[big])
    write_scene_detections(
        tmp_path / "out",
        scene,
        merged,
        class_names=("vehicle", "building", "tree"),
        out_crs=CRS.from_epsg(32633),
        model_id="m",
        run_id="r",
    )
    png = tmp_path / "q.png"
    result = CliRunner().invoke(
        cli,
        [
            "quicklook",
            str(tmp_path / "out"),
            "--scene",
            "scene_000.tif",
            "-o",
            str(png),
            "--max-size-px",
            "512",
        ],
    )
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (512, 512, 3)  # 2048 px scene drawn at 1/4
    with rasterio.open(truth.path) as src:
        assert src.overviews(1) == [2, 4, 8, 16]  # so the decimated read comes from overviews
    names = sorted(
        {"vehicle", "building", "tree"} & {("vehicle", "building", "tree")[i] for i in truth.labels[big]}
    )
    for (x1, y1, x2, y2), label in zip(truth.boxes_xyxy_px[big] / 4, truth.labels[big]):
        color = PALETTE[names.index(("vehicle", "building", "tree")[label])]
        edge = image[int(round(y2)) - 1, int(x1) + 1 : int(x2) - 1]  # bottom edge of the drawn box
        assert (np.abs(edge.astype(int) - color).sum(axis=1) < 30).mean() > 0.5


def test_quicklook_into_a_missing_folder_is_one_line_and_creates_nothing(tmp_path):
    write_detections(tmp_path / "out", "/data/a.tif")
    target = tmp_path / "missing" / "x.png"
    result = CliRunner().invoke(
        cli, ["quicklook", str(tmp_path / "out"), "--scene", "a.tif", "-o", str(target)]
    )
    # before: the folder was created silently (then the scene was looked for)
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output and result.output.strip().count("\n") == 0
    assert not target.parent.exists()


def test_render_quicklook_creates_no_folder(tmp_path, make_scene):
    from pipeline.quicklook import render_quicklook

    scene = make_scene("a.tif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_quicklook(str(scene), np.zeros((0, 4)), [], np.zeros(0), tmp_path / "missing" / "x.png")
    assert not (tmp_path / "missing").exists()


def test_quicklook_of_an_s3_output_reads_the_scene_through_aws_endpoint_url(s3_server, tmp_path, make_scene):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="looks")
    scene = make_scene("a.tif", [(62, 12, 88, 38, 0)], width=100, height=100)
    client.upload_file(str(scene), "looks", "scenes/a.tif")
    write_detections(tmp_path / "out", "s3://looks/scenes/a.tif")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "looks", f"det/{path.relative_to(tmp_path / 'out')}")
    png = tmp_path / "q.png"
    result = CliRunner().invoke(cli, ["quicklook", "s3://looks/det/", "--scene", "a.tif", "-o", str(png)])
    # before: GDAL ignored AWS_ENDPOINT_URL and asked looks.s3.us-east-1.amazonaws.com (exit 2)
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (100, 100, 3) and image[75, 30].tolist() == [0, 0, 0]  # background
    assert image[25, 75].tolist() == [255, 0, 0]  # the red object, stretched
