"""User-level failures: `train()` turns these into a TrainResult with the message, never a traceback."""

from __future__ import annotations


class TrainError(Exception):
    """Something the user can fix (a setting, a missing package, a dataset problem); the message says how."""


class MissingPackage(TrainError):
    def __init__(self, package: str, needed_for: str, alternative: str):
        super().__init__(
            f"{needed_for} needs the Python package '{package}', which is not installed. Install it into the "
            f"webui's Python (e.g. `pip install {package}` inside the webui's venv) and restart, or choose "
            f"{alternative} instead.")
        self.package = package


class Cancelled(Exception):
    """Raised from inside a preparation phase (latent caching) when the user cancels; nothing was trained."""
