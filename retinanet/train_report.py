"""What a training run tells its user: the plan up front, ``metrics.jsonl``, a progress bar, a summary.

``describe`` says before training what the run will do (images, tiles,
objects per class, steps) and warns when it is too little.  Rank 0 of the
Ray Train workers appends one JSON line per epoch to ``OUT/metrics.jsonl``
(``METRICS_FILE``) and redraws ``OUT/training.png`` from it
(``plot_metrics``); the workers print nothing.  On the driver,
``EpochProgress`` follows that file from a background thread while
``trainer.fit()`` runs and shows one tqdm bar (epoch, loss, validation
AP50); ``summary_lines`` then names only the checkpoints that exist.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retinanet.labeled_tiles import TrainData
    from retinanet.train_spec import TrainSpec

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
ISSUES_FILE = "label_issues.txt"
# Written beside last/ while no epoch earned best/: one line saying why (detect and the summary read it)
NO_BEST_FILE = "no_best.txt"


def no_best_reason(out_dir: str | Path) -> str | None:
    """Why the run in ``out_dir`` has no ``best/`` (``NO_BEST_FILE``), or None when it says nothing."""
    try:
        return (Path(out_dir) / NO_BEST_FILE).read_text().strip() or None
    except OSError:
        return None


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


def plot_metrics(metrics_path: Path, out_png: Path) -> None:
    """Draw training loss and validation AP50 / mAP per epoch from ``metrics_path`` into ``out_png``.

    Nothing is drawn before the first epoch is logged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(epochs, [r["loss"] for r in rows], "o-", color="tab:red", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [r["val_ap50"] for r in rows], "s-", color="tab:blue", label="val AP50")
    ax2.plot(epochs, [r["val_map"] for r in rows], "^-", color="tab:cyan", label="val mAP")
    ax2.set_ylabel("AP", color="tab:blue")
    ax2.set_ylim(0, 1)
    fig.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


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


def _tiles_said(tile_size_px: int, covering: int, num_tiles: int) -> str:
    """``N tile(s) of P px per epoch``, saying when the epoch floor repeats them."""
    repeated = f", repeated to {num_tiles}" if num_tiles > covering else ""
    return f"{covering} tile(s) of {tile_size_px} px{repeated} per epoch"


def describe(
    spec: TrainSpec,
    data: TrainData,
    tiles: tuple[int, int],
    *,
    resuming: bool,
    min_steps: int,
    min_objects: int,
) -> list[str]:
    """What the run will do, said up front (images, tiles, objects per class, steps), and the warnings.

    Args:
        spec: the run.
        data: its images.
        tiles: (tiles that cover the training images, tiles per epoch)
            (``retinanet.train_plan.epoch_tiles``).
        resuming: the run continues the one in ``spec.out_dir``.
        min_steps: fewer optimizer steps than this are too few from scratch (a warning).
        min_objects: fewer training objects than this are too few from scratch (a warning).
    """
    from retinanet.train_loop import steps_per_epoch

    out = Path(spec.out_dir)
    train_objects = data.objects_per_class(data.train)
    val_objects = sum(data.objects_per_class(data.val).values())
    per_epoch = steps_per_epoch(tiles[1], spec.train, spec.num_workers)
    total = spec.train.total_steps or per_epoch * spec.train.epochs
    per_class = ", ".join(f"{name} {n}" for name, n in train_objects.items())
    lines = [
        f"training on {len(data.train)} image(s) with {sum(train_objects.values())} objects ({per_class}); "
        f"validating on {len(data.val)} image(s) with {val_objects} objects; "
        f"{_tiles_said(spec.model.tile_size_px, *tiles)}; {total} step(s) of {spec.train.batch_size} tile(s) per "
        f"worker = {spec.train.epochs} epoch(s) x {per_epoch} step(s), {spec.num_workers} worker(s)"
    ]
    if resuming:
        lines.insert(0, f"resuming the run in {out}: {len(read_metrics(out / METRICS_FILE))} epoch(s) done")
    floors = (min_steps, min_objects)
    return lines + _warnings(spec, data, train_objects, (total, val_objects), floors)


def _warnings(
    spec: TrainSpec,
    data: TrainData,
    train_objects: dict[str, int],
    counts: tuple[int, int],
    floors: tuple[int, int],
) -> list[str]:
    """Warnings: classes without boxes, too little data or too few steps, rows left out, no validation boxes.

    ``counts``: (optimizer steps of the run, validation objects); ``floors``: (min_steps, min_objects).
    """
    (total_steps, val_objects), (min_steps, min_objects) = counts, floors
    out = Path(spec.out_dir)
    lines = []
    untrained = [name for name, n in train_objects.items() if n == 0]
    if untrained:
        lines.append(
            f"warning: no training boxes of class(es) {', '.join(untrained)}: the model cannot learn them"
        )
    from_scratch = spec.init_checkpoint is None
    if from_scratch and sum(train_objects.values()) < min_objects:
        lines.append(
            f"warning: {sum(train_objects.values())} training objects is little to learn from scratch "
            f"(aim for {min_objects}+), or fine-tune a trained model with --init"
        )
    if from_scratch and total_steps < min_steps:
        lines.append(
            f"warning: {total_steps} optimizer steps is too few to train from scratch; use --steps {min_steps} or more"
        )
    if data.issues:
        lines.append(
            f"warning: {len(data.issues)} label row(s) left out, all listed in {out / ISSUES_FILE}; "
            f"first: {data.issues[0]}"
        )
    if val_objects == 0:
        lines.append(
            "warning: the validation images hold no boxes: AP50 cannot be measured, only last/ is written"
        )
    return lines


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
    elif (last_dir / "meta.json").is_file() and no_best_reason(out):
        lines.append(f"checkpoint: {last_dir} (last epoch). No best/: {no_best_reason(out)}")
    elif (last_dir / "meta.json").is_file():
        lines.append(
            f"checkpoint: {last_dir} (last epoch). No best/: the validation images hold no boxes, "
            "so AP50 was never measured; give validation labels with --val to keep the best epoch"
        )
    files = [p for p in (out / METRICS_FILE, out / PLOT_FILE) if p.is_file()]
    if files:
        lines.append("metrics: " + ", ".join(str(p) for p in files))
    return lines
