"""detect's command line -> DetectJob (parsed by click, no Ray)."""

import os

from jobs.detect import _build_job, detect_command
from pipeline.standin import StandinLoader


def _job(tmp_path, out, *args):
    ctx = detect_command.make_context(
        "detect", [str(tmp_path), "--model", "standin:blobs", "--out", out, *args]
    )
    params = dict(ctx.params)
    source, out_dir = params.pop("source"), params.pop("out_dir")
    params.pop("model")
    return _build_job(source, out_dir, StandinLoader(), params)


def test_relative_out_becomes_absolute_for_the_workers(tmp_path, monkeypatch):
    # merge + write run in Ray workers, whose working directory need not be the driver's
    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path, "det/out")
    assert os.path.isabs(job.out_dir) and job.out_dir == str(tmp_path / "det" / "out")


def test_s3_out_is_left_as_given(tmp_path):
    assert _job(tmp_path, "s3://bucket/det").out_dir == "s3://bucket/det"


def test_unreachable_address_is_one_line_within_seconds(tmp_path):
    # issue 24: an --address nothing answers on hung 400 s with nothing said; now one line, exit 2
    import socket
    import time

    from click.testing import CliRunner

    from jobs.cli import _register_optional, cli
    from pipeline.standin import STANDIN_SOURCE

    _register_optional()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "in").mkdir()
    args = ["detect", str(tmp_path / "in"), "--model", STANDIN_SOURCE, "--out", str(tmp_path / "o")]
    started = time.time()
    result = CliRunner().invoke(cli, [*args, "--address", f"127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert f"--address 127.0.0.1:{port}: cannot reach a Ray cluster there" in result.output
    assert "Traceback" not in result.output and time.time() - started < 30


def test_s3_source_in_any_case_is_not_taken_for_a_missing_folder():
    # issue 20: `detect S3://bucket/scenes/` was refused as "does not exist"
    from jobs.detect import _check_source

    _check_source("S3://bucket/scenes/")  # no error: listed from S3 later


def test_backend_reaches_the_model_actors_loader(tmp_path):
    # --backend is carried by the loader each actor calls (retinanet.predictor.CheckpointLoader.load)
    from jobs.detect import _model_loader
    from retinanet import ModelConfig, build_model
    from retinanet.checkpoint import save_dir

    config = ModelConfig(backbone="resnet18", class_names=("car",), tile_size_px=64)
    save_dir(tmp_path / "ckpt", build_model(config), config)
    assert _model_loader(str(tmp_path / "ckpt"), "compile").backend == "compile"
    assert _model_loader(str(tmp_path / "ckpt")).backend == "eager"


def test_backend_other_than_eager_on_the_standin_is_one_line(tmp_path):
    from click.testing import CliRunner

    from jobs.cli import _register_optional, cli
    from pipeline.standin import STANDIN_SOURCE

    _register_optional()
    (tmp_path / "in").mkdir()
    args = ["detect", str(tmp_path / "in"), "--model", STANDIN_SOURCE, "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "--backend", "compile"])
    assert result.exit_code == 2 and "has no network to run on 'compile'" in result.output
    assert CliRunner().invoke(cli, [*args, "--backend", "openvino"]).exit_code == 2
