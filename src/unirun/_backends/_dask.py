"""DaskBackend: the same ``run_all`` on a Dask cluster, when one machine is not enough.

Data flow::

    engine --_submit(Call)--> cloudpickle (fn, args, kwargs) here    (argument errors: now)
        --client.submit(_run_remote, payload)--> scheduler --> a worker runs _run_remote:
            unpickle, invoke (async callables run on a private loop), pickle the outcome
        --bytes--> _settle() on the client's event loop thread --> concurrent.futures.Future

Why the call and its outcome cross the wire as bytes that unirun pickles itself: a call
that cannot be pickled fails at submit as ``TaskSerializationError`` for that task (Dask
would log the failure and raise a bare ``TypeError``), and a result or exception that cannot
be pickled back becomes that task's ``TaskSerializationError`` instead of a ``TypeError``
that looks as if the task had raised it. The worker also measures how long the call took,
which the engine uses to size chunks of tiny tasks.

What Dask can and cannot stop: a task that has not reached a worker is cancelled
(``client.cancel``); a Python function already running in a worker thread cannot be
stopped, so it runs on and its result is dropped ("abandoned"). A worker that dies is
replaced by its nanny and Dask reschedules its tasks; a task whose workers died more than
the scheduler's ``allowed-failures`` times becomes ``WorkerCrashedError`` (from
``KilledWorker``).

This is the only module that imports ``distributed``.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import threading
import time
import uuid
import weakref
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import wait as wait_futures
from typing import Any, ClassVar, Final

import cloudpickle
import distributed

from unirun._backends._base import BackendBase
from unirun._backends._exit import AT_EXIT
from unirun._errors import (
    SerializationPhase,
    TaskSerializationError,
    TimeoutAction,
    WorkerCrashedError,
)
from unirun._remote import attach_remote_traceback, format_remote
from unirun._tasks import Call, close_coroutines, invoke

__all__ = ["DaskBackend"]

logger = logging.getLogger("unirun")

#: Seconds to wait for the client and an owned cluster to close.
_CLOSE_TIMEOUT: Final = 20.0
_counter = itertools.count()
#: The event topic on which workers say that a task started.
_STARTED: Final = "unirun-started"


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- what runs on the worker ------------------------------------------------------------


def _run_remote(payload: bytes, key: str, report_start: bool = True) -> bytes:
    """Run one pickled call on a Dask worker; return its pickled outcome.

    It first tells the client (an event on the ``unirun-started`` topic) that ``key``
    started, so that ``task_timeout`` counts from the start of the work, not from the
    submission.

    The outcome is ``(ok, value, traceback_text, seconds)``; it is never an exception
    raised to Dask, so Dask's own error path only carries faults of Dask itself
    (``KilledWorker``, a worker that cannot import unirun, ...).
    """
    start = time.perf_counter()
    if report_start:
        try:
            distributed.get_worker().log_event(_STARTED, key)
        except ValueError:  # not on a worker (a test calling it directly)
            pass
    try:
        fn, args, kwargs = pickle.loads(payload)
    except BaseException as exc:
        error = TaskSerializationError(
            f"the task could not be unpickled on the Dask worker: {exc!r}; "
            "the worker needs the same packages (and unirun) as the client",
            phase="argument-load",
        )
        return _dump((False, error, format_remote(exc), time.perf_counter() - start))
    try:
        outcome: tuple[bool, Any, str | None, float] = (True, invoke(fn, args, kwargs), None, 0.0)
    except BaseException as exc:  # SystemExit in a task is that task's outcome
        outcome = (False, exc, format_remote(exc), 0.0)
    outcome = (*outcome[:3], time.perf_counter() - start)
    try:
        if outcome[0]:
            return _dump(outcome)
        return _dump((False, _Raised(outcome[1]), *outcome[2:]))
    except Exception as exc:
        phase: SerializationPhase = "result" if outcome[0] else "exception"
        what = type(outcome[1]).__name__
        if not outcome[0]:
            what += f": {outcome[1]}"  # keep the task's own message
        error = TaskSerializationError(
            f"the task's {phase} ({what}) could not be pickled back from the Dask worker: {exc!r}",
            phase=phase,
        )
        # for an exception, its own traceback is the one worth showing
        tb = outcome[2] if not outcome[0] else format_remote(exc)
        return _dump((False, error, tb, outcome[3]))


class _Raised:
    """A task's exception, reduced by ``BaseException``'s own ``__reduce_ex__``.

    distributed installs tblib's exception reducer in ``copyreg``; it rebuilds exceptions
    without calling ``__init__``, so attributes set there are lost (``SystemExit.code``,
    ``StopIteration.value``). Reducing here, before pickling, keeps them.
    """

    def __init__(self, exc: BaseException) -> None:
        self.reduced: Any = exc.__reduce_ex__(pickle.HIGHEST_PROTOCOL)

    def rebuild(self) -> BaseException:
        fn, args, *rest = self.reduced
        try:
            exc: BaseException = fn(*args)
        except Exception:
            # an __init__ that cannot take its own args back: rebuild as tblib does
            exc = BaseException.__new__(fn)
            exc.args = args
        if rest and isinstance(rest[0], dict):
            exc.__dict__.update(rest[0])
        return exc


def _dump(obj: object) -> bytes:
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


# -- start times -----------------------------------------------------------------------------


class _StartListener:
    """Sets ``Call.started_at`` when a worker says a task started (one per client).

    Dask keeps one handler per topic and client, and several backends may share a client,
    so the handler is this shared object; it is found again through ``_LISTENERS``.
    """

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}

    def __call__(self, event: tuple[float, Any]) -> None:  # on the client's loop
        call = self.calls.pop(str(event[1]), None)
        if call is not None and call.ended_at is None:
            call.started_at = time.monotonic()


_LISTENERS: weakref.WeakKeyDictionary[distributed.Client, _StartListener] = (
    weakref.WeakKeyDictionary()
)
_LISTENERS_LOCK: Final = threading.Lock()


def _listener(client: distributed.Client) -> _StartListener:
    with _LISTENERS_LOCK:
        listener = _LISTENERS.get(client)
        if listener is None:
            listener = _LISTENERS[client] = _StartListener()
            client.subscribe_topic(_STARTED, listener)  # type: ignore[no-untyped-call]
        return listener


# -- the backend ----------------------------------------------------------------------------


class DaskBackend(BackendBase):
    """Runs tasks on a Dask cluster: a local one, a running one, or your own client.

    Args:
        address: The scheduler to join (``"tcp://host:8786"``, ``"tls://..."``). Left out
            (and no ``client``): a ``LocalCluster`` of worker processes, one thread each,
            bound to 127.0.0.1 with the dashboard off, started on the first task and
            closed by :meth:`shutdown`.
        client: A ready ``distributed.Client``. It stays yours: ``shutdown()`` cancels this
            backend's unfinished tasks (with ``cancel_futures=True``) but leaves the client
            open.
        max_workers: With the local cluster, how many worker processes (default: the CPUs
            this process may use). With ``address`` or ``client`` it only sizes how many
            tasks unirun keeps submitted (default: the cluster's threads when it connects).
        security: A ``distributed.security.Security`` (or ``True`` for temporary
            self-signed TLS credentials with the local cluster) passed to the client and
            the local cluster.
        **cluster_options: More ``LocalCluster`` keywords (``memory_limit``, ``protocol``,
            ...); only with the local cluster.

    Raises:
        ValueError: Both ``address`` and ``client`` given, or ``cluster_options`` with
            either of them.
    """

    mode: ClassVar[str] = "dask"
    # No "interrupt": Dask cannot stop a function already running in a worker thread.
    capabilities: ClassVar[frozenset[str]] = frozenset({"parallel", "processes", "coroutines"})
    supports_chunking: ClassVar[bool] = True

    def __init__(
        self,
        address: str | None = None,
        client: distributed.Client | None = None,
        max_workers: int | None = None,
        *,
        security: Any = None,
        **cluster_options: Any,
    ) -> None:
        if address is not None and client is not None:
            raise ValueError("DaskBackend takes address= or client=, not both")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {client!r}")
        if cluster_options and (address is not None or client is not None):
            raise ValueError(
                f"options {sorted(cluster_options)} configure a local cluster; they cannot "
                "be used with address= or client= (configure that cluster where it starts)"
            )
        self._address = address
        self._security = security
        self._cluster_options = cluster_options
        self._client: distributed.Client | None = client
        self._owns_client = client is None
        self._cluster: distributed.LocalCluster | None = None
        self._start_lock = threading.Lock()
        self._pending: dict[Future[Any], distributed.Future[Any]] = {}
        self._pending_lock = threading.Lock()
        self._workers_given = max_workers is not None
        self._listener = _StartListener()  # replaced by the client's when connected
        super().__init__(max_workers)
        if client is not None:
            self._listener = _listener(client)
            if max_workers is None:
                self._max_workers = self._cluster_threads(client)

    # -- connecting --------------------------------------------------------------------

    def _default_workers(self) -> int:
        # with address= this is replaced by the cluster's threads when it connects
        return _local_cpus()

    @staticmethod
    def _cluster_threads(client: distributed.Client) -> int:
        return max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]

    def _ensure_client(self) -> distributed.Client:
        client = self._client
        if client is not None:
            return client
        with self._start_lock:
            if self._client is not None:
                return self._client
            if self._is_shutdown:
                raise RuntimeError(f"cannot schedule new futures after shutdown ({self!r})")
            if self._address is not None:
                client = distributed.Client(  # type: ignore[no-untyped-call]
                    self._address, security=self._security, set_as_default=False
                )
                if not self._workers_given:
                    self._max_workers = self._cluster_threads(client)
            else:
                options: dict[str, Any] = {
                    "n_workers": self._max_workers,
                    "threads_per_worker": 1,
                    "processes": True,
                    "host": "127.0.0.1",
                    "dashboard_address": None,
                }
                if self._security is not None:
                    options["security"] = self._security
                options.update(self._cluster_options)
                # The scheduler serves /health and /metrics even with the dashboard off, by
                # default on port 8787 (warning when taken): keep it on a free loopback port.
                options["scheduler_kwargs"] = {
                    "dashboard": False,
                    "dashboard_address": "127.0.0.1:0",
                    **options.get("scheduler_kwargs", {}),
                }
                cluster = distributed.LocalCluster(**options)  # type: ignore[no-untyped-call]
                try:
                    # the client takes the cluster's security (``security=True``
                    # makes throw-away credentials that only the cluster has)
                    client = distributed.Client(  # type: ignore[no-untyped-call]
                        cluster, set_as_default=False
                    )
                except BaseException:
                    cluster.close()
                    raise
                self._cluster = cluster
            self._listener = _listener(client)
            self._client = client
            AT_EXIT.add(self)  # its own client (and cluster): finished at exit
            return client

    @property
    def client(self) -> distributed.Client:
        """The ``distributed.Client`` in use, connecting (or starting the cluster) first."""
        return self._ensure_client()

    # -- the hooks ---------------------------------------------------------------------

    @classmethod
    def _check_calls(cls, calls: list[Call]) -> None:
        bad = [call for call in calls if call.coroutine]
        if bad:
            close_coroutines(calls)
            raise TypeError(
                f"{bad[0].describe()} is a coroutine object, which cannot be sent to a Dask "
                "worker; pass the async function and its arguments instead, for example "
                "unirun.task(fetch, url)"
            )

    def _default_window(self) -> int:
        self._ensure_client()
        return 2 * self._max_workers

    def _submit(self, call: Call) -> Future[Any]:
        client = self._ensure_client()
        try:
            payload = _dump((call.fn, call.args, call.kwargs))
        except Exception as exc:
            raise TaskSerializationError(
                f"{call.describe()} could not be pickled for mode 'dask': {exc!r}. Tasks, "
                "their arguments and results must be picklable (cloudpickle) to reach a "
                "Dask worker",
                phase="argument",
                task_index=call.index,
            ) from exc
        name = getattr(call.fn, "__name__", None) or type(call.fn).__name__
        key = f"unirun-{name}-{next(_counter)}-{uuid.uuid4().hex[:12]}"
        future: Future[Any] = Future()
        self._listener.calls[key] = call  # started_at is set when the worker starts it
        dask_future = client.submit(_run_remote, payload, key, key=key, pure=False, retries=0)
        with self._pending_lock:
            self._pending[future] = dask_future
        loop = client.loop
        assert loop is not None
        loop.add_callback(self._settle, dask_future, future, call)
        return future

    async def _settle(
        self, dask_future: distributed.Future[Any], future: Future[Any], call: Call
    ) -> None:
        """Carry a Dask future's outcome to ``future`` (runs on the client's loop)."""
        try:
            outcome = await dask_future._result(raiseit=False)  # type: ignore[no-untyped-call]
            call.ended_at = time.monotonic()
            if isinstance(outcome, bytes):
                try:
                    ok, value, tb, seconds = pickle.loads(outcome)
                    if isinstance(value, _Raised):
                        value = value.rebuild()
                except Exception as exc:
                    error = TaskSerializationError(
                        f"the outcome of {call.describe()} could not be unpickled here: {exc!r}",
                        phase="result",
                        task_index=call.index,
                    )
                    error.__cause__ = exc
                    _set(future, False, error)
                    return
                call.started_at = call.ended_at - seconds
                if not ok:
                    attach_remote_traceback(value, tb)
                _set(future, ok, value)
            elif dask_future.status == "cancelled":
                _cancel(future)
            else:
                _set(future, False, self._translate(outcome, call))
        except BaseException as exc:  # never leave the caller waiting
            _set(future, False, exc)
        finally:
            self._listener.calls.pop(str(dask_future.key), None)
            with self._pending_lock:
                self._pending.pop(future, None)

    @staticmethod
    def _translate(outcome: Any, call: Call) -> BaseException:
        """Dask's own error for a task: ``KilledWorker`` becomes ``WorkerCrashedError``."""
        exc = outcome[1] if isinstance(outcome, tuple) and len(outcome) == 3 else outcome
        if not isinstance(exc, BaseException):
            return RuntimeError(f"Dask reported {outcome!r} for {call.describe()}")
        if isinstance(exc, distributed.KilledWorker):
            last = getattr(exc.last_worker, "address", exc.last_worker)
            error = WorkerCrashedError(
                f"{call.describe()} was running on Dask workers that died "
                f"{exc.allowed_failures + 1} times (the last: {last}); "
                "the scheduler gave up after distributed.scheduler.allowed-failures="
                f"{exc.allowed_failures}. Check the worker logs (memory limit, segfault, "
                "os._exit)",
                task_index=call.index,
            )
            error.__cause__ = exc
            return error
        return exc

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
        with self._pending_lock:
            dask_future = self._pending.pop(future, None)
        if dask_future is None or future.done():
            return "cancelled" if _cancel(future) else "abandoned"
        # Known to run once its worker said so (the start event): then Dask cannot stop it.
        started = call.started_at is not None
        self._listener.calls.pop(str(dask_future.key), None)
        _cancel(future)
        self._cancel([dask_future])
        return "abandoned" if started else "cancelled"

    def _cancel(self, dask_futures: list[distributed.Future[Any]]) -> None:
        if not dask_futures or self._client is None:
            return
        try:
            self._client.cancel(dask_futures)  # type: ignore[no-untyped-call]
        except Exception:  # a closing client: its futures are cancelled anyway
            logger.debug("unirun: could not cancel Dask futures", exc_info=True)

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        with self._start_lock:  # a concurrent first submit finishes starting first
            client = self._client
        if client is None:
            return
        with self._pending_lock:
            pending = dict(self._pending)
        if cancel_futures and pending:
            waiting = set(self._listener.calls)  # keys whose start was not reported yet
            queued = [(f, d) for f, d in pending.items() if str(d.key) in waiting]
            for future, _ in queued:
                _cancel(future)
            self._cancel([d for _, d in queued])
        if wait:
            wait_futures(list(pending))
        if self._owns_client:
            self._close()
        else:
            # the client stays open; drop what this backend still holds on it
            with self._pending_lock:
                left = list(self._pending.items())
                self._pending.clear()
            for future, _ in left:
                _cancel(future)
            self._cancel([d for _, d in left])

    def _close(self) -> None:
        client, cluster = self._client, self._cluster
        try:
            if client is not None:
                client.close(timeout=_CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
        finally:
            if cluster is not None:
                cluster.close(timeout=_CLOSE_TIMEOUT)
        with self._pending_lock:
            left = list(self._pending)
            self._pending.clear()
        for future in left:  # the client cancelled them; make sure nobody waits forever
            _cancel(future)

    def __repr__(self) -> str:
        where = (
            "client=<given>"
            if not self._owns_client
            else f"address={self._address!r}"
            if self._address
            else "local cluster"
        )
        state = "shut down" if self._is_shutdown else "running"
        return f"<DaskBackend {where} max_workers={self._max_workers} {state}>"


def _set(future: Future[Any], ok: bool, value: Any) -> None:
    """Settle ``future`` unless it was cancelled meanwhile (fail-fast, timeouts)."""
    if future.done():
        return
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except InvalidStateError:  # cancelled between the check and the set
        pass


_CANCEL_LOCK: Final = threading.Lock()


def _cancel(future: Future[Any]) -> bool:
    """Cancel ``future`` and notify its waiters, as an executor does for a queued task.

    ``concurrent.futures.wait`` only sees a cancelled future once it is "notified"; the
    lock keeps two threads from notifying twice (which the stdlib logs as critical).
    """
    with _CANCEL_LOCK:
        if future.cancelled():
            return True
        if not future.cancel():
            return False
        future.set_running_or_notify_cancel()
        return True
