"""Logging for the command line: every record is one line, from any logger, in any import order.

Libraries log tracebacks (pydicom's decoders log one for every corrupt frame they fail on) and may
reconfigure their loggers when first imported. The CLI therefore installs one root handler whose
formatter drops exception and stack information and keeps the first line of the message, and a
filter on it that does the same to records that other handlers might format later.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(message)s"


def _one_line(record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    msg = record.getMessage()
    if "\n" in msg:
        record.msg, record.args = msg.splitlines()[0], ()
    return True


class OneLineFormatter(logging.Formatter):
    """A formatter that never prints a traceback or a second line."""

    def format(self, record: logging.LogRecord) -> str:
        _one_line(record)
        return super().format(record).splitlines()[0]

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return ""

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return ""


def setup_logging(verbose: bool = False, libraries: tuple[str, ...] = ("pydicom",)) -> None:
    """One-line records on stderr at INFO (verbose) or WARNING. ``libraries`` are imported first,
    so their own import-time logging setup runs before this one and cannot undo it; their handlers,
    if they add any, get the one-line formatter too."""
    import importlib

    for name in libraries:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    handler.addFilter(_one_line)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in libraries:
        for h in logging.getLogger(name).handlers:
            h.setFormatter(OneLineFormatter(FORMAT))
            h.addFilter(_one_line)
