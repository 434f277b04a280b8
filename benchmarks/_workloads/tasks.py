"""The functions the benchmarks run as tasks.

They live in an importable module (not ``__main__``) so every pool pickles them by
reference, the same way for unirun and for its peers; the runner puts ``benchmarks/`` on
``PYTHONPATH`` so spawned, forkserver and Dask workers can import them too.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Sequence, Sized

__all__ = [
    "asleep",
    "atiny",
    "block",
    "fetch",
    "fetch_async",
    "make_payloads",
    "nbytes",
    "nbytes_shared",
    "spin",
    "tiny",
]


def tiny(x: int) -> int:
    """Almost no work: what is measured is the per-task overhead."""
    return x + 1


async def atiny(x: int) -> int:
    """The async form of :func:`tiny`."""
    return x + 1


def spin(n: int) -> int:
    """Pure-Python CPU work that holds the GIL for its whole run."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def block(seconds: float) -> float:
    """Blocking I/O stand-in: ``time.sleep`` (cooperative under gevent's patching)."""
    time.sleep(seconds)
    return seconds


async def asleep(seconds: float) -> float:
    """Async I/O stand-in."""
    await asyncio.sleep(seconds)
    return seconds


def nbytes(payload: Sized) -> int:
    """Receives a big payload (``bytes``, or a ``unirun.Shared``) and sends back its size."""
    return len(payload)


def nbytes_shared(shared: Sequence[bytes], index: int) -> int:
    """mpire's ``shared_objects`` form of :func:`nbytes`."""
    return len(shared[index])


def make_payloads(count: int, mib: float) -> list[bytes]:
    """``count`` distinct ``bytes`` objects of ``mib`` MiB each."""
    size = int(mib * (1 << 20))
    return [bytes([i % 256]) * size for i in range(count)]


_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def fetch(port: int) -> int:
    """One HTTP GET with the stdlib's blocking client; returns the body's length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        return len(conn.getresponse().read())
    finally:
        conn.close()


async def fetch_async(port: int) -> int:
    """One HTTP GET over asyncio streams; returns the response's length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_REQUEST)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"bad response: {head[:40]!r}")
    return len(body)
