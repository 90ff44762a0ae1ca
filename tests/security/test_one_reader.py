"""Issue 25: a VRT renamed ``.tif`` never opens, whoever reads it (training, label readers, quicklook).

Before: detect refused it (GTiff only), but training, the label readers and
quicklook opened rasters with any GDAL driver.  A VRT is XML that points at
other files: this one maps the bytes of a mode-600 file into a band, so its
bytes became training pixels and a quicklook PNG; another points at an HTTP
address, which GDAL fetched.  Now every pixel read goes through
``pipeline.reading`` and its driver allow-list, and each reader refuses the
file with one line naming it.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from jobs.cli import _register_optional, cli
from retinanet.errors import LabelError
from retinanet.label_formats import LabeledImage, read_csv
from retinanet.labeled_tiles import (
    TileSampling,
    TrainingTiles,
    band_stats,
    check_bands,
    read_labels,
    read_train_data,
)
from tests.conftest import free_port, write_voc
from tests.unit.pipeline.test_query import write_detections

_register_optional()
SECRET = b"root-only SECRET"  # 16 bytes: one row of the VRT's band


def _raw_vrt(path: Path, secret: Path) -> Path:
    """A VRT (whatever ``path`` is called) whose band is the raw bytes of ``secret``, 16 x 4 px."""
    path.write_text(
        f"""<VRTDataset rasterXSize="16" rasterYSize="4">
  <SRS>EPSG:32633</SRS><GeoTransform>500000, 10, 0, 4000000, 0, -10</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">
    <SourceFilename relativetoVRT="0">{secret}</SourceFilename>
    <ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>16</LineOffset>
  </VRTRasterBand>
</VRTDataset>"""
    )
    return path


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET * 4)
    secret.chmod(0o600)
    return _raw_vrt(tmp_path / "evil.tif", secret)


def _is_one_line_naming(text: str, path: Path) -> bool:
    return str(path) in text and "VRT" in text and "\n" not in text.strip()


def test_training_refuses_a_vrt_renamed_tif(evil, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "val.png")
    val = write_voc(tmp_path / "val.xml", "val.png", [(0, 0, 4, 4)])
    voc = write_voc(tmp_path / "evil.xml", "evil.tif", [(0, 0, 4, 4)])
    with pytest.raises(LabelError) as info:
        read_train_data([voc], [val])  # before: one image to train on, of secret bytes
    assert _is_one_line_naming(str(info.value), evil), info.value
    # the training workers' reads refuse it too (an image whose size came with the labels)
    item = LabeledImage(
        str(evil), None, np.array([[0, 0, 4, 4]], np.float32), np.zeros(1, np.int64), "g", (4, 16)
    )
    tiles = TrainingTiles([item], (1,), TileSampling(tile_size_px=16, scale_range=(1.0, 1.0)))
    for read in (lambda: tiles[0], lambda: check_bands([item], (1,)), lambda: band_stats([item], (1,))):
        with pytest.raises(LabelError) as info:
            read()  # before: a tensor holding b"root-only SECRET", 1 band, and its statistics
        assert _is_one_line_naming(str(info.value), evil), info.value


def test_label_readers_refuse_a_vrt_renamed_tif_or_png(evil, tmp_path):
    (tmp_path / "evil.png").write_text(evil.read_text())  # PNG/JPEG are named drivers, VRT never
    csv = tmp_path / "l.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nevil.tif,0,0,4,4,x\nevil.png,0,0,4,4,x\n")
    labels = read_csv(csv)
    assert labels.images == []  # before: evil.tif and evil.png were images with a box each
    assert [
        _is_one_line_naming(str(issue), tmp_path / name)
        for issue, name in zip(labels.issues, ("evil.tif", "evil.png"))
    ] == [True, True], labels.issues
    gdf = gpd.GeoDataFrame(
        {"label": ["x"], "scene": ["evil.tif"]},
        geometry=[shapely.box(500000, 3999970, 500040, 4000000)],
        crs=32633,
    )
    gdf.to_parquet(tmp_path / "geo.parquet")
    with pytest.raises(LabelError) as info:
        read_labels([tmp_path / "geo.parquet"])  # before: a tile of the VRT
    assert _is_one_line_naming(str(info.value), evil), info.value


def test_quicklook_refuses_a_vrt_renamed_tif(evil, tmp_path):
    write_detections(tmp_path / "out", str(evil))
    png = tmp_path / "q.png"
    result = CliRunner().invoke(
        cli, ["quicklook", str(tmp_path / "out"), "--scene", "evil.tif", "-o", str(png)]
    )
    assert result.exit_code == 2, result.output  # before: exit 0 and a PNG of the secret bytes
    assert _is_one_line_naming(result.output.removeprefix("Error: "), evil), result.output
    assert not png.exists()


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        self.send_error(404)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def test_a_vrt_pointing_at_a_url_sends_no_request(tmp_path):
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "web.tif").write_text(
            f"""<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Byte" band="1">
  <SimpleSource><SourceFilename>/vsicurl/http://127.0.0.1:{port}/steal.tif</SourceFilename>
  <SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"""
        )
        write_detections(tmp_path / "out", str(tmp_path / "web.tif"))
        result = CliRunner().invoke(
            cli, ["quicklook", str(tmp_path / "out"), "--scene", "web.tif", "-o", str(tmp_path / "q.png")]
        )
        csv = tmp_path / "l.csv"
        csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nweb.tif,0,0,4,4,x\n")
        read_csv(csv)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 2, result.output
    assert _Counting.hits == []  # before: GDAL asked 127.0.0.1 for /steal.tif
