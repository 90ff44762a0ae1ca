"""An object-store secret given to `detect` appears in no file that Ray or aerialdet writes.

Before: every AWS_* variable went into Ray's runtime env, and Ray wrote it
into runtime_env_agent.log (mode 644) 32 times per run.  Now a private
cluster inherits the environment and Ray's logs live under OUT/_logs.
The same run checks the quiet output: one summary, no Ray internals.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
CANARY = "canary-SECRET-7f3a9c1e5b"


def _files_holding(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


def test_detect_over_s3_never_writes_the_secret(s3_server, tmp_path):
    scene = write_scene(tmp_path / "a.tif", [(10, 10, 30, 30, 0)], width=200, height=200)
    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="canary")
    s3.upload_file(str(scene), "canary", "in/a.tif")
    out = tmp_path / "out"
    env = {**os.environ, **s3_server, "AWS_SECRET_ACCESS_KEY": CANARY}
    started = time.time()
    args = standin_detect_args("s3://canary/in/", str(out))
    args.remove("--no-progress")
    result = subprocess.run(
        [sys.executable, "-m", "jobs.detect", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 scene(s) done" in result.stdout  # the secret worked: the scene was read from the bucket
    # Ray's logs were kept under OUT/_logs, and neither they nor anything else holds the secret
    assert (out / "_logs" / "ray").is_dir() and any((out / "_logs" / "ray").rglob("raylet*"))
    assert _files_holding(out, CANARY.encode()) == []
    for temp_dir in Path("/tmp").glob("aerialdet-ray-*"):  # any private cluster's temp dir still there
        assert _files_holding(temp_dir, CANARY.encode()) == []
    default_ray = Path("/tmp/ray")
    if default_ray.exists():
        # session_latest is a link that may dangle once old sessions are cleaned away: read the sessions only
        sessions = [p for p in default_ray.glob("session_*") if not p.is_symlink()]
        fresh = [p for p in sessions if p.stat().st_mtime >= started]
        assert fresh == []  # the private cluster kept out of the shared /tmp/ray
    # quiet: the summary on stdout, the progress bar alone on stderr, no Ray internals
    assert result.stdout.strip().count("\n") == 0, result.stdout
    for marker in ("Traceback", "core_worker", "INFO", "WARNING", "(MapWorker", "Started a local Ray"):
        assert marker not in result.stderr, result.stderr[-2000:]
