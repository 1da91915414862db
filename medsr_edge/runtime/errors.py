"""Errors that the CLI turns into one-line messages (file name + what to do), never tracebacks."""


class MedsrError(Exception):
    """Base class: ``str(err)`` is a complete one-line message for the user."""


class ImageReadError(MedsrError):
    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class ImageWriteError(MedsrError):
    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class ModelError(MedsrError):
    """A model file that cannot be used (missing, corrupt, wrong scale/channels, foreign engine)."""


class BackendUnavailable(MedsrError):
    """A backend whose package or device is not present (names the package to install)."""
