"""``unirun.shared``: big inputs in shared memory, read by worker processes without a copy.

The round trip on every backend is in ``tests/contract/test_shared_memory.py``; here: the
object itself, no copy in workers, ownership (only the creating process unlinks), and a
clean interpreter exit (no segment left, nothing on stderr).
"""

from __future__ import annotations

import array
import errno
import importlib
import os
import pickle
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import unirun
import unirun._shared as unirun_shared
from tests.helpers import start_process_helpers

if TYPE_CHECKING:
    from typing_extensions import Buffer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shared memory")

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


@pytest.fixture(autouse=True, scope="module")
def _resource_tracker() -> None:
    """Start the forkserver and resource tracker before the leak check counts descriptors.

    ``unirun.shared`` registers its segments with the tracker; both live as long as the
    test process.
    """
    from multiprocessing import resource_tracker

    start_process_helpers()
    resource_tracker.ensure_running()


@pytest.fixture
def pool() -> Iterator[unirun.ProcessBackend]:
    with unirun.ProcessBackend(max_workers=2) as backend:
        yield backend


def segment_exists(name: str) -> bool:
    """Whether segment ``name`` can be opened (not ``SharedMemory(name)``, which would
    register it with the resource tracker a second time before Python 3.13)."""
    from _posixshmem import shm_open  # type: ignore[import-not-found]

    try:
        fd: int = shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


# -- tasks, importable so that workers unpickle them by reference ------------------------


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def touch(blob: unirun.Shared) -> tuple[int, int, int]:
    """Read one byte of every page; return a checksum and this process's memory (KiB)."""
    sample = bytes(blob.view[::4096])
    return zlib.crc32(sample), status_kib("RssAnon"), status_kib("RssShmem")


def describe(blob: unirun.Shared) -> tuple[str, int, bool, str]:
    return type(blob).__name__, len(blob), blob.view.readonly, blob.name


def write(blob: unirun.Shared) -> None:
    blob.view[0] = 0


def close_and_read(blob: unirun.Shared) -> bytes:
    blob.close()  # not the owner: does nothing
    return bytes(blob[:3])


def unpickle_twice(reference: bytes) -> bool:
    first, second = pickle.loads(reference), pickle.loads(reference)
    return bool(first is second and len(first) > 0)


def numpy_sum(blob: unirun.Shared) -> tuple[float, tuple[int, ...], str, bool]:
    np = importlib.import_module("numpy")
    a = np.asarray(blob.view)
    return float(a.sum()), a.shape, str(a.dtype), bool(a.flags.writeable)


_KEPT: list[unirun.Shared] = []


def make_and_keep(size: int) -> str:
    """Make a Shared in a worker and keep it there, unclosed, until the worker exits."""
    blob = unirun.shared(b"w" * size)
    _KEPT.append(blob)
    return blob.name


# -- the object ---------------------------------------------------------------------------


def test_reads_like_a_read_only_memoryview() -> None:
    data = b"hello, shared world"
    with unirun.shared(data) as blob:
        assert isinstance(blob, unirun.Shared)
        assert len(blob) == blob.nbytes == len(data)
        assert bytes(blob) == data
        assert blob[0] == data[0]
        part = blob[7:13]
        assert isinstance(part, memoryview)
        assert bytes(part) == b"shared"
        view = blob.view
        assert view.readonly
        assert view.tobytes() == data
        assert (blob.format, blob.shape) == ("B", (len(data),))
        with pytest.raises(TypeError):
            view[0] = 0
        assert blob.name.startswith("unirun_")
        assert "unirun_" in repr(blob)
        del part, view


def test_accepts_every_bytes_like_kind() -> None:
    for data in (b"ab", bytearray(b"ab"), memoryview(b"xab")[1:], array.array("B", b"ab")):
        with unirun.shared(data) as blob:
            assert bytes(blob) == b"ab"


def test_keeps_format_and_shape() -> None:
    with unirun.shared(array.array("d", [1.5, 2.5, 3.5])) as blob:
        assert (blob.format, blob.shape, len(blob), blob.nbytes) == ("d", (3,), 3, 24)
        assert blob[1] == 2.5
        assert blob.view.tolist() == [1.5, 2.5, 3.5]


def test_empty_data() -> None:
    with unirun.shared(b"") as blob:
        assert (len(blob), bytes(blob)) == (0, b"")
        assert pickle.loads(pickle.dumps(blob)) is blob


def test_bad_input() -> None:
    with pytest.raises(TypeError, match=r"bytes-like object .* got str"):
        unirun.shared("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C-contiguous"):
        unirun.shared(memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError, match=r"unirun\.shared\(data\)"):
        unirun.Shared(b"x")


def test_shared_of_a_shared_is_itself() -> None:
    with unirun.shared(b"x") as blob:
        assert unirun.shared(blob) is blob


def test_pickles_by_reference() -> None:
    with unirun.shared(bytes(8 * MIB)) as blob:
        reference = pickle.dumps(blob)
        assert len(reference) < 200
        assert pickle.loads(reference) is blob  # in the owner: the owner itself


def test_fills_through_a_mapping_where_a_segment_is_no_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(unirun_shared, "WRITABLE_FD", False)  # as on macOS
    data = array.array("i", range(1000))
    with unirun.shared(data) as blob:
        assert blob.view.tolist() == data.tolist()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a segment is a file")
def test_full_shared_memory_is_a_clear_error_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write = os.write

    def full(fd: int, data: Buffer) -> int:  # /dev/shm is full; other writes go on
        if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/shm/unirun_"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    before = set(os.listdir("/dev/shm"))
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match=r"cannot get 1,024 bytes of shared memory.*--shm-size"):
        unirun.shared(bytes(1024))
    monkeypatch.undo()
    assert {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("unirun_")} == set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists /dev/shm")
def test_a_failed_registration_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from multiprocessing import resource_tracker

    def broken(name: str, rtype: str) -> None:
        raise RuntimeError("no tracker")

    before = set(os.listdir("/dev/shm"))
    monkeypatch.setattr(resource_tracker, "register", broken)
    with pytest.raises(RuntimeError, match="no tracker"):
        unirun.shared(b"abc")
    assert {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("unirun_")} == set()


# -- lifetime ------------------------------------------------------------------------------


def test_close_unlinks_the_segment() -> None:
    blob = unirun.shared(b"abc")
    assert segment_exists(blob.name)
    blob.close()
    assert blob.closed
    assert not segment_exists(blob.name)
    blob.close()  # again: nothing


def test_use_after_close_raises_value_error() -> None:
    blob = unirun.shared(b"abc")
    reference = pickle.dumps(blob)
    blob.close()
    message = rf"unirun\.Shared '{blob.name}' is closed"
    for use in (
        lambda: blob.view,
        lambda: len(blob),
        lambda: blob[0],
        lambda: bytes(blob),
        lambda: blob.format,
        lambda: pickle.dumps(blob),
        lambda: blob.__enter__(),
    ):
        with pytest.raises(ValueError, match=message):
            use()
    assert "closed" in repr(blob)
    with pytest.raises(FileNotFoundError, match=rf"'{blob.name}' \(3 bytes\) cannot be opened"):
        pickle.loads(reference)


def test_views_outlive_close() -> None:
    blob = unirun.shared(b"still here")
    view = blob.view
    blob.close()
    assert not segment_exists(blob.name)
    assert view.tobytes() == b"still here"  # the mapping goes with the last view
    view.release()


def test_garbage_collection_unlinks() -> None:
    blob = unirun.shared(b"abc")
    name = blob.name
    del blob
    assert not segment_exists(name)


# -- worker processes ------------------------------------------------------------------------


def test_process_workers_map_the_same_memory_read_only(pool: unirun.ProcessBackend) -> None:
    with unirun.shared(b"payload") as blob:
        name, size, readonly, seen = pool.submit(describe, blob).result(timeout=30)
        assert (name, size, readonly, seen) == ("Shared", 7, True, blob.name)
        with pytest.raises(TypeError, match="read-only"):
            pool.submit(write, blob).result(timeout=30)
        assert pool.submit(close_and_read, blob).result(timeout=30) == b"pay"
        assert pool.submit(unpickle_twice, pickle.dumps(blob)).result(timeout=30)
        # workers never unlink: not when their tasks end, not when they exit
        assert segment_exists(blob.name)
        pool.shutdown(wait=True)
        assert segment_exists(blob.name)
        assert bytes(blob) == b"payload"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_workers_do_not_copy(pool: unirun.ProcessBackend) -> None:
    """64 tasks read a 64 MiB Shared, one byte per page: 4 GiB if each got a copy.

    A copy would be anonymous memory in the worker (RssAnon >= 64 MiB while the task
    runs); the shared pages show as RssShmem instead.
    """
    data = os.urandom(64 * MIB)
    expected = zlib.crc32(bytes(memoryview(data)[::4096]))
    with unirun.shared(data) as blob:
        del data
        results = pool.run_all([unirun.task(touch, blob) for _ in range(64)], chunksize=1)
    assert {crc for crc, _, _ in results} == {expected}
    assert max(anon for _, anon, _ in results) < 48 * 1024
    assert min(shmem for _, _, shmem in results) >= 60 * 1024


def test_a_task_after_close_gets_a_clear_error(pool: unirun.ProcessBackend) -> None:
    blob = unirun.shared(b"gone soon")
    reference = pickle.dumps(blob)
    blob.close()
    with pytest.raises(FileNotFoundError) as info:
        pool.submit(pickle.loads, reference).result(timeout=30)
    message = str(info.value)
    assert blob.name in message
    assert "Keep the Shared open until the tasks that read it are done" in message
    assert "same machine" in message


def test_a_shared_made_in_a_worker_goes_when_the_worker_exits() -> None:
    with unirun.ProcessBackend(max_workers=1) as pool:
        name = pool.submit(make_and_keep, 1000).result(timeout=30)
        assert segment_exists(name)
    assert not segment_exists(name)


def test_numpy_array_round_trip(pool: unirun.ProcessBackend) -> None:
    np = pytest.importorskip("numpy")
    array_in = np.arange(12.0).reshape(3, 4)
    with unirun.shared(array_in) as blob:
        assert (blob.format, blob.shape, len(blob)) == ("d", (3, 4), 3)
        local = np.asarray(blob.view)
        assert local.dtype == array_in.dtype
        assert not local.flags.writeable
        assert (local == array_in).all()
        del local
        expected = (66.0, (3, 4), "float64", False)
        assert pool.submit(numpy_sum, blob).result(timeout=30) == expected
        assert unirun.run_all([unirun.task(numpy_sum, blob)], mode="thread") == [expected]
    odd = np.zeros(3, dtype=">f8")  # a format memoryview cannot cast to: flat bytes
    with unirun.shared(odd) as blob:
        assert (blob.format, blob.shape) == ("B", (24,))
        assert (np.frombuffer(blob.view, dtype=">f8") == odd).all()


# -- interpreter exit ---------------------------------------------------------------------

EXIT_SCRIPT = """
import os, pickle, sys
import unirun
from tests.test_shared import make_and_keep

if __name__ == "__main__":
    used = unirun.shared(b"u" * 1_000_000)  # read by process workers, never closed
    idle = unirun.shared(bytearray(10))  # never sent anywhere, never closed
    child = os.fork()  # (before any thread starts)
    if child == 0:  # a process forked from the owner drops its copies: nothing unlinked
        used.close()
        del idle
        sys.exit(0)
    assert os.waitpid(child, 0)[1] == 0
    assert bytes(unirun.shared(used)[:1]) == b"u"
    assert unirun.map(len, [used] * 8, mode="process", chunksize=1) == [1_000_000] * 8
    made = unirun.run_all([unirun.task(make_and_keep, 100)], mode="process")[0]
    print(used.name, idle.name, made)
"""


def test_exit_with_unclosed_shared_leaves_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no resource_tracker warnings, from the parent or the workers
    names = out.stdout.split()
    assert len(names) == 3
    for name in names:
        assert not segment_exists(name), name


def test_shared_module_is_not_imported_by_unirun() -> None:
    code = "import sys, unirun; print('unirun._shared' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "False", out.stderr
