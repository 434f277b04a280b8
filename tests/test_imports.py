"""``import unirun`` needs only the core, imports no optional package, starts nothing."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, threading
before = threading.active_count()
import unirun
heavy = [m for m in ("gevent", "distributed", "dask", "cloudpickle", "tqdm", "rich", "trio")
         if m in sys.modules]
assert not heavy, heavy
# the import-time budget (issue 7: <= 30 ms): these load on first use, not at import
slow = [m for m in ("multiprocessing", "inspect", "dataclasses", "typing_extensions",
                    "concurrent.futures", "logging", "unirun._engine",
                    "anyio", "asyncio", "difflib") if m in sys.modules]
assert not slow, slow
assert threading.active_count() == before, threading.enumerate()
import multiprocessing
assert not multiprocessing.active_children()
print("ok")
"""


def test_import_is_light() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_works_without_optional_packages() -> None:
    blocked = ["gevent", "distributed", "dask", "cloudpickle", "tqdm", "rich", "trio"]
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
        + "import unirun\nprint(unirun.run_all([lambda: 1], mode='thread'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"


def test_missing_extra_names_it() -> None:
    code = (
        "import sys\nsys.modules['gevent'] = None\nsys.modules['distributed'] = None\n"
        "import unirun\n"
        "for mode, extra in (('gevent', 'unirun[gevent]'), ('dask', 'unirun[dask]')):\n"
        "    try:\n"
        "        unirun.executor(mode)\n"
        "    except unirun.BackendUnavailableError as exc:\n"
        "        assert isinstance(exc, ImportError)\n"
        "        assert extra in str(exc), str(exc)\n"
        "        assert exc.extra == extra\n"
        "    else:\n"
        "        raise SystemExit(mode + ' did not raise')\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
