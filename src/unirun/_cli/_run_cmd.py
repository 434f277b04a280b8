"""``unirun run MODULE:FUNC [FILE]``: one call per JSON line, one JSON record per line.

The data flow, in flat memory whatever the input's length::

    FILE/stdin --lines--> _payloads() --(index, payload)--> unirun.imap(_Apply, ordered)
        --> JSON text of the result, or the exception --> one record per line on stdout

Each line is parsed in this process (a line that is not JSON becomes a payload that raises
its ``JSONDecodeError`` in the worker, so every line keeps its place in the one ordered
stream). The result is encoded to JSON in the worker, so a result that is not
JSON-serialisable is that line's error, and a worker returns only a string.

``_Apply`` names the function by module and qualified name and imports it where it runs,
so it crosses process boundaries by reference; the current directory is put on
``sys.path`` (and ``PYTHONPATH``, for workers that do not inherit ``sys.path``) so a
module next to the input file imports in every worker.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import unirun
from unirun._errors import BackendUnavailableError
from unirun._registry import check_mode, factory_for
from unirun._tasks import function_hint, is_async_callable

from . import UsageError

__all__ = ["run_command"]

#: What a line becomes: positional and keyword arguments, or the line's JSON error.
Payload = tuple[tuple[Any, ...], dict[str, Any]] | json.JSONDecodeError


def _resolve(module_name: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Apply:
    """Calls ``MODULE:FUNC`` on one payload and returns the result as JSON text."""

    def __init__(self, module_name: str, qualname: str, hint: str | None) -> None:
        self.module_name = module_name
        self.qualname = qualname
        self._fn: Callable[..., Any] | None = None
        if hint is not None:
            # Read by unirun's picker: the decorator hint of the wrapped function.
            self.__unirun_hint__ = hint

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fn"] = None  # imported again where it runs
        return state

    def _target(self) -> Callable[..., Any]:
        if self._fn is None:
            self._fn = _resolve(self.module_name, self.qualname)
        return self._fn

    def __call__(self, payload: Payload) -> str:
        if isinstance(payload, json.JSONDecodeError):
            raise payload
        args, kwargs = payload
        return json.dumps(self._target()(*args, **kwargs))


class _AsyncApply(_Apply):
    """The async twin of :class:`_Apply`, so async functions run natively on event loops."""

    async def __call__(self, payload: Payload) -> str:  # type: ignore[override]
        if isinstance(payload, json.JSONDecodeError):
            raise payload
        args, kwargs = payload
        return json.dumps(await self._target()(*args, **kwargs))


def _payload(line: str) -> Payload:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return exc
    if isinstance(value, list):
        return tuple(value), {}
    if isinstance(value, dict):
        return (), value
    return (value,), {}


def _payloads(stream: IO[str]) -> Iterator[Payload]:
    for line in stream:
        yield _payload(line.rstrip("\r\n"))


def _load_target(target: str) -> tuple[str, str, Callable[..., Any]]:
    module_name, sep, qualname = target.partition(":")
    if not sep or not module_name or not qualname:
        raise UsageError(f"expected MODULE:FUNC, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get("PYTHONPATH", "")
    if cwd not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, paths) if p)
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from None
    if found is None:
        raise UsageError(f"no module named {module_name!r} (looked in {cwd} and sys.path)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not callable(obj):
        raise UsageError(f"{target} is not callable: {obj!r}")
    return module_name, qualname, obj


def _check_options(args: argparse.Namespace) -> dict[str, Any]:
    try:
        check_mode(args.mode)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.mode != "auto":
        try:
            factory_for(args.mode)
        except (BackendUnavailableError, ImportError) as exc:
            raise UsageError(f"mode {args.mode!r} is not available: {exc}") from None
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    for flag, value in (("--timeout", args.timeout), ("--task-timeout", args.task_timeout)):
        if value is not None and not value >= 0:
            raise UsageError(f"{flag} must be >= 0 seconds, got {value}")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    if args.progress and importlib.util.find_spec("tqdm") is None:
        raise UsageError("--progress needs tqdm: pip install 'unirun[progress]'")
    options: dict[str, Any] = {
        "timeout": args.timeout,
        "task_timeout": args.task_timeout,
        "retries": args.retries,
        "retry_crashes": bool(args.retry_crashes),
        "progress": bool(args.progress),
        "return_exceptions": True,
    }
    if args.jobs is not None:
        options["max_workers"] = args.jobs
    return options


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _error_record(index: int, exc: BaseException) -> str:
    error = {"type": type(exc).__name__, "message": str(exc)}
    return json.dumps({"index": index, "error": error})


def _open_input(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def run_command(args: argparse.Namespace) -> int:
    """Run ``unirun run``; return 0, or 1 when any line failed (usage errors raise)."""
    module_name, qualname, fn = _load_target(args.target)
    options = _check_options(args)
    hint = function_hint(fn)
    apply_cls = _AsyncApply if is_async_callable(fn) else _Apply
    apply = apply_cls(module_name, qualname, hint)
    stream = _open_input(args.file)
    out = sys.stdout
    failed = False
    index = 0
    try:
        results: Iterator[object] = unirun.imap(apply, _payloads(stream), mode=args.mode, **options)
        try:
            for index, outcome in enumerate(results):
                if isinstance(outcome, BaseException):
                    failed = True
                    out.write(_error_record(index, outcome) + "\n")
                else:
                    out.write(f'{{"index": {index}, "result": {outcome}}}\n')
                out.flush()
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
    except TimeoutError as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(
            f"unirun run: the run passed --timeout {args.timeout} s{detail}; "
            "lines without a record did not finish",
            file=sys.stderr,
        )
        return 1
    except (BackendUnavailableError, ImportError) as exc:
        print(f"unirun run: error: a backend is not available: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:
        # Raised by the engine before a line ran: the mode cannot take this function
        # (an async function on gevent) or an option value was refused.
        if os.environ.get("UNIRUN_DEBUG"):
            raise
        print(f"unirun run: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        # Not a line's failure (those are records): an error of unirun or a backend.
        # One line, as promised; UNIRUN_DEBUG=1 shows the traceback.
        if os.environ.get("UNIRUN_DEBUG"):
            raise
        print(
            f"unirun run: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(set UNIRUN_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if stream is not sys.stdin:
            stream.close()
    return 1 if failed else 0
