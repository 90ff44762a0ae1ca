import subprocess
import sys

import pipeline

PUBLIC_API = {
    "DetectConfig", "DetectJob", "DetectRun", "Executor", "InvalidSceneError", "MergeConfig", "ModelInfo",
    "ModelLoader", "OutputError", "PipelineError", "Precision", "ReadConfig", "SceneInfo", "SourceError",
    "TileDetections", "TileReadError", "TileSpec", "TilingConfig", "detect_tiles", "iter_listing",
    "list_scenes", "merge_scene", "open_scene", "read_detections", "read_report", "read_tiles",
    "scene_px_to_crs", "tile_scene", "tile_to_scene_px", "write_geoparquet",
}  # fmt: skip


def test_public_api_is_pinned():
    # an explicit set: adding or dropping a public name is a decision this test makes visible
    assert set(pipeline.__all__) == PUBLIC_API and len(pipeline.__all__) == len(PUBLIC_API)
    for name in pipeline.__all__:
        assert getattr(pipeline, name).__doc__, f"{name} has no docstring"


def _modules_loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name.split(".")[0] for name in out}


def test_importing_pipeline_loads_neither_torch_ray_nor_retinanet():
    # The layout rule: the geo core stands alone; the model comes in as a loader
    loaded = _modules_loaded_by("import pipeline")
    assert not loaded & {"torch", "torchvision", "ray", "retinanet"}, loaded & {"torch", "ray", "retinanet"}


def test_no_pipeline_module_imports_retinanet():
    # every module of the package, imported for real (lazy imports included as far as they run at import)
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(pipeline.__path__, "pipeline.")]
    loaded = _modules_loaded_by("; ".join(f"import {n}" for n in names))
    assert "retinanet" not in loaded


def test_importing_retinanet_is_light():
    loaded = _modules_loaded_by("import retinanet, retinanet.errors")
    assert "torch" not in loaded
