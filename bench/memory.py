"""Peak memory of ``aerialdet detect`` over the driver and every process of its private Ray cluster.

Runs ``python -m jobs.detect`` on one cached synthetic scene per size and,
every ``--interval-s``, reads ``VmHWM`` (peak resident set) and ``VmRSS`` from
``/proc/<pid>/status`` of the driver, of every process below it, and of every
process whose command line names the run's private Ray temp directory
(``jobs.reaper.processes_naming``; the directory is found in the command
lines of the driver's children).  psutil is not needed.

Printed per size: the driver's peak, the largest single process's peak, the
sum of every process's peak (an upper bound: Ray's object store is shared
memory, mapped, and so counted, by each process that touched it; the peaks
also need not coincide), the largest sum of current RSS seen in one sample
(a lower bound of the true peak), and the number of processes seen.

The model defaults to the untrained ResNet-18 checkpoint that
``bench.throughput`` caches under ``--data-dir`` (run it once first).  The
blob stand-in (``--model standin:blobs``) is no cheaper here: on synthetic
ground texture it finds a blob in nearly every bright patch, so the driver
merges millions of boxes (4 GB driver RSS on a 4096^2 scene) and measures
that pathology, not the pipeline.  Benchmarks are not tests.

    .venv/bin/python -m bench.throughput --size-px 4096 --only a   # caches the checkpoint
    .venv/bin/python -m bench.memory --sizes 4096,16384
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs.reaper import processes_naming
from retinanet.synth import SynthConfig, write_scene

DEFAULT_DATA = Path(os.environ.get("AERIALDET_BENCH_DATA", Path.home() / ".cache" / "aerialdet" / "bench"))

_TEMP_DIR = re.compile(r"(/tmp/aerialdet-ray-[A-Za-z0-9_]+)")


def scene_path(data_dir: Path, size_px: int, gsd_m: float) -> Path:
    """The cached synthetic scene of ``size_px`` (``retinanet.synth``), written on first use."""
    path = data_dir / f"scene_{size_px}px_{gsd_m}m.tif"
    if not path.exists():
        tmp = path.with_suffix(".tmp.tif")
        write_scene(tmp, SynthConfig(size_px=size_px, gsd_m=gsd_m), seed=size_px)
        tmp.rename(path)
    return path


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _status_kb(pid: int) -> dict[str, int]:
    """``VmHWM`` and ``VmRSS`` of ``pid`` in kB (empty if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return out


def _children(root: int) -> set[int]:
    """``root`` and every process below it, from ``/proc/*/stat`` parent ids."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _short_name(cmdline: str) -> str:
    """``ray::finish_scene``, ``ray::MapWorker(...)``, ``python -m jobs.detect``, or the script's name."""
    words = cmdline.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0][:60]
    if "-m" in words[:3]:
        return " ".join(words[words.index("-m") : words.index("-m") + 2])
    script = next((w for w in words[1:3] if w.endswith(".py")), words[0])
    return Path(script).name


def watch(cmd: list[str], interval_s: float) -> dict[str, float]:
    """Run ``cmd`` and sample its processes until it exits: memory peaks in MiB, CPU seconds.

    ``cpu_s`` sums each process's last-seen CPU time (a process's work after
    its last sample is missed: a lower bound, within one interval).
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hwm: dict[int, int] = {}
    names: dict[int, str] = {}
    temp_dir: str | None = None
    max_rss_sum = 0
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        pids = _children(proc.pid)
        if temp_dir is None:
            found = (_TEMP_DIR.search(_cmdline(p)) for p in pids)
            temp_dir = next((m.group(1) for m in found if m), None)
        if temp_dir is not None:
            pids |= set(processes_naming(temp_dir))
        rss_sum = 0
        for pid in pids:
            status = _status_kb(pid)
            if status:
                if status.get("VmHWM", 0) > hwm.get(pid, 0):  # named by what it runs when its peak rises
                    hwm[pid] = status.get("VmHWM", 0)
                    names[pid] = _short_name(_cmdline(pid))
                rss_sum += status.get("VmRSS", 0)
                cpu[pid] = max(cpu.get(pid, 0.0), _cpu_s(pid))
        max_rss_sum = max(max_rss_sum, rss_sum)
        time.sleep(interval_s)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    top = max(hwm, key=hwm.__getitem__)
    return {
        "driver_mib": hwm.get(proc.pid, 0) / 1024,
        "largest_mib": hwm[top] / 1024,
        "largest_is": names.get(top, "?"),
        "sum_of_peaks_mib": sum(hwm.values()) / 1024,
        "max_rss_sum_mib": max_rss_sum / 1024,
        "processes": len(hwm),
        "cpu_s": sum(cpu.values()),
        # where the CPU went: the busiest processes, by what they ran at their memory peak
        "cpu_top": [
            (names.get(pid, "?"), round(c, 1)) for pid, c in sorted(cpu.items(), key=lambda x: -x[1])[:8]
        ],
    }


def main() -> None:
    """Parse flags; one detect run per size; print the peaks."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096,16384", help="scene sizes, px, comma-separated")
    ap.add_argument(
        "--model",
        default=str(DEFAULT_DATA / "ckpt_resnet18_1024px_prior0.06"),
        help="checkpoint dir (default: the one bench.throughput caches) or standin:blobs",
    )
    ap.add_argument("--tile-size-px", type=int, default=1024)
    ap.add_argument("--overlap-px", type=int, default=128)
    ap.add_argument("--interval-s", type=float, default=0.25)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"{'scene px':>12} {'seconds':>8} {'driver':>8} {'largest':>8} {'sum peaks':>10} {'max sum rss':>12} procs  (MiB)"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        scene = scene_path(args.data_dir, size, 0.3)
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as out:
            cmd = [
                sys.executable, "-m", "jobs.detect", str(scene), "--model", args.model, "--out", out,
                "--tile-size-px", str(args.tile_size_px), "--overlap-px", str(args.overlap_px), "--no-progress",
            ]  # fmt: skip
            started = time.time()
            peaks = watch(cmd, args.interval_s)
        print(
            f"{size:>6}x{size:<5} {time.time() - started:8.1f} {peaks['driver_mib']:8.0f} {peaks['largest_mib']:8.0f} "
            f"{peaks['sum_of_peaks_mib']:10.0f} {peaks['max_rss_sum_mib']:12.0f} {peaks['processes']:5d}"
            f"  largest: {peaks['largest_is']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
