"""What a training run tells its user: ``metrics.jsonl``, a progress bar, a summary.

Rank 0 of the Ray Train workers appends one JSON line per epoch to
``OUT/metrics.jsonl`` (``METRICS_FILE``); the workers print nothing.  On the
driver, ``EpochProgress`` follows that file from a background thread while
``trainer.fit()`` runs and shows one tqdm bar (epoch, loss, validation
AP50); ``summary_lines`` then names only the checkpoints that exist.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
ISSUES_FILE = "label_issues.txt"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The epochs logged so far, oldest first.

    A line still being written (no newline yet) is left for the next read.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


class EpochProgress:
    """A tqdm bar over epochs that follows ``metrics.jsonl`` while training runs.

    Args:
        metrics_path: the run's ``metrics.jsonl`` (may not exist yet).
        epochs: total epochs of the run.
        enabled: False: no bar (``--no-progress``, logs).
        poll_seconds: how often the file is read.

    Example:
        >>> with EpochProgress("RUN/metrics.jsonl", 10):  # doctest: +SKIP
        ...     trainer.fit()
    """

    def __init__(
        self, metrics_path: str | Path, epochs: int, *, enabled: bool = True, poll_seconds: float = 0.5
    ) -> None:
        self.path = Path(metrics_path)
        self.epochs = epochs
        self.enabled = enabled
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="epoch-progress", daemon=True)
        self._bar: Any = None

    def __enter__(self) -> EpochProgress:
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.epochs, unit="epoch", desc="train", disable=not self.enabled, dynamic_ncols=True
        )
        self.update()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.update()
        self._bar.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.update()

    def update(self) -> None:
        """Set the bar to the epochs logged (a resumed run starts part-way)."""
        rows = read_metrics(self.path)
        if not rows:
            return
        last = rows[-1]
        self._bar.n = min(len(rows), self.epochs)
        ap50 = last.get("val_ap50", -1.0)
        self._bar.set_postfix_str(
            f"epoch {last['epoch']}  loss {last['loss']:.3f}  val AP50 "
            + (f"{ap50:.3f}" if ap50 >= 0 else "n/a"),
            refresh=True,
        )


def _best_line(out: Path) -> str | None:
    """``best/`` and what it scored, when it was written."""
    meta_path = out / "best" / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    ap50 = meta.get("metrics", {}).get("val_ap50")
    score = f"val AP50 {ap50:.3f}, " if isinstance(ap50, (int, float)) else ""
    thresholds = meta.get("score_thresholds")
    calibrated = ""
    if isinstance(thresholds, dict) and thresholds:
        iou = (meta.get("calibration") or {}).get("iou")
        calibrated = ", best-F1 score " + ", ".join(f"{k} {v:.3f}" for k, v in thresholds.items())
        calibrated += f" at IoU {iou}" if iou is not None else ""
    return f"{out / 'best'} ({score}epoch {meta.get('epoch')}{calibrated})"


def summary_lines(out_dir: str | Path) -> list[str]:
    """The end-of-run summary: last epoch, checkpoints written, metric files.

    Only paths that exist are named: ``best/`` only when validation wrote it
    (it needs validation boxes to measure AP50); otherwise the summary says
    that ``last/`` is the only checkpoint.
    """
    out = Path(out_dir)
    rows = read_metrics(out / METRICS_FILE)
    lines = []
    if rows:
        last = rows[-1]
        ap50 = last.get("val_ap50", -1.0)
        lines.append(
            f"trained {last['epoch'] + 1} epoch(s), {last['global_step']} steps; last epoch: loss "
            f"{last['loss']:.3f}, val AP50 " + (f"{ap50:.3f}" if ap50 >= 0 else "n/a (no validation boxes)")
        )
    best = _best_line(out)
    last_dir = out / "last"
    if best is not None:
        lines.append(f"checkpoints: {best}; {last_dir} (last epoch)")
    elif (last_dir / "meta.json").is_file():
        lines.append(
            f"checkpoint: {last_dir} (last epoch). No best/: the validation images hold no boxes, "
            "so AP50 was never measured; give validation labels with --val to keep the best epoch"
        )
    files = [p for p in (out / METRICS_FILE, out / PLOT_FILE) if p.is_file()]
    if files:
        lines.append("metrics: " + ", ".join(str(p) for p in files))
    return lines
