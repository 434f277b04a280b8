"""What a worker's frame, or its death, means for a task's future.

The manager thread collects ``Settle`` triples while it holds its lock and calls
``set_outcomes`` after releasing it: setting a future runs its done-callbacks, which may call
back into the backend.
"""

from __future__ import annotations

import pickle
import signal
from concurrent.futures import Future, InvalidStateError
from typing import Any

from unirun._errors import SerializationPhase, TaskSerializationError, WorkerCrashedError
from unirun._remote import RemoteTraceback, attach_remote_traceback
from unirun._tasks import Call

from ._worker import ERR, OK, Frame

__all__ = ["Settle", "crash_error", "decode", "set_outcomes"]

#: A future, whether the task succeeded, and its result or exception.
Settle = tuple["Future[Any]", bool, Any]


def set_outcomes(outcomes: list[Settle]) -> None:
    """Set futures' outcomes, outside any lock (done-callbacks run here)."""
    for future, ok, value in outcomes:
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except InvalidStateError:  # cancelled or set meanwhile
            pass


def decode(call: Call, frame: Frame) -> tuple[bool, Any]:
    """The outcome a worker sent for ``call``: ``(ok, value or exception)``."""
    try:
        if frame.kind == OK:
            return True, pickle.loads(frame.payload)
        if frame.kind == ERR:
            exc, tb = pickle.loads(frame.payload)
            return False, attach_remote_traceback(exc, tb)
        phase, type_name, text, tb = pickle.loads(frame.payload)
    except BaseException as exc:  # it pickled in the worker but does not unpickle here
        phase = "result" if frame.kind == OK else "exception"
        type_name, text, tb = type(exc).__name__, str(exc), ""
    return False, _serialization_error(call, phase, type_name, text, tb)


def _serialization_error(
    call: Call, phase: SerializationPhase, type_name: str, text: str, tb: str
) -> TaskSerializationError:
    what = call.describe()
    if phase == "argument-load":
        message = (
            f"{what} could not be unpickled in the worker process: {type_name}: {text}. "
            "Functions and classes must be importable there (not defined in the __main__ of "
            "an interactive session or a -c script, unless cloudpickle is installed)"
        )
    elif phase == "result":
        message = (
            f"{what} finished, but its result cannot be sent back from the worker process: "
            f"{type_name}: {text}"
        )
    else:
        message = (
            f"{what} raised {text}, and that exception cannot be sent back from the worker "
            "process; this error stands in for it (the worker's traceback is attached)"
        )
    error = TaskSerializationError(message, phase=phase, task_index=call.index)
    if tb:
        error.__cause__ = RemoteTraceback(tb)
    return error


def crash_error(call: Call, pid: int, code: int | None) -> WorkerCrashedError:
    """The error of a task whose worker process ``pid`` died with exit code ``code``."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}"
        if -code == signal.SIGKILL:
            how += " (an out-of-memory kill sends SIGKILL: check the task's memory use)"
    else:
        how = f"exited with code {code}"
    return WorkerCrashedError(
        f"the worker process (pid {pid}) running {call.describe()} {how}; the worker "
        "was replaced and the other tasks are not affected",
        exitcode=code,
        pid=pid,
        task_index=call.index,
    )
