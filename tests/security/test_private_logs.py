"""Keeping a private cluster's logs follows no link and leaves nothing open to other users.

Before: ``_keep_logs`` resolved ``session_latest`` and moved whatever it
pointed to into ``OUT/_logs`` (a re-pointed link moved a root-only folder
there), moved planted links along, and kept Ray's 0777 / 0666 modes.  Now
the session is found by listing ``session_*`` directories, links are
skipped, and the copy is 0700 directories and 0600 files.
"""

from __future__ import annotations

import os
import stat

from jobs.private_cluster import keep_logs


def _ray_like(path, mode):
    os.chmod(path, mode)
    return path


def test_keep_logs_lists_sessions_skips_links_and_makes_the_copy_private(tmp_path):
    victim = tmp_path / "victim"
    (victim / "logs").mkdir(parents=True)
    (victim / "logs" / "secret.log").write_text("root only")
    victim_file = tmp_path / "root-only.txt"
    victim_file.write_text("root only")
    parent = tmp_path / "aerialdet-ray-x"
    logs = parent / "r" / "session_2026-01-02_10-00-00_1_2" / "logs"
    (logs / "events").mkdir(parents=True)
    (logs / "raylet.out").write_text("raylet")
    (logs / "events" / "event_GCS.log").write_text("gcs")
    (parent / "r" / "session_2026-01-01_09-00-00_1_2" / "logs").mkdir(parents=True)  # an older session
    for path in (parent / "r", logs.parent, logs, logs / "events"):
        _ray_like(path, 0o777)
    _ray_like(logs / "raylet.out", 0o666)
    os.symlink(victim, parent / "r" / "session_latest")  # re-pointed
    os.symlink(victim_file, logs / "planted.log")
    os.symlink(victim / "logs", logs / "linked-dir")

    keep_logs(parent, tmp_path / "out" / "_logs")

    kept = tmp_path / "out" / "_logs" / "ray" / "aerialdet-ray-x"
    files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*"))
    assert files == ["events", "events/event_GCS.log", "raylet.out"]
    assert (kept / "raylet.out").read_text() == "raylet"
    assert (victim / "logs" / "secret.log").read_text() == "root only"  # nothing moved out of it
    for path in [kept.parent, *kept.rglob("*"), kept]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert not parent.exists()
