"""Scenarios for GeventBackend in a monkey-patched interpreter; never imported by pytest.

``python tests/backends/gevent_patched_runner.py SCENARIO`` patches first, runs one
scenario and prints ``OK`` (anything else is a failure). ``test_gevent.py`` runs each in a
subprocess so that the test process itself is never patched.
"""

from gevent import monkey

monkey.patch_all()

# isort: split
import gc  # noqa: E402 - after patching, on purpose
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import greenlet  # type: ignore[import-untyped]  # noqa: E402

import unirun  # noqa: E402
from unirun._backends._gevent import GeventBackend  # noqa: E402
from unirun._choose import refuse_if_gevent_patched  # noqa: E402
from unirun._warm import WARM  # noqa: E402

finished: list[int] = []


def sleeper(seconds: float, i: int) -> int:
    try:
        time.sleep(seconds)  # patched: yields to the hub
        return i
    finally:
        finished.append(i)


def boom() -> None:
    raise ValueError("boom")


def live_greenlets() -> list[object]:
    gc.collect()
    hub = sys.modules["gevent"].get_hub()
    return [
        g
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet)
        and not g.dead
        and g is not hub
        and g is not greenlet.getcurrent()
    ]


def many_sleeps() -> None:
    start = time.monotonic()
    out = unirun.run_all(
        [unirun.task(sleeper, 0.01, i) for i in range(2000)], mode="gevent", max_workers=500
    )
    elapsed = time.monotonic() - start
    assert out == list(range(2000))
    print(f"ELAPSED {elapsed:.3f}")


def capabilities() -> None:
    assert GeventBackend.capabilities == {"parallel", "interrupt", "blocking-io"}
    with GeventBackend() as ex:
        assert ex._cooperative


def task_timeout_kills() -> None:
    start = time.monotonic()
    with GeventBackend(max_workers=4) as ex:
        out: list[object] = ex.run_all(
            [unirun.task(sleeper, 30, 0), unirun.task(sleeper, 0, 1)],
            task_timeout=0.2,
            return_exceptions=True,
        )
    assert isinstance(out[0], unirun.TaskTimeoutError), out
    assert out[0].action == "cancelled", out[0].action
    assert out[1] == 1
    assert sorted(finished) == [0, 1], finished  # the killed task's finally ran
    assert time.monotonic() - start < 5
    assert not live_greenlets(), live_greenlets()


def fail_fast_kills_siblings() -> None:
    start = time.monotonic()
    with GeventBackend(max_workers=8) as ex:
        try:
            ex.run_all([unirun.task(sleeper, 30, i) for i in range(5)] + [boom])
        except ValueError:
            pass
        else:
            raise AssertionError("no error")
        assert time.monotonic() - start < 5
    assert sorted(finished) == list(range(5)), finished
    assert not live_greenlets(), live_greenlets()


def map_in_lanes() -> None:
    # blocking sleeps overlap in the lanes; fail-fast kills the lanes' sleepers
    start = time.monotonic()
    assert unirun.map(sleeper, [0.05] * 200, range(200), mode="gevent", max_workers=100) == list(
        range(200)
    )
    assert time.monotonic() - start < 2.5, "the lanes did not overlap"  # 10 s serially
    finished.clear()
    try:
        unirun.map(sleeper, [30, 30, 30, 0], range(4), mode="gevent", max_workers=8, timeout=0.3)
    except TimeoutError:
        pass
    else:
        raise AssertionError("no timeout")
    WARM.shutdown_all()
    assert sorted(finished) == [0, 1, 2, 3], finished  # the killed sleepers' finally ran
    assert not live_greenlets(), live_greenlets()


def whole_call_timeout() -> None:
    start = time.monotonic()
    try:
        unirun.run_all([unirun.task(sleeper, 30, i) for i in range(5)], mode="gevent", timeout=0.3)
    except TimeoutError:
        pass
    else:
        raise AssertionError("no timeout")
    assert time.monotonic() - start < 5
    WARM.shutdown_all()
    assert sorted(finished) == list(range(5)), finished
    assert not live_greenlets(), live_greenlets()


def system_errors_are_outcomes() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    def leave() -> None:
        raise SystemExit(3)

    out = unirun.run_all([interrupt, leave, boom, lambda: 1], mode="gevent", return_exceptions=True)
    assert [type(x) for x in out] == [KeyboardInterrupt, SystemExit, ValueError, int], out
    WARM.shutdown_all()
    assert not live_greenlets(), live_greenlets()


def process_mode_refused() -> None:
    start = time.monotonic()
    try:
        refuse_if_gevent_patched("process")
    except unirun.BackendUnavailableError as exc:
        message = str(exc)
    else:
        raise AssertionError("not refused")
    assert "gevent #936" in message, message
    assert "mode='gevent'" in message, message
    try:  # the process backend must refuse too, or work: never hang
        assert unirun.run_all([unirun.task(abs, -1)], mode="process") == [1]
    except unirun.BackendUnavailableError:
        pass
    assert time.monotonic() - start < 10


def urllib_overlaps() -> None:
    import http.server
    import threading
    import urllib.request

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(0.2)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())

    start = time.monotonic()
    out = unirun.run_all([get] * 20, mode="gevent", max_workers=20)
    elapsed = time.monotonic() - start
    server.shutdown()
    server.server_close()
    assert out == [b"ok"] * 20
    assert elapsed < 2.0, elapsed  # 20 x 0.2 s = 4 s if they did not overlap


SCENARIOS: dict[str, Callable[[], None]] = {
    f.__name__: f
    for f in (
        many_sleeps,
        capabilities,
        task_timeout_kills,
        fail_fast_kills_siblings,
        whole_call_timeout,
        map_in_lanes,
        system_errors_are_outcomes,
        process_mode_refused,
        urllib_overlaps,
    )
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
    WARM.shutdown_all()
    print("OK")
