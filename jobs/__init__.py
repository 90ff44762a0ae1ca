"""Command-line jobs: thin wrappers that parse flags, build configs and call the library.

``aerialdet`` (``jobs.cli:main``) groups them; ``python -m jobs.detect`` and
``python -m jobs.train`` are the Ray job entrypoints.
"""
