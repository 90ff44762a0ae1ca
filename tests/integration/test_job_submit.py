"""Submit jobs to a real `ray start --head` (token auth on) through the job API.

The head is started the way a deployment starts its nodes: RAY_AUTH_MODE=token
with the token in RAY_AUTH_TOKEN (nothing is written to ~/.ray), and the S3
server's endpoint and credentials in its environment, so its workers can read
s3:// while the submitter holds no S3 credentials at all.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import geopandas as gpd
import pytest

from pipeline.report import read_report
from tests.conftest import write_scene
from tests.integration.conftest import free_port, standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
RAY = str(Path(sys.executable).parent / "ray")
# a recognisable secret: it must never reach the submitter's output or the job's runtime env
NODE_SECRET = "node-held-" + secrets.token_hex(8)
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, s3_server):
    """`ray start --head --block` with token auth and the S3 credentials; killed with its cluster at the end.

    Yields (job API URL, token).
    """
    port, dash, agent = free_port(), free_port(), free_port()
    temp = tmp_path_factory.mktemp("rayhead")
    token = secrets.token_hex(32)
    # as with an activated venv: the job's `python` is this interpreter
    env = {
        **os.environ,
        **s3_server,
        "AWS_SECRET_ACCESS_KEY": NODE_SECRET,  # moto accepts any secret
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                pytest.fail("the job API answered without a token: token auth is off")
            except urllib.error.HTTPError as exc:  # 401 without a token: the API is up, auth on
                assert exc.code == 401
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"ray start --head exited: {proc.stdout.read()}")
                time.sleep(1)
        else:
            pytest.fail("the Ray job API did not come up on 127.0.0.1")
        # jobs are refused ("No available agent") until the head's agent is up
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{agent}/api/local_raylet_healthz", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the head's dashboard agent did not come up")
        yield url, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _submitter_env() -> dict[str, str]:
    """The submitting shell: endpoint and region, but no S3 credentials and no token variable."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS and not k.startswith("RAY_AUTH_")}
    env.pop("RAY_ADDRESS", None)
    return env


def _submit(url: str, token_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jobs.submit", *args, "--address", url, "--token-file", str(token_file)]
    return subprocess.run(cmd, cwd=ROOT, env=_submitter_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def token_file(ray_head, tmp_path):
    path = tmp_path / "ray_token"
    path.write_text(ray_head[1] + "\n")
    path.chmod(0o600)
    return path


def test_ray_job_submit_with_token(ray_head, tmp_path):
    """Ray's own CLI against the same head: the token from RAY_AUTH_TOKEN."""
    url, token = ray_head
    scenes = tmp_path / "scenes"
    write_scene(scenes / "a.tif", [(10, 10, 30, 30, 0), (100, 100, 120, 118, 2)], width=200, height=200)
    out = tmp_path / "out"
    env = {**_submitter_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT), "--"]
    cmd += ["python", "-m", "jobs.detect", *standin_detect_args(str(scenes), str(out))]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    report = read_report(out)
    assert report["counts"]["done"] == 1
    gdf = gpd.read_parquet(out)
    assert sorted(gdf["label"]) == ["blue", "red"]


def test_submit_detect_reads_s3_with_the_nodes_credentials(ray_head, token_file, s3_server, tmp_path):
    url, token = ray_head
    scene = write_scene(
        tmp_path / "a.tif", [(10, 10, 30, 30, 0), (100, 100, 120, 118, 2)], width=200, height=200
    )
    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="submit")
    s3.upload_file(str(scene), "submit", "scenes/a.tif")
    out = tmp_path / "out"

    result = _submit(url, token_file, "detect", *standin_detect_args("s3://submit/scenes/", str(out)))

    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed[-3000:]
    assert "SUCCEEDED" in result.stderr
    assert token not in printed and NODE_SECRET not in printed
    report = read_report(out)
    assert report["counts"]["done"] == 1
    gdf = gpd.read_parquet(out)
    assert sorted(gdf["label"]) == ["blue", "red"]
    assert set(gdf["scene"]) == {"s3://submit/scenes/a.tif"}
    # what Ray recorded for the job: the endpoint, never a credential
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
    job_id = result.stderr.split("submitted job ", 1)[1].split()[0]
    info = client.get_job_info(job_id)
    env_vars = info.runtime_env["env_vars"]
    assert env_vars["AWS_ENDPOINT_URL"] == s3_server["AWS_ENDPOINT_URL"]
    assert not set(env_vars) & set(CREDENTIALS)
    assert NODE_SECRET not in json.dumps(info.runtime_env) and token not in json.dumps(info.runtime_env)
    assert info.entrypoint.startswith("python -m jobs.detect s3://submit/scenes/")


def test_submit_exits_1_when_the_job_fails(ray_head, token_file, tmp_path):
    url, _ = ray_head
    out = tmp_path / "out"
    # a prefix with no scenes: the job itself exits 2 (user error), so it FAILED
    result = _submit(url, token_file, "detect", *standin_detect_args("s3://no-such-bucket/x/", str(out)))
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "FAILED" in result.stderr


def test_submit_refused_token_is_one_line_exit_2(ray_head, tmp_path):
    url, token = ray_head
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token-" + secrets.token_hex(8))
    result = _submit(url, wrong, "detect", *standin_detect_args("s3://submit/scenes/", str(tmp_path / "o")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.lower().startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert wrong.read_text() not in result.stderr and token not in result.stderr
