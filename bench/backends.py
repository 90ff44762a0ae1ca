"""Which CPU backend runs aerialdet's RetinaNet network fastest? (issue 9, "Throughput").

Measures the forward pass of the network part only: backbone + FPN + the
classification and box-regression heads, on one float32 batch ``[B, 3, H, W]``
that is already normalised (the model's own normalisation is negligible).
Anchors, box decoding and NMS are left out: they stay in torchvision whatever
runs the network.  Every variant computes the same two tensors,
``cls_logits [B, A, K]`` and ``bbox_regression [B, A, 4]``, and each is
compared with eager fp32 (max absolute difference), so a fast but wrong
backend shows.  Variants (``--only`` takes a comma list of these names):

=================  ==========================================================
eager_fp32         the model as built, float32, NCHW
eager_fp32_cl      float32, channels_last weights
eager_bf16_cl      bf16 autocast + channels_last: what ``aerialdet detect``
                   runs on CPU today (``pipeline.detection.prepare_model``,
                   ``reduced_precision``)
compile_fp32       ``torch.compile`` (inductor, weight freezing) of eager_fp32
compile_bf16_cl    ``torch.compile`` (inductor, weight freezing) of eager_bf16_cl
ort_fp32           ONNX Runtime, CPUExecutionProvider, fp32 ONNX export
ort_fastmath       ONNX Runtime with bf16 fast-math GEMMs: an ARM64-only
                   option in ONNX Runtime; skipped on x86
ov_f32             OpenVINO CPU, inference precision hint f32
ov_bf16            OpenVINO CPU, inference precision hint bf16
=================  ==========================================================

OpenVINO reads the same ONNX file as ONNX Runtime; where the ONNX export is
not available it converts the torch module directly (``openvino.convert_model``).
The table's note says which, and the precision OpenVINO actually runs in.

Per variant: "prep s" is the time to get it ready (copy + layout, conversion,
session or model compilation; the ONNX export, shared by ONNX Runtime and
OpenVINO, is printed once below the table; ``torch.compile`` is lazy, so its
compile time is in "first s"), "first s" the first call (oneDNN primitive
creation, inductor compilation: inductor caches compiled code on disk, so a
repeated run compiles faster; ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` times a
cold compile), then ``--repeats`` timed calls give "best s"
and "median s".  Mpx/s and the speed-up over eager_fp32 use the best time: on
a shared machine the best call is the one least disturbed by other load.

torch, ONNX Runtime and OpenVINO each get ``--threads`` threads.  The weights
are random (``build_model`` downloads nothing), which does not change the
compute.  The extra packages are not project dependencies; install them
without letting pip touch torch:

    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /tmp/torch-constraints.txt
    .venv/bin/pip install -c /tmp/torch-constraints.txt -r bench/requirements-backends.txt

A variant whose package is missing is skipped with a one-line message.  Run:

    .venv/bin/python -m bench.backends [--tile-size-px 1024] [--batch-size 1] \\
        [--backbone resnet18] [--repeats 5] [--threads N] [--only eager_fp32,ov_bf16]

Benchmarks are not tests.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.errors import first_line
from retinanet import ModelConfig, build_model

Outputs = tuple[np.ndarray, np.ndarray]
Runner = Callable[[], Outputs]
CLASS_NAMES = ("building", "tree", "vehicle")
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "openvino")


class NetworkPart(nn.Module):
    """RetinaNet's backbone + FPN + heads: the part of the model that dominates compute.

    Args:
        model: a torchvision RetinaNet (``retinanet.build_model``).
        autocast_dtype: run under CPU autocast at this dtype, outputs cast
            back to float32 (as ``pipeline.detection.reduced_precision``);
            ``None`` for plain float32.
    """

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head
        self.autocast_dtype = autocast_dtype

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Head outputs for normalised ``images``.

        Args:
            images: ``Tensor[B, 3, H, W]`` float32, already normalised.

        Returns:
            ``cls_logits`` ``Tensor[B, A, K]`` and ``bbox_regression``
            ``Tensor[B, A, 4]``, float32.
        """
        if self.autocast_dtype is None:
            return self._forward(images)
        with torch.autocast("cpu", dtype=self.autocast_dtype):
            cls_logits, bbox_regression = self._forward(images)
        return cls_logits.float(), bbox_regression.float()

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # as torchvision.models.detection.retinanet.RetinaNet.forward
        features = list(self.backbone(images).values())
        outputs = self.head(features)
        return outputs["cls_logits"], outputs["bbox_regression"]


class Unavailable(Exception):
    """A variant that cannot run here (missing package, unsupported CPU); one line says why."""


@dataclass
class Bench:
    """What every variant shares: the fp32 reference network, the input, the thread count.

    Attributes:
        net: the eager fp32 network; variants deep-copy it before changing it.
        images: the input batch, ``Tensor[B, 3, H, W]`` float32.
        threads: threads each backend may use.
        workdir: where the ONNX file goes.
        onnx_path: the exported ONNX file once made.
        onnx_error: why the ONNX export failed, once tried.
    """

    net: NetworkPart
    images: Tensor
    threads: int
    workdir: Path
    onnx_path: Path | None = None
    onnx_error: str | None = None
    onnx_export_s: float = 0.0


@dataclass
class Result:
    """Timings and agreement of one variant."""

    name: str
    prep_s: float
    first_s: float
    times_s: list[float]
    max_diff: tuple[float, float]
    note: str


def _torch_runner(net: nn.Module, images: Tensor) -> Runner:
    """A runner calling ``net`` under ``torch.inference_mode`` (as ``detect_tiles``)."""

    def run() -> Outputs:
        with torch.inference_mode():
            cls_logits, bbox_regression = net(images)
        return cls_logits.numpy(), bbox_regression.numpy()

    return run


def _eager(bench: Bench, channels_last: bool, bf16: bool) -> tuple[Runner, str]:
    """Eager torch: a copy of the reference, optionally channels_last and bf16 autocast."""
    net = copy.deepcopy(bench.net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.autocast_dtype = torch.bfloat16 if bf16 else None
    return _torch_runner(net, bench.images), ""


def _compiled(bench: Bench, channels_last: bool, bf16: bool) -> tuple[Runner, str]:
    """``torch.compile`` (inductor, CPU weight freezing) of the eager variant."""
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()
    # Freezing folds the weights into the graph as constants so inductor can
    # prepack them for oneDNN: PyTorch's recipe for CPU inference.
    torch._inductor.config.freezing = True
    net = copy.deepcopy(bench.net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.autocast_dtype = torch.bfloat16 if bf16 else None
    return _torch_runner(torch.compile(net), bench.images), "compile time is in first s"


def _onnx_file(bench: Bench) -> Path:
    """Export the fp32 network to ONNX once (dynamo exporter); later calls reuse the file.

    Raises:
        Unavailable: a package the exporter needs is missing, or the export failed.
    """
    if bench.onnx_path is not None:
        return bench.onnx_path
    if bench.onnx_error is None:
        bench.onnx_error = _export_onnx(bench)
    if bench.onnx_path is None:
        raise Unavailable(f"ONNX export failed: {bench.onnx_error}")
    return bench.onnx_path


def _export_onnx(bench: Bench) -> str:
    """Write ``network.onnx`` into the work dir; return "" on success, else one line why not."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            return f"package '{package}' not installed (pip install -r bench/requirements-backends.txt)"
    path = bench.workdir / "network.onnx"
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                copy.deepcopy(bench.net),
                (bench.images,),
                str(path),
                input_names=["images"],
                output_names=["cls_logits", "bbox_regression"],
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - reported as one line, the other backends go on
        return _one_line(exc)
    bench.onnx_export_s = time.perf_counter() - start
    bench.onnx_path = path
    return ""


def _ort(bench: Bench, fastmath: bool) -> tuple[Runner, str]:
    """ONNX Runtime CPUExecutionProvider on the fp32 ONNX export."""
    import onnxruntime as ort

    arm = platform.machine().lower() in ("aarch64", "arm64")
    if fastmath and not arm:
        raise Unavailable(
            f"ONNX Runtime's bf16 fast-math GEMMs exist on ARM64 only, not {platform.machine()}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = bench.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if fastmath:
        options.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "1")
    path = _onnx_file(bench)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: bench.images.numpy()}

    def run() -> Outputs:
        cls_logits, bbox_regression = session.run(None, feed)
        return cls_logits, bbox_regression

    return run, ""


def _openvino(bench: Bench, precision: str) -> tuple[Runner, str]:
    """OpenVINO CPU from the ONNX file (or from torch if there is none) at ``precision``."""
    import openvino as ov

    core = ov.Core()
    try:
        source: object = str(_onnx_file(bench))
        note = "from ONNX"
    except Unavailable:
        with warnings.catch_warnings():  # torch.jit.trace deprecation, from inside OpenVINO
            warnings.simplefilter("ignore", FutureWarning)
            source = ov.convert_model(copy.deepcopy(bench.net), example_input=bench.images)
        note = "from torch (openvino.convert_model)"
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": bench.threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    compiled = core.compile_model(source, "CPU", config)
    request = compiled.create_infer_request()
    images = bench.images.numpy()

    def run() -> Outputs:
        request.infer({0: images})
        return request.get_output_tensor(0).data.copy(), request.get_output_tensor(1).data.copy()

    actual = compiled.get_property("INFERENCE_PRECISION_HINT")
    return run, f"{note}; runs in {getattr(actual, 'get_type_name', actual.__str__)()}"


VARIANTS: dict[str, Callable[[Bench], tuple[Runner, str]]] = {
    "eager_fp32": lambda b: _eager(b, channels_last=False, bf16=False),
    "eager_fp32_cl": lambda b: _eager(b, channels_last=True, bf16=False),
    "eager_bf16_cl": lambda b: _eager(b, channels_last=True, bf16=True),
    "compile_fp32": lambda b: _compiled(b, channels_last=False, bf16=False),
    "compile_bf16_cl": lambda b: _compiled(b, channels_last=True, bf16=True),
    "ort_fp32": lambda b: _ort(b, fastmath=False),
    "ort_fastmath": lambda b: _ort(b, fastmath=True),
    "ov_f32": lambda b: _openvino(b, "f32"),
    "ov_bf16": lambda b: _openvino(b, "bf16"),
}


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    name = type(exc).__name__
    text = first_line(exc)  # the type's name alone when the message is empty
    return text if text == name or text.startswith(f"{name}: ") else f"{name}: {text}"


def run_variant(bench: Bench, name: str, reference: Outputs, repeats: int) -> Result | None:
    """Prepare and time one variant; print one line and return None if it cannot run.

    Args:
        bench: the shared network, input and thread count.
        name: a key of ``VARIANTS``.
        reference: eager fp32 outputs to compare against.
        repeats: timed calls after the first.

    Returns:
        The variant's timings and max abs differences, or None when skipped.
    """
    start, export_s = time.perf_counter(), bench.onnx_export_s
    try:
        run, note = VARIANTS[name](bench)
        # the ONNX export is shared by ONNX Runtime and OpenVINO: reported apart
        prep_s = time.perf_counter() - start - (bench.onnx_export_s - export_s)
        start = time.perf_counter()
        outputs = run()
        first_s = time.perf_counter() - start
    except ImportError as exc:
        print(
            f"skipped {name}: package '{exc.name}' not installed (pip install -r bench/requirements-backends.txt)"
        )
        return None
    except Unavailable as exc:
        print(f"skipped {name}: {exc}")
        return None
    except Exception as exc:  # noqa: BLE001 - one backend's failure must not stop the others
        print(f"failed {name}: {_one_line(exc)}")
        return None
    max_diff = tuple(float(np.max(np.abs(out - ref))) for out, ref in zip(outputs, reference))
    times_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times_s.append(time.perf_counter() - start)
    return Result(name, prep_s, first_s, times_s, (max_diff[0], max_diff[1]), note)


def _cpu_description() -> str:
    """CPU model and which of ``CPU_FLAGS`` it has, from ``lscpu``."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu not available"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    present = " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in CPU_FLAGS)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} logical CPUs; {present}"


def _versions() -> str:
    """Installed versions of ``PACKAGES``."""
    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def print_header(args: argparse.Namespace, reference: Outputs) -> None:
    """Print the machine, the versions, the input and the scale of the reference outputs."""
    print(f"versions: python {platform.python_version()}, {_versions()}")
    print(f"cpu: {_cpu_description()}")
    print(
        f"torch cpu capability: {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}"
    )
    print(
        f"network: {args.backbone} RetinaNet backbone+FPN+heads, input [{args.batch_size}, 3, "
        f"{args.tile_size_px}, {args.tile_size_px}] float32; repeats {args.repeats}"
    )
    print(
        f"reference (eager fp32) max |cls_logits| {np.max(np.abs(reference[0])):.3g}, "
        f"max |bbox_regression| {np.max(np.abs(reference[1])):.3g}"
    )


def print_table(results: list[Result], megapixels: float) -> None:
    """One row per variant: times, Mpx/s, speed-up over eager_fp32, max abs differences, note."""
    baseline = next((min(r.times_s) for r in results if r.name == "eager_fp32"), None)
    header = (
        "variant",
        "prep s",
        "first s",
        "best s",
        "median s",
        "Mpx/s",
        "x eager",
        "max|d| cls",
        "max|d| box",
    )
    print(f"{header[0]:<16}" + "".join(f"{h:>11}" for h in header[1:]) + "  note")
    for r in results:
        best, median = min(r.times_s), statistics.median(r.times_s)
        speedup = f"{baseline / best:.2f}" if baseline else "n/a"
        cells = (
            f"{r.prep_s:.2f}",
            f"{r.first_s:.2f}",
            f"{best:.3f}",
            f"{median:.3f}",
            f"{megapixels / best:.2f}",
            speedup,
            f"{r.max_diff[0]:.2e}",
            f"{r.max_diff[1]:.2e}",
        )
        print(f"{r.name:<16}" + "".join(f"{c:>11}" for c in cells) + f"  {r.note}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; ``--only`` is checked against ``VARIANTS``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile-size-px", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--backbone", choices=("resnet18", "resnet50"), default="resnet18")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls after the first (best and median)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma list of: {', '.join(VARIANTS)}")
    args = ap.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in VARIANTS]
    if unknown:
        ap.error(f"--only: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    for flag in ("tile_size_px", "batch_size", "repeats", "threads"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Build the network, run the chosen variants, print the header and the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig(backbone=args.backbone, class_names=CLASS_NAMES, tile_size_px=args.tile_size_px)
    net = NetworkPart(build_model(config).eval()).eval()
    size = args.tile_size_px
    images = torch.randn(args.batch_size, 3, size, size)
    reference = _torch_runner(net, images)()
    print_header(args, reference)
    results = []
    with tempfile.TemporaryDirectory(prefix="aerialdet-backends-") as workdir:
        bench = Bench(net, images, args.threads, Path(workdir))
        for name in args.only:
            result = run_variant(bench, name, reference, args.repeats)
            if result is not None:
                results.append(result)
            gc.collect()
            sys.stdout.flush()
    print_table(results, args.batch_size * size * size / 1e6)
    if bench.onnx_path is not None:
        print(f"ONNX export (dynamo exporter, shared by ort_* and ov_*): {bench.onnx_export_s:.1f} s")


if __name__ == "__main__":
    main()
