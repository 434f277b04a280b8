"""Fetch pages from a slow web server with threads, coroutines and greenlets.

The server is local (127.0.0.1, a port the OS picks) and answers each request after
~20 ms, like a remote site would. The same 60 fetches run:

* one by one (``mode="serial"``): the baseline;
* on threads (``mode="thread"``), with the blocking ``urllib``;
* on an event loop (``mode="asyncio"``), with an async client on ``asyncio`` streams;
* on greenlets (``mode="gevent"``), with ``urllib`` after ``gevent.monkey.patch_all()`` -
  in a child process, because patching must happen before anything else is imported.

Run it: ``python examples/crawler.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PAGES = 60
LATENCY = 0.02  # seconds the server takes per request
WORKERS = 20


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 makes bursts of connects wait 1 s


class SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(LATENCY)
        body = f"page {self.path}\n".encode() * 50
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep the output clean
        pass


def fetch(url: str) -> int:
    """Blocking fetch: the body's length."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read())


async def afetch(url: str) -> int:
    """Async fetch over asyncio streams (HTTP/1.0, so the server closes the connection)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    _, _, body = response.partition(b"\r\n\r\n")
    return len(body)


def report(label: str, pages: int, size: int, seconds: float, baseline: float | None) -> None:
    speedup = f"  ({baseline / seconds:4.1f}x serial)" if baseline else ""
    print(f"  {label:<8} {pages} pages, {size:>7} bytes in {seconds:5.2f} s{speedup}")


def gevent_child(base: str) -> None:
    """Runs in a fresh interpreter: patch first, then crawl on greenlets."""
    from gevent import monkey

    monkey.patch_all()
    import unirun

    urls = [f"{base}/page/{i}" for i in range(PAGES)]
    start = time.perf_counter()
    sizes = unirun.map(fetch, urls, mode="gevent", max_workers=WORKERS)
    print(f"{len(sizes)} {sum(sizes)} {time.perf_counter() - start}")


def main() -> None:
    import unirun

    server = Server(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, name="slow-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/page/{i}" for i in range(PAGES)]
    print(f"Fetching {PAGES} pages from {base} (each takes ~{LATENCY * 1000:.0f} ms):")
    try:
        start = time.perf_counter()
        sizes = unirun.map(fetch, urls, mode="serial")
        baseline = time.perf_counter() - start
        report("serial", len(sizes), sum(sizes), baseline, None)

        for mode, tasks in [
            ("thread", [unirun.task(fetch, url) for url in urls]),
            ("asyncio", [unirun.task(afetch, url) for url in urls]),
        ]:
            try:
                start = time.perf_counter()
                sizes = unirun.run_all(tasks, mode=mode, max_workers=WORKERS)
                report(mode, len(sizes), sum(sizes), time.perf_counter() - start, baseline)
            except ImportError as exc:  # BackendUnavailableError is an ImportError
                print(f"  {mode}: skipped (not available: {exc})")

        try:
            with warnings.catch_warnings():  # this process is not patched: no warning
                warnings.simplefilter("ignore")
                unirun.executor("gevent").shutdown()
        except ImportError as exc:
            print(f"  gevent: skipped (not available: {exc})")
        else:
            child = subprocess.run(
                [sys.executable, __file__, "--gevent-child", base],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            pages, size, seconds = child.stdout.split()
            report("gevent", int(pages), int(size), float(seconds), baseline)
    finally:
        server.shutdown()
        server.server_close()
    print("Threads and coroutines overlap the waits; greenlets too, once gevent has patched.")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--gevent-child":
        gevent_child(sys.argv[2])
    else:
        main()
