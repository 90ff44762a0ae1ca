"""What a detect command's processes import at start: no more than they use (bench/startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    return set(out.stdout.split())


def test_a_worker_unpickling_a_read_task_or_the_actor_does_not_import_the_lifecycle():
    loaded = _modules_after("import pipeline.ray_stages")
    assert "pipeline.ray_stages" in loaded
    assert not {"pipeline.run", "pipeline.mosaic_index", "geopandas", "pandas"} & loaded


def test_ray_loggers_go_to_the_file_without_importing_ray_data_when_the_command_never_uses_it(tmp_path):
    code = f"""
import logging
from pathlib import Path
from jobs.ray_session import _ray_logger_to_file
log = Path({str(tmp_path)!r}) / "driver.log"
with _ray_logger_to_file(log, ray_data=False):
    logging.getLogger("ray").warning("to the file")
assert "to the file" in log.read_text()
"""
    assert "ray.data" not in _modules_after(code)
    assert "ray.data" in _modules_after(code.replace("ray_data=False", "ray_data=True"))
