"""What a browser is told when an action fails, in one place.

A :class:`UserError` is something the person can fix; its message is shown as it is. A
``ValueError`` raised by sam2ui's own code (the engine's argument checks: "frame 9 is out of
range", "object 3 has no mask yet") is shown too, since those messages are written for
people. Anything else is unexpected: the browser gets :data:`GENERIC` and the server's log the
traceback. Every message passes :func:`scrub` on its way out, so no server path or errno
reaches a browser even when a message quotes one. Imports no gradio: the handlers raise
:class:`UserError` and stay plain functions.
"""

from __future__ import annotations

import logging
import re
from types import TracebackType

__all__ = ["GENERIC", "UserError", "error_message", "scrub"]

log = logging.getLogger(__name__)

GENERIC = "Something went wrong on the server; your work is kept. Try again."

# An absolute path (POSIX, or Windows with a drive letter): the folders go, the name stays.
_PATH = re.compile(
    r"(?<![\w.:/])(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:,;()<>]+)*[\\/]([^\s'\"\\/:,;()<>]+)"
)
_ERRNO = re.compile(r"\[(?:Errno|WinError) -?\d+\]\s*")


class UserError(Exception):
    """Something the user can fix; the message is shown in the UI as is."""


def scrub(message: str) -> str:
    """``message`` without server paths (each reduced to its last name) and errno tags."""
    return _ERRNO.sub("", _PATH.sub(r"\1", message))


def _raised_by_sam2ui(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` is sam2ui's code (not a library's)."""
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("sam2ui.")


def error_message(err: BaseException, where: str = "a handler") -> str:
    """The browser's message for ``err`` (see the module docstring); unexpected errors are
    logged with their traceback, naming ``where`` (server side only)."""
    if isinstance(err, UserError):
        return scrub(str(err))
    if isinstance(err, ValueError) and _raised_by_sam2ui(err.__traceback__) and str(err):
        return scrub(str(err))
    log.error("unexpected error in %s", where, exc_info=err)
    return GENERIC
