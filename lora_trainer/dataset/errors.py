"""The one exception the dataset code raises for bad *input files* (options errors stay ValueError)."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """An image or caption that cannot be used, with the file and what to do about it.

    Scanning never raises this (it reports the file as skipped instead); it is raised at load time,
    when a file that passed the cheap scan checks turns out to be undecodable. The trainer catches it.
    """

    def __init__(self, path: Path | str, reason: str, fix: str = ""):
        self.path = Path(path)
        self.reason = reason
        self.fix = fix
        message = f"{self.path}: {reason}"
        if fix:
            message += f" — {fix}"
        super().__init__(message)
