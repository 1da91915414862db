"""Errors that the CLI turns into one-line messages (file name + what to do), never tracebacks."""


class MedsrError(Exception):
    """Base class: ``str(err)`` is a complete one-line message for the user."""


class ImageReadError(MedsrError):
    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class NotAnImage(ImageReadError):
    """The file is a valid object that is not an image to enhance (a structured report, RT plan,
    presentation state, segmentation, dose grid ...). A batch lists it and goes on; it is not a failure."""


class ImageWriteError(MedsrError):
    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class ModelError(MedsrError):
    """A model file that cannot be used (missing, corrupt, wrong scale/channels, foreign engine)."""


class Int8Refused(ModelError):
    """An INT8 export that its gate refused (too far from FP32 or from ground truth); nothing written."""


class BackendUnavailable(MedsrError):
    """A backend whose package or device is not present (names the package to install)."""


def first_line(exc: BaseException, limit: int = 150, typed: bool = True) -> str:
    """A library exception as one short line for a user message: ``"Type: first line"`` (the
    first line of its text, cut to ``limit`` characters), or just the type when it has no text."""
    text = str(exc).splitlines()[0][:limit] if str(exc).strip() else ""
    if not typed:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def printable(text, limit: int = 64) -> str:
    """A value read from a file, fit for a one-line message: control and non-ASCII characters
    become ``?``, and at most ``limit`` characters are kept (a crafted header cannot break a line)."""
    out = "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))
    return out[:limit] + ("..." if len(out) > limit else "")
