"""Carrying a task's exception back from another process with its traceback text."""

from __future__ import annotations

import traceback

__all__ = ["RemoteTraceback", "attach_remote_traceback", "format_remote"]


class RemoteTraceback(Exception):
    """Holds the traceback text of an exception raised in another process.

    Set as the ``__cause__`` of the exception the caller gets, as
    ``concurrent.futures`` does, so ``traceback.print_exc()`` shows the worker's frames.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def format_remote(exc: BaseException) -> str:
    """The text that ``RemoteTraceback`` will show for ``exc``."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f'\n"""\n{text}"""'


def attach_remote_traceback(exc: BaseException, tb: str | None) -> BaseException:
    """Set ``exc.__cause__`` to a ``RemoteTraceback`` of ``tb`` (when there is one)."""
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc
