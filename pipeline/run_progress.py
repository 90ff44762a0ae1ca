"""A detect run with one progress bar: ``run_job`` wraps ``pipeline.run.DetectRun`` in tqdm."""

from __future__ import annotations

import time

from pipeline.executor import Executor
from pipeline.job import DetectJob
from pipeline.report import RunRecord
from pipeline.run import DetectRun, Log

REFRESH_S = 0.2  # the bar is redrawn at most this often


def run_job(
    job: DetectJob, executor: Executor, *, log: Log = print, progress: bool | None = None
) -> RunRecord:
    """Run ``job`` on ``executor`` with a progress bar (``job.progress`` unless ``progress`` says otherwise).

    Returns:
        The run's record (written to ``OUT/_run.json`` and its scene lines);
        ``num_failed`` says whether any scene failed.
    """
    from tqdm import tqdm

    show = job.progress if progress is None else progress
    bar = tqdm(total=0, unit="tile", disable=not show, dynamic_ncols=True, smoothing=0.1)

    drawn_at = [0.0]

    def update(done: int, planned: int, scenes: int) -> None:
        bar.total = max(planned, done)
        bar.n = done
        bar.set_postfix_str(f"scenes {scenes}", refresh=False)
        now = time.monotonic()
        # a redraw costs 0.1 ms of driver CPU: not one per tile (close draws the last state)
        if now - drawn_at[0] >= REFRESH_S:
            drawn_at[0] = now
            bar.refresh()

    try:
        return DetectRun(job, executor, log=bar.write if show else log, progress=update).run()
    finally:
        bar.close()
