"""Log records from process workers, handled by the parent's ``logging`` configuration.

Data flow::

    parent, starting a worker    LogSettings.capture(): the levels of its loggers
    worker, at start-up          apply(): drop the handlers it inherited or imported, take the
                                 parent's levels; after the initializer, add ForwardHandler
                                 to the root logger
    worker, a task logs          the logger's level check (nothing else runs below the level)
                                 --> ForwardHandler.emit: message formatted, exception as text,
                                 pickled --> a LOG frame on the result pipe, sent at once
    parent's manager thread      handle_forwarded(): logging.getLogger(name).handle(record),
                                 before the task's own outcome (frames arrive in order)

The worker decides *whether* a record is sent, from the parent's levels as they were when
the worker started; the parent's handlers, filters and current levels decide what becomes
of it. A record costs nothing in a worker unless a logger lets it through.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any, Final, NamedTuple

__all__ = ["ForwardHandler", "LogSettings", "handle_forwarded"]

_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
_FORMATTER: Final = logging.Formatter()

logger = logging.getLogger("unirun")


class LogSettings(NamedTuple):
    """The parent's logging levels, sent to each worker it starts."""

    levels: tuple[tuple[str, int], ...]  # ("", root level) first, then loggers with a level
    disable: int  # logging.disable()'s level

    @classmethod
    def capture(cls) -> LogSettings:
        """The levels of this process's loggers, now."""
        root = logging.getLogger()
        levels = [("", root.level)]
        for name, item in dict(logging.Logger.manager.loggerDict).items():
            if isinstance(item, logging.Logger) and item.level != logging.NOTSET:
                levels.append((name, item.level))
        return cls(tuple(levels), logging.root.manager.disable)

    def apply(self) -> None:
        """In a new worker: forget the handlers it has, and let through what the parent would.

        Handlers already here were inherited through ``fork`` or made by importing the
        parent's main module: the parent has them too, so keeping them would handle each
        record twice. Every logger propagates, so that each record reaches the forwarder
        and the parent routes it (``propagate=False`` is honoured there).
        """
        root = logging.getLogger()
        wanted = dict(self.levels)
        for item in [root, *dict(logging.Logger.manager.loggerDict).values()]:
            if not isinstance(item, logging.Logger):
                continue
            for handler in list(item.handlers):
                item.removeHandler(handler)
            item.propagate = True
            if item is not root:
                item.setLevel(wanted.pop(item.name, logging.NOTSET))
        root.setLevel(wanted.pop("", logging.WARNING))
        for name, level in wanted.items():
            logging.getLogger(name).setLevel(level)
        logging.disable(self.disable)


class ForwardHandler(logging.Handler):
    """Sends every record it gets to the parent process, at once.

    Sent at once, so a record logged just before the worker crashes is not lost.
    """

    def __init__(self, send: Callable[[bytes], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = encode_record(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(payload)
        except OSError:  # the parent is gone: nobody is left to show it
            pass


def encode_record(record: logging.LogRecord) -> bytes:
    """Pickle ``record``'s attributes, as ``QueueHandler.prepare`` makes them safe to send.

    The message is formatted (``msg % args``) and the exception turned into text
    (``exc_text``, which the parent's formatters print); the record itself is unchanged,
    for other handlers in the worker. An attribute that does not pickle (an ``extra=``
    value) is sent as its ``repr``.
    """
    data = dict(record.__dict__)
    data["msg"] = record.getMessage()
    data["args"] = None
    if record.exc_info:
        if not record.exc_text:
            data["exc_text"] = _FORMATTER.formatException(record.exc_info)
        data["exc_info"] = None
    data.pop("message", None)
    try:
        return pickle.dumps(data, _PROTOCOL)
    except Exception:
        return pickle.dumps({k: _picklable(v) for k, v in data.items()}, _PROTOCOL)


def _picklable(value: object) -> object:
    try:
        pickle.dumps(value, _PROTOCOL)
    except Exception:
        return repr(value)
    return value


def handle_forwarded(payload: bytes) -> None:
    """In the parent: hand a worker's record to the logger of the same name, here.

    Runs in the manager thread, so a handler that raises must not stop it.
    """
    try:
        data: dict[str, Any] = pickle.loads(payload)
        record = logging.makeLogRecord(data)
        target = logging.getLogger(record.name)
        if target.isEnabledFor(record.levelno):
            target.handle(record)
    except Exception:
        logger.exception("unirun: could not handle a log record sent by a worker process")
