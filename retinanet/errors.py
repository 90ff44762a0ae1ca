"""Errors of the model package (light: importing this loads no torch).

::

    CheckpointError(ValueError)   a checkpoint is missing, unsafe, malformed or does not match its config
    LabelError(ValueError)        a label file cannot be read (format, fields, geometry)
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory is missing, unsafe, malformed, or does not match its config."""


class LabelError(ValueError):
    """A label file cannot be used: unreadable, wrong format, missing fields."""
