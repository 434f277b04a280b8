"""A loopback HTTP server that answers every GET after a fixed latency.

Runs in a process of its own (``workloads.py serve latency=0.02``) so its event loop never
competes with the clients being measured. It prints its port on the first line of stdout
and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = ["serve"]

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def _serve(latency: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(latency)
            writer.write(_RESPONSE)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    # stdin closing (the parent exiting or closing the pipe) stops the server
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def serve(latency: float) -> None:
    """Serve on 127.0.0.1 (an ephemeral port) until stdin closes."""
    asyncio.run(_serve(latency))
