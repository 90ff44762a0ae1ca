"""A detect run with one progress bar: ``run_job`` wraps ``pipeline.run.DetectRun`` in tqdm."""

from __future__ import annotations

from pipeline.executor import Executor
from pipeline.job import DetectJob
from pipeline.report import RunRecord
from pipeline.run import DetectRun, Log


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

    def update(done: int, planned: int, scenes: int) -> None:
        bar.total = max(planned, done)
        bar.n = done
        bar.set_postfix_str(f"scenes {scenes}", refresh=False)
        bar.refresh()

    try:
        return DetectRun(job, executor, log=bar.write if show else log, progress=update).run()
    finally:
        bar.close()
