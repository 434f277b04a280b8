"""The child side of ProcessBackend: the wire format and the worker's main loop.

Both directions carry frames on plain OS pipes::

    header: struct "<QQB" = payload length, task id, kind (parent -> worker) or status
    payload: bytes (a pickle, or nothing)

parent -> worker: ``RUN_SYNC``/``RUN_ASYNC`` (payload: the pickled ``(fn, args, kwargs)``)
and ``CANCEL`` (async tasks only). worker -> parent: ``READY`` once the initializer ran,
``INIT_FAILED`` (payload: the traceback text), then one ``OK`` / ``ERR`` / ``FAIL`` per task;
and, at any time, ``LOG`` (task id 0, payload: a pickled log record, see ``_process_logs``).
The parent only starts a task on a worker that said ``READY``; one frame each way per task.
Frames to the parent are written under one lock: a task's threads may log while the
worker sends an outcome.

The worker ignores SIGINT (the parent handles Ctrl-C and terminates workers), asks the
kernel to kill it when its parent dies (Linux), and exits when its task pipe reaches EOF:
the parent closed it (shutdown) or died.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

from unirun._remote import format_remote
from unirun._tasks import invoke

from ._process_logs import ForwardHandler, LogSettings

__all__ = ["FrameReader", "WorkerConfig", "dumps", "encode_frame", "worker_main"]

HEADER: Final = struct.Struct("<QQB")

# parent -> worker
RUN_SYNC: Final = 0
RUN_ASYNC: Final = 1
CANCEL: Final = 2
# worker -> parent
READY: Final = 10
INIT_FAILED: Final = 11
OK: Final = 12
ERR: Final = 13  # payload: pickled (exception, traceback text)
FAIL: Final = 14  # payload: pickled (phase, type name, text, traceback text)
LOG: Final = 15  # payload: a pickled log record's attributes

_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


#: Whether functions can be sent by value (lambdas, closures, ``__main__`` functions work).
HAVE_CLOUDPICKLE: Final = importlib.util.find_spec("cloudpickle") is not None
_cloud_dumps: list[Callable[[object], bytes]] = []  # cloudpickle.dumps, once imported


def _cloud(obj: object) -> bytes:
    """cloudpickle, imported on first need: most calls never need it, and a worker that
    imports it at start-up starts 5-10 ms later."""
    if not _cloud_dumps:
        import cloudpickle

        _cloud_dumps.append(cloudpickle.dumps)
    return _cloud_dumps[0](obj)


class _RefersToMain(Exception):
    """Raised by :class:`_MainSpotter` to hand the call to cloudpickle."""


class _MainSpotter(pickle.Pickler):
    """The C pickler, stopped at the first object of ``__main__``.

    ``reducer_override`` runs only for objects that are not of a built-in atomic type
    (functions, classes, instances), so a call with a large ``bytes`` argument is not
    scanned byte by byte as searching the pickle for ``b"__main__"`` would.
    """

    def reducer_override(self, obj: object) -> Any:
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str):
            module = getattr(type(obj), "__module__", None)
        if module == "__main__":
            raise _RefersToMain
        return NotImplemented


def dumps(obj: object) -> bytes:
    """Pickle a call (``fn``, ``args``, ``kwargs``) or an initializer: by value where needed.

    The C pickler goes first: it is faster, and it sends importable functions by reference
    so the worker's tracebacks keep their source lines. cloudpickle (when installed) takes
    over for what the C pickler refuses (lambdas, closures) and for anything that refers
    to ``__main__``, which a worker cannot import from a ``-c`` script, a notebook, or a
    function defined under ``if __name__ == "__main__":``.
    """
    if not HAVE_CLOUDPICKLE:
        return pickle.dumps(obj, _PROTOCOL)
    buffer = io.BytesIO()
    try:
        _MainSpotter(buffer, _PROTOCOL).dump(obj)
    except Exception:  # _RefersToMain, or what the C pickler refuses (a lambda)
        return _cloud(obj)
    return buffer.getvalue()


def dumps_value(obj: object) -> bytes:
    """Pickle a result or an exception: the fast C pickler first, cloudpickle if it fails."""
    try:
        return pickle.dumps(obj, _PROTOCOL)
    except Exception:
        if not HAVE_CLOUDPICKLE:
            raise
    return _cloud(obj)


def encode_frame(task_id: int, kind: int, payload: bytes = b"") -> bytes:
    """One frame: header and payload."""
    return HEADER.pack(len(payload), task_id, kind) + payload


class Frame(NamedTuple):
    task_id: int
    kind: int
    payload: bytes


class FrameReader:
    """Turns a stream of bytes (read in any pieces) back into frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Add ``data``; yield every frame now complete."""
        buf = self._buf
        buf += data
        size = HEADER.size
        start = 0
        while len(buf) - start >= size:
            length, task_id, kind = HEADER.unpack_from(buf, start)
            end = start + size + length
            if len(buf) < end:
                break
            with memoryview(buf) as view:  # one copy of the payload, not two
                payload = bytes(view[start + size : end])
            yield Frame(task_id, kind, payload)
            start = end
        if start:
            del buf[:start]


class WorkerConfig(NamedTuple):
    """What a worker needs besides its pipes (pickled by multiprocessing)."""

    init: bytes | None  # dumps((initializer, initargs))
    max_tasks: int | None
    async_concurrency: int
    close_fds: tuple[int, ...]  # the parent's fds a forked child inherited
    log_settings: LogSettings  # the parent's logging levels when it started this worker


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_SEND_LOCK: Final = threading.Lock()


def _send(fd: int, task_id: int, status: int, payload: bytes = b"") -> None:
    with _SEND_LOCK:  # one frame at a time: log records may come from any thread
        if len(payload) < 1 << 16:
            _write_all(fd, encode_frame(task_id, status, payload))
        else:  # do not copy a large payload just to prepend a header
            _write_all(fd, HEADER.pack(len(payload), task_id, status))
            _write_all(fd, payload)


def _type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    module = getattr(cls, "__module__", "")
    return cls.__qualname__ if module in ("builtins", "") else f"{module}.{cls.__qualname__}"


def _fail(phase: str, exc: BaseException, what: str = "") -> tuple[int, bytes]:
    text = str(exc) if not what else f"{what}: {exc}"
    return FAIL, pickle.dumps((phase, _type_name(exc), text, format_remote(exc)), _PROTOCOL)


def _encode_exception(exc: BaseException) -> tuple[int, bytes]:
    tb = format_remote(exc)
    try:
        body = dumps_value((exc, tb))
        pickle.loads(body)  # an exception that pickles may still fail to rebuild
    except BaseException as error:
        text = f"{_type_name(exc)}: {_safe_str(exc)}"
        return FAIL, pickle.dumps(
            ("exception", _type_name(error), f"{text} ({_type_name(error)}: {error})", tb),
            _PROTOCOL,
        )
    return ERR, body


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return repr(exc.args)


def _encode_result(result: object) -> tuple[int, bytes]:
    try:
        return OK, dumps_value(result)
    except BaseException as exc:
        return _fail("result", exc, f"cannot pickle the {_type_name(result)} it returned")


def _load(payload: bytes) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    fn, args, kwargs = pickle.loads(payload)
    return fn, args, kwargs


def run_payload(payload: bytes, keep: list[object]) -> tuple[int, bytes]:
    """Unpickle a call, run it, and pickle its outcome: ``(status, payload)``.

    The call and its result are appended to ``keep``, so that the caller decides when they
    are dropped (after the outcome is sent).
    """
    try:
        call = _load(payload)
    except BaseException as exc:
        return _fail("argument-load", exc)
    keep.append(call)
    fn, args, kwargs = call
    try:
        result = invoke(fn, args, kwargs)
    except BaseException as exc:
        keep.append(exc)
        return _encode_exception(exc)
    keep.append(result)
    return _encode_result(result)


# -- start-up ---------------------------------------------------------------------------


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except Exception:  # best effort: EOF on the task pipe is the portable signal
        return


def _start(task_fd: int, result_fd: int, config: WorkerConfig) -> bool:
    """Prepare this process; return False when the initializer failed (reported)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    for fd in config.close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    from unirun import _warm

    # A run_all inside a task gets backends of its own (depth 1), as in a thread worker.
    _warm.nesting_depth.set(1)
    config.log_settings.apply()
    if config.init is not None:
        try:
            initializer, initargs = pickle.loads(config.init)
            initializer(*initargs)
        except BaseException as exc:
            _send(result_fd, 0, INIT_FAILED, format_remote(exc).encode("utf-8", "replace"))
            return False
    # After the initializer, so that its logging.basicConfig() still configures this
    # worker (the forwarder would make it a no-op); its handlers then work alongside.
    logging.getLogger().addHandler(ForwardHandler(functools.partial(_send, result_fd, 0, LOG)))
    _send(result_fd, 0, READY)
    return True


def _watch_parent(life_fd: int) -> None:
    """Exit at once when the parent process dies (its end of the lifeline closes).

    EOF on the task pipe is only seen between tasks, and under forkserver the kernel's
    parent-death signal follows the forkserver, which outlives the parent while its
    children hold its pipe: this thread covers a parent killed while a task runs.
    """
    try:
        while os.read(life_fd, 1):
            pass
    except OSError:
        pass
    os._exit(0)


def worker_main(task_conn: Any, result_conn: Any, life_conn: Any, config: WorkerConfig) -> None:
    """The target of every worker process."""
    task_fd, result_fd = os.dup(task_conn.fileno()), os.dup(result_conn.fileno())
    life_fd = os.dup(life_conn.fileno())
    for conn in (task_conn, result_conn, life_conn):
        conn.close()
    threading.Thread(target=_watch_parent, args=(life_fd,), daemon=True).start()
    try:
        if not _start(task_fd, result_fd, config):
            return
        if config.async_concurrency > 1:
            import asyncio  # only workers that run coroutines pay for it

            asyncio.run(_serve_async(task_fd, result_fd, config))
        else:
            _serve(task_fd, result_fd, config.max_tasks)
    except BrokenPipeError:  # the parent went away
        pass
    finally:
        from unirun._warm import WARM

        WARM.shutdown_all()  # backends nested in tasks; atexit does not run in workers


def _serve(task_fd: int, result_fd: int, max_tasks: int | None) -> None:
    reader = open(task_fd, "rb", buffering=1 << 16)  # noqa: SIM115 - lives as long as we do
    done = 0
    with reader:
        while True:
            header = reader.read(HEADER.size)
            if len(header) < HEADER.size:
                return  # EOF: shutdown, or the parent died
            length, task_id, kind = HEADER.unpack(header)
            payload = reader.read(length)
            if len(payload) < length:
                return
            if kind == CANCEL:
                continue
            keep: list[object] = []
            status, body = run_payload(payload, keep)
            _send(result_fd, task_id, status, body)
            # Drop the call only after its outcome is sent: a crash in a destructor here
            # (gc of the arguments) then cannot cost the result, and the parent tells it
            # apart from a crash in the next task because that task is still unread.
            del payload, body, keep
            done += 1
            if max_tasks is not None and done >= max_tasks:
                return


async def _serve_async(task_fd: int, result_fd: int, config: WorkerConfig) -> None:
    """Run up to ``async_concurrency`` async tasks at once on this process's event loop.

    Sync tasks (sent alone by the parent) run in a helper thread, so the loop keeps
    reading the pipe (and cancellations) meanwhile.
    """
    import asyncio
    import inspect
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    os.set_blocking(task_fd, False)
    frames = FrameReader()
    running: dict[int, asyncio.Task[None]] = {}
    finished = asyncio.Event()
    state = {"done": 0, "eof": False}
    threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unirun-worker-sync")

    def settle(task_id: int, status: int, body: bytes) -> None:
        _send(result_fd, task_id, status, body)
        state["done"] += 1
        if config.max_tasks is not None and state["done"] >= config.max_tasks:
            finished.set()

    async def run_async(task_id: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            try:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except asyncio.CancelledError:
                return  # the parent cancelled it and already settled its future
            except BaseException as exc:
                settle(task_id, *_encode_exception(exc))
                return
            settle(task_id, *_encode_result(result))
        finally:
            running.pop(task_id, None)

    async def run_sync(task_id: int, payload: bytes) -> None:
        keep: list[object] = []
        try:
            status, body = await loop.run_in_executor(threads, run_payload, payload, keep)
            settle(task_id, status, body)
            del keep
        finally:
            running.pop(task_id, None)

    def start(frame: Frame) -> None:
        if frame.kind == CANCEL:
            task = running.get(frame.task_id)
            if task is not None:
                task.cancel()
            return
        if frame.kind == RUN_SYNC:
            running[frame.task_id] = loop.create_task(run_sync(frame.task_id, frame.payload))
            return
        try:
            fn, args, kwargs = _load(frame.payload)
        except BaseException as exc:
            settle(frame.task_id, *_fail("argument-load", exc))
            return
        running[frame.task_id] = loop.create_task(run_async(frame.task_id, fn, args, kwargs))

    def on_readable() -> None:
        try:
            data = os.read(task_fd, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            state["eof"] = True
            loop.remove_reader(task_fd)
            finished.set()
            return
        for frame in frames.feed(data):
            start(frame)

    loop.add_reader(task_fd, on_readable)
    try:
        await finished.wait()
        if not state["eof"]:  # recycled after max_tasks: finish what runs, then exit
            loop.remove_reader(task_fd)
            while running:
                await asyncio.gather(*running.values(), return_exceptions=True)
    finally:
        for task in list(running.values()):
            task.cancel()
        threads.shutdown(wait=False)
        os.close(task_fd)
