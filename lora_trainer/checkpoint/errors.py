"""The one error the checkpoint loader raises: the message names the file and what to use instead."""

from __future__ import annotations


class CheckpointError(ValueError):
    pass
