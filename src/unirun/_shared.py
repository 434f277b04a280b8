"""Shared: big bytes and buffers that reach worker processes without a copy.

The data flow::

    caller's process (the owner)                     any process on the same machine
    shared(data) --one copy--> POSIX shared memory segment "unirun_<16 hex>"
        | read-only mmap of it: Shared.view              ^
        |                                                | shm_open + read-only mmap:
        +--pickle: _attach(name, nbytes, format, shape)--+ no copy; one mapping per
           (about 100 bytes, whatever the size)            segment while it is in use
    close() / garbage collection / interpreter exit: the owner unlinks the segment

The segment is the same kind ``multiprocessing.shared_memory.SharedMemory`` makes, and it
is registered with multiprocessing's resource tracker in the owner only, so a crashed
owner's segments are still removed. Workers open it with ``shm_open`` and ``mmap`` rather
than ``SharedMemory(name)``: before Python 3.13 the latter registers the segment with the
resource tracker of the *attaching* process (CPython gh-82300), and the usual fix of
unregistering right after attaching is worse under ``forkserver`` and ``spawn``, whose
children share the parent's tracker: it cancels the owner's own registration, so the
tracker prints a ``KeyError`` when the owner unlinks, and no longer cleans up after a
crash. Not going through ``SharedMemory`` also gives every process a read-only mapping, and
lets the owner fill the segment with ``write()`` on Linux (faster than through a mapping, and
a full ``/dev/shm`` is an ``ENOSPC`` error there instead of a SIGBUS).

Before Python 3.13 each mapping holds a file descriptor (``mmap`` keeps a duplicate), so a
process has one open per live ``Shared``; from 3.13 on, none (``trackfd=False``).

POSIX only (Linux, macOS), like ``mode="process"``.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final, NoReturn

if TYPE_CHECKING:
    from multiprocessing.util import Finalize

    from typing_extensions import Buffer, Self

__all__ = ["Shared", "shared"]

#: The prefix of every segment's name (``/dev/shm/unirun_...`` on Linux).
PREFIX: Final = "unirun_"

#: The live ``Shared`` objects of this process by segment name: an unpickled reference
#: becomes the object already here (the owner itself, or a mapping made for an earlier
#: task that is still in use). Weak, so that a warm worker does not keep a segment mapped
#: (and its memory in use) after the tasks that used it are done and the owner closed it.
_LIVE: weakref.WeakValueDictionary[str, Shared] = weakref.WeakValueDictionary()
_LIVE_LOCK: Final = threading.Lock()


class Shared:
    """A read-only bytes-like object in shared memory, sent to processes by reference.

    Made by [`unirun.shared`][unirun.shared]. It behaves as a read-only ``memoryview`` of
    the data it was made from, with the same ``format``, ``shape`` and ``len()``; read it
    through [`view`][unirun.Shared.view] (a new ``memoryview`` each time, no copy). Indexing
    gives an item (an ``int`` for bytes), slicing a read-only ``memoryview`` (no copy; wrap
    it in ``bytes()`` for one), ``bytes(s)`` a copy of everything. On Python 3.12+ it is a
    buffer too: ``memoryview(s)``, ``numpy.asarray(s)``, ``hashlib.sha256(s)``.

    A task gets a ``Shared`` in every mode. In serial, thread, asyncio and gevent modes it
    is this very object. To a worker process (process mode, Dask workers on this machine)
    it is pickled as the segment's name and size, and the worker maps the same memory
    read-only: no copy, however big, and one mapping per process while in use.

    The process that made it owns the segment: ``close()`` (or leaving a ``with`` block)
    unlinks it, and so do garbage collection and interpreter exit if you forget. Close it
    after the tasks that use it are done: a task that starts later cannot open it. In
    any other process ``close()`` does nothing; that process's mapping goes away with
    its last reference.
    """

    __slots__ = ("__weakref__", "_finalizer", "_name", "_nbytes", "_view")

    _name: str
    _nbytes: int
    _view: memoryview | None
    _finalizer: Finalize[None] | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("Shared objects are made by unirun.shared(data)")

    @classmethod
    def _make(
        cls, name: str, nbytes: int, view: memoryview, finalizer: Finalize[None] | None
    ) -> Self:
        self = object.__new__(cls)
        self._name, self._nbytes, self._view, self._finalizer = name, nbytes, view, finalizer
        return self

    # -- reading ------------------------------------------------------------------------

    @property
    def view(self) -> memoryview:
        """A new read-only ``memoryview`` of the data (no copy), with its format and shape.

        ``numpy.asarray(s.view)`` gives back a read-only array of the original dtype and
        shape, for the formats ``memoryview`` can express (native single-character ones);
        other data (big-endian, structured, complex) comes as flat bytes (format ``"B"``).

        Raises:
            ValueError: The ``Shared`` was closed.
        """
        return self._open()[:]

    @property
    def name(self) -> str:
        """The shared memory segment's name (``unirun_`` and 16 hex digits)."""
        return self._name

    @property
    def nbytes(self) -> int:
        """The size of the data in bytes."""
        return self._nbytes

    @property
    def format(self) -> str:
        """The ``struct`` format of one item, as in ``memoryview.format``."""
        return self._open().format

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, as in ``memoryview.shape``."""
        return self._open().shape or ()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (in this process)."""
        return self._view is None

    def __len__(self) -> int:
        return len(self._open())

    def __getitem__(self, key: Any) -> Any:
        return self._open()[key]

    def __bytes__(self) -> bytes:
        return self._open().tobytes()

    def __buffer__(self, flags: int, /) -> memoryview:
        """The buffer protocol (PEP 688, Python 3.12+): ``memoryview(s)`` is ``s.view``."""
        return self.view

    def _open(self) -> memoryview:
        view = self._view
        if view is None:
            _closed(self._name)
        return view

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Unlink the shared memory segment, in the process that made this ``Shared``.

        Tasks already reading it keep their mappings; a task that starts later cannot open
        it, and using this object afterwards raises ``ValueError``. The memory is freed
        once no process maps it any more. Memoryviews taken from ``view`` stay valid
        until they are released. Calling ``close()`` again does nothing, and in any other
        process ``close()`` does nothing at all.
        """
        if self._finalizer is None:  # a reference received from another process
            return
        view, self._view = self._view, None
        if view is not None:
            view.release()  # its slices handed out by `view` keep the mapping alive
        with _LIVE_LOCK:
            if _LIVE.get(self._name) is self:
                del _LIVE[self._name]
        self._finalizer()

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        view = self._open()
        return (_attach, (self._name, self._nbytes, view.format, view.shape or ()))

    def __repr__(self) -> str:
        state = "closed" if self._view is None else f"format={self.format!r}, shape={self.shape}"
        return f"<unirun.Shared {self._name!r}, {self._nbytes:,} bytes, {state}>"


def shared(data: Buffer) -> Shared:
    """Copy bytes-like data once into shared memory, for tasks in any mode to read.

    Pass the returned [`Shared`][unirun.Shared] to tasks instead of ``data``: a worker
    process then maps the same memory instead of receiving a pickled copy, which for big
    inputs is the difference between milliseconds and the time to copy every byte twice
    through a pipe. Close it (or use ``with``) once the tasks are done.

    ```python
    def crc(blob: unirun.Shared, start: int, stop: int) -> int:
        return zlib.crc32(blob[start:stop])  # a slice is a memoryview: no copy

    with unirun.shared(big_bytes) as blob:
        step = 1 << 20
        tasks = [unirun.task(crc, blob, i, i + step) for i in range(0, len(blob), step)]
        crcs = unirun.run_all(tasks, mode="process")
    ```

    Works on POSIX systems (Linux, macOS). The data lives in ``/dev/shm`` on Linux, whose
    size is the limit (64 MiB by default in Docker; ``docker run --shm-size=...``).

    Args:
        data: ``bytes``, ``bytearray``, ``memoryview``, ``array.array``, a NumPy array, or
            any C-contiguous object with the buffer protocol. A ``Shared`` is returned as
            it is.

    Returns:
        A ``Shared`` owned by this process, holding a copy of ``data``.

    Raises:
        TypeError: ``data`` does not support the buffer protocol.
        ValueError: ``data`` is not C-contiguous.
        OSError: The shared memory cannot be created, e.g. ``/dev/shm`` is full.
        NotImplementedError: Windows.
    """
    if isinstance(data, Shared):
        data._open()
        return data
    if sys.platform == "win32":
        raise NotImplementedError(
            "unirun.shared() needs a POSIX system (Linux, macOS) for now, like "
            "mode='process'; pass the bytes themselves on Windows"
        )
    try:
        source = memoryview(data)
    except TypeError:
        raise TypeError(
            "unirun.shared() takes a bytes-like object (bytes, bytearray, memoryview, "
            f"array.array, a NumPy array), got {type(data).__name__}"
        ) from None
    with source:
        if not source.c_contiguous:
            raise ValueError(
                f"unirun.shared() needs C-contiguous data; this {type(data).__name__} is "
                "not. Pass a contiguous copy, e.g. numpy.ascontiguousarray(a) or bytes(data)"
            )
        nbytes, layout = source.nbytes, (source.format, source.shape or ())
        name = _create(source)
    try:
        mapping = _map(name, nbytes)
    except BaseException:
        _unlink(name)
        raise
    from multiprocessing.util import Finalize

    # Not weakref.finalize: its atexit hook does not run in multiprocessing's children,
    # which leave by os._exit; Finalize(exitpriority=...) runs there too (a Shared made
    # inside a worker's task), and skips a process forked from the owner.
    obj = Shared._make(name, nbytes, _typed_view(mapping, nbytes, *layout), None)
    obj._finalizer = Finalize(obj, _release, args=(mapping, name, os.getpid()), exitpriority=0)
    with _LIVE_LOCK:
        _LIVE[name] = obj
    return obj


# -- the segment ------------------------------------------------------------------------


def _create(source: memoryview) -> str:
    """Create a new segment holding ``source``'s bytes; return its name (without "/")."""
    from _posixshmem import shm_open, shm_unlink  # type: ignore[import-not-found]  # no stub
    from multiprocessing import resource_tracker

    size = max(source.nbytes, 1)  # a segment (and an mmap) cannot be empty
    while True:
        name = PREFIX + os.urandom(8).hex()  # 24 characters with "/": macOS allows 31
        try:
            fd: int = shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:
            continue
        break
    try:  # registered at once: the tracker removes it if this process dies from here on
        resource_tracker.register("/" + name, "shared_memory")
    except BaseException:
        os.close(fd)
        shm_unlink("/" + name)
        raise
    try:
        try:
            _fill(fd, source, size)
        finally:
            os.close(fd)
    except BaseException as exc:
        _unlink(name)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.ENOMEM):
            raise OSError(
                exc.errno,
                f"unirun.shared() cannot get {size:,} bytes of shared memory: "
                f"{exc.strerror}. On Linux it comes from /dev/shm, which is too small or "
                "full (in Docker: docker run --shm-size=...); or pass the data itself",
            ) from exc
        raise
    return name


#: Whether a segment can be written like a file (Linux: a tmpfs file; not macOS).
WRITABLE_FD: Final = sys.platform.startswith("linux")


def _fill(fd: int, source: memoryview, size: int) -> None:
    """Give the new segment ``size`` bytes and copy ``source`` into it.

    Where a segment is a file, ``write()`` it: faster than through a mapping (no page
    faults), and a full ``/dev/shm`` is an ``ENOSPC`` error, where writing through a
    mapping would kill this process with SIGBUS.
    """
    os.ftruncate(fd, size)
    if WRITABLE_FD:
        if source.nbytes:  # (cast() refuses a 0 in the shape)
            left = source.cast("B")
            while left:
                left = left[os.write(fd, left) :]
        return
    fallocate = getattr(os, "posix_fallocate", None)  # reserve the pages, where it can
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    with mmap.mmap(fd, size) as target:
        target.write(source)


def _map(name: str, nbytes: int) -> mmap.mmap:
    """Map segment ``name`` read-only; a clear error when it cannot be opened here."""
    from _posixshmem import shm_open

    try:
        fd: int = shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except OSError as exc:
        raise OSError(exc.errno, _cannot_open(name, nbytes, exc)) from exc
    try:
        if sys.version_info >= (3, 13):  # no duplicate of the descriptor for the mapping
            return mmap.mmap(fd, max(nbytes, 1), access=mmap.ACCESS_READ, trackfd=False)
        return mmap.mmap(fd, max(nbytes, 1), access=mmap.ACCESS_READ)  # keeps a duplicate
    finally:
        os.close(fd)


def _cannot_open(name: str, nbytes: int, exc: OSError) -> str:
    import socket

    return (
        f"unirun.Shared {name!r} ({nbytes:,} bytes) cannot be opened in this process "
        f"(pid {os.getpid()} on {socket.gethostname()!r}): {exc.strerror}. Its shared memory "
        "segment is gone (the Shared was closed or garbage-collected in the process that "
        "made it before this task started), or it is on another machine. Keep the Shared "
        "open until the tasks that read it are done (`with unirun.shared(data) as s:` "
        "around the run), and send it only to workers on the same machine (mode='process', "
        "or a Dask LocalCluster); to other machines send the data itself"
    )


def _unlink(name: str) -> None:
    """Remove segment ``name`` and take it off the resource tracker's list (the owner)."""
    from _posixshmem import shm_unlink
    from multiprocessing import resource_tracker

    try:
        shm_unlink("/" + name)
    except FileNotFoundError:
        pass  # removed by someone else; the tracker must still forget it
    finally:
        resource_tracker.unregister("/" + name, "shared_memory")


def _release(mapping: mmap.mmap, name: str, owner_pid: int) -> None:
    """The owner's finalizer: unlink the segment and drop this process's mapping."""
    if os.getpid() == owner_pid:  # a process forked from the owner never unlinks
        _unlink(name)
    try:
        mapping.close()
    except BufferError:
        pass  # memoryviews of it are alive; the mapping goes with the last of them


def _typed_view(mapping: mmap.mmap, nbytes: int, fmt: str, shape: tuple[int, ...]) -> memoryview:
    flat = memoryview(mapping)[:nbytes]
    if fmt in ("B", "@B") and len(shape) == 1:
        return flat
    cast: Any = flat.cast  # the format is data here, not a literal typeshed could check
    try:
        view: memoryview = cast(fmt, shape)
    except (TypeError, ValueError):  # a format memoryview cannot cast to, or a 0 in shape
        return flat
    return view


def _attach(name: str, nbytes: int, fmt: str, shape: tuple[int, ...]) -> Shared:
    """Unpickle a ``Shared``: the live object for ``name`` here, or a new mapping."""
    with _LIVE_LOCK:
        obj = _LIVE.get(name)
        if obj is not None and obj._view is not None:
            return obj
        obj = Shared._make(name, nbytes, _typed_view(_map(name, nbytes), nbytes, fmt, shape), None)
        _LIVE[name] = obj
        return obj


def _closed(name: str) -> NoReturn:
    raise ValueError(
        f"unirun.Shared {name!r} is closed: its shared memory was released. Close it only "
        "after the tasks that read it are done, or make a new one with unirun.shared(data)"
    )
