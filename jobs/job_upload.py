"""What ``aerialdet submit`` uploads with a job: the project's own code, never a secret lying next to it.

Ray zips a job's ``working_dir`` (following links) and keeps the package on
the cluster, so instead of uploading the project directory minus an
exclude list, ``stage_project`` copies an allowlist of the project's own
paths (``UPLOADED_PATHS``) into a fresh directory, and that directory is
the ``working_dir``.  Within those folders a file that looks like a secret
(``*.pem``, ``.env*``, ``id_rsa*``, ``*credentials*``, ``.netrc``, token and
service-account files ...), a link, or anything in a hidden folder is left
out, and the caller names it to the user.  Bytecode caches and rasters or
tables (``*.tif``, ``*.parquet``) are left out silently, as before.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

# The project's own paths: all a job on the cluster needs to run `python -m jobs.detect|train`.
UPLOADED_PATHS = ("pyproject.toml", "README.md", "pipeline", "retinanet", "jobs")

# File names (lower-cased, fnmatch) that look like secrets: never uploaded, and named to the user.
SECRET_FILE_PATTERNS = (
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    ".env*",
    "*.env",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*credentials*",
    "*secret*",
    "*token*",
    "*service-account*",
    "*service_account*",
    "*serviceaccount*",
    "kubeconfig*",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    ".htpasswd",
)

# Left out without a word: caches, and data that is never code (it lives on the nodes or in a bucket).
_CACHE_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
_DATA_PATTERNS = ("*.pyc", "*.tif", "*.tiff", "*.parquet")


def looks_like_secret(name: str) -> bool:
    """Whether a file name looks like a key, credentials, a token or an ``.env`` file.

    Example:
        >>> [looks_like_secret(n) for n in ("key.pem", ".env.local", "detect.py")]
        [True, True, False]
    """
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in SECRET_FILE_PATTERNS)


def stage_project(project_dir: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> list[str]:
    """Copy the allowlisted paths of ``project_dir`` into ``dest_dir``; return what was left out.

    Only the regular files under ``UPLOADED_PATHS`` are copied.  Left out and
    returned: files whose name looks like a secret, links (Ray would upload
    what they point to), and anything in a hidden folder.  Bytecode caches,
    rasters and tables are left out and not returned.

    Args:
        project_dir: the aerialdet project root (``--working-dir``).
        dest_dir: an empty directory; becomes the job's ``working_dir``.

    Returns:
        The paths left out, relative to ``project_dir``, sorted.
    """
    root, dest = Path(project_dir), Path(dest_dir)
    left_out: list[str] = []
    for top in UPLOADED_PATHS:
        source = root / top
        if source.is_symlink() or (source.is_file() and looks_like_secret(top)):
            left_out.append(top)
        elif source.is_file():
            shutil.copy2(source, dest / top)
        elif source.is_dir():
            left_out += _stage_folder(root, top, dest)
    return sorted(left_out)


def _stage_folder(root: Path, top: str, dest: Path) -> list[str]:
    """Copy the regular, non-secret files under ``root/top`` to ``dest/top``; return those left out."""
    left_out: list[str] = []
    for folder, dir_names, file_names in os.walk(root / top):  # does not follow links to folders
        relative = Path(folder).relative_to(root)
        for name in list(dir_names):
            path = Path(folder) / name
            if name in _CACHE_DIRS:
                dir_names.remove(name)
            elif name.startswith(".") or path.is_symlink():
                dir_names.remove(name)
                left_out.append(f"{relative / name}/")
        for name in file_names:
            path = Path(folder) / name
            if any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in _DATA_PATTERNS):
                continue
            if path.is_symlink() or not path.is_file() or looks_like_secret(name):
                left_out.append(str(relative / name))
                continue
            (dest / relative).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / relative / name)
    return left_out
