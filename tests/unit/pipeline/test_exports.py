import sys

import pipeline


def test_public_api_is_pinned():
    assert sorted(pipeline.__all__) == pipeline.__all__
    for name in pipeline.__all__:
        assert getattr(pipeline, name).__doc__, f"{name} has no docstring"


def test_importing_pipeline_does_not_import_ray():
    # Ray stays at the edge: only pipeline.ray_stages imports it, lazily
    import subprocess

    code = "import sys, pipeline, pipeline.query, pipeline.merging; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"
