"""The command line (SPEC section 7): ``unirun run`` and ``unirun bench``, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from unirun._errors import BackendUnavailableError
from unirun._registry import factory_for

pytest.importorskip("rich", reason="the command line needs the unirun[cli] extra")


def available(mode: str) -> bool:
    try:
        factory_for(mode)
    except (BackendUnavailableError, ImportError):
        return False
    return True


def needs_mode(mode: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not available(mode), reason=f"mode {mode!r} is not available here")


TASKS_MODULE = textwrap.dedent(
    """
    import asyncio
    import time

    calls = {"flaky": 0}

    def add(a, b=0):
        if a == 3:
            raise ValueError("three is not allowed")
        return a + b

    def echo(*args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    def unjsonable():
        return {1, 2}

    def sleepy(seconds):
        time.sleep(seconds)
        return seconds

    def flaky(x):
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return x

    def crash_once(path):
        import os
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "second worker"

    async def aadd(a, b=0):
        await asyncio.sleep(0)
        return a + b

    class Math:
        @staticmethod
        def double(x):
            return 2 * x

    NOT_CALLABLE = 42
    """
)

MIXED_INPUT = (
    "\n".join(
        [
            "[1, 2]",  # an array: positional arguments
            '{"a": 5, "b": 1}',  # an object: keyword arguments
            "7",  # anything else: the one argument
            "not json",  # invalid JSON: an error record, and the run goes on
            "[3]",  # the function raises
            '"text"',  # a string is the one argument: add("text") -> TypeError
            "[10, 20]",
        ]
    )
    + "\n"
)


def unirun_cli(
    *args: str, cwd: Path, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unirun", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "clitasks.py").write_text(TASKS_MODULE)
    (tmp_path / "input.jsonl").write_text(MIXED_INPUT)
    return tmp_path


# -- unirun run ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    ["serial", "thread", "auto", pytest.param("process", marks=needs_mode("process"))],
)
def test_run_writes_one_record_per_line_in_order(workdir: Path, mode: str) -> None:
    done = unirun_cli("run", "clitasks:add", "input.jsonl", "--mode", mode, cwd=workdir)
    assert done.returncode == 1, done.stderr
    out = records(done.stdout)
    assert [r["index"] for r in out] == list(range(7))
    assert out[0] == {"index": 0, "result": 3}
    assert out[1] == {"index": 1, "result": 6}
    assert out[2] == {"index": 2, "result": 7}
    assert out[3]["error"]["type"] == "JSONDecodeError"
    assert out[4] == {
        "index": 4,
        "error": {"type": "ValueError", "message": "three is not allowed"},
    }
    assert out[5]["error"]["type"] == "TypeError"
    assert out[6] == {"index": 6, "result": 30}
    assert "Traceback" not in done.stderr


def test_run_reads_stdin_and_exits_0_when_every_line_succeeds(workdir: Path) -> None:
    lines = "".join(f"[{i}, {i}]\n" for i in range(200) if i != 3)
    done = unirun_cli(
        "run", "clitasks:add", "--mode", "thread", "--jobs", "3", cwd=workdir, stdin=lines
    )
    assert done.returncode == 0, done.stderr
    out = records(done.stdout)
    assert [r["index"] for r in out] == list(range(199))
    assert [r["result"] for r in out] == [2 * i for i in range(200) if i != 3]


def test_run_spreads_arrays_and_objects(workdir: Path) -> None:
    stdin = '[1, "x", null]\n{"k": [1, 2]}\n{"k": 1, "j": {"a": true}}\n"one"\n'
    done = unirun_cli("run", "clitasks:echo", "-", "--mode", "serial", cwd=workdir, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert [r["result"] for r in records(done.stdout)] == [
        {"args": [1, "x", None], "kwargs": {}},
        {"args": [], "kwargs": {"k": [1, 2]}},
        {"args": [], "kwargs": {"k": 1, "j": {"a": True}}},
        {"args": ["one"], "kwargs": {}},
    ]


def test_run_dotted_function_and_async_function(workdir: Path) -> None:
    done = unirun_cli("run", "clitasks:Math.double", "--mode", "thread", cwd=workdir, stdin="4\n")
    assert records(done.stdout) == [{"index": 0, "result": 8}]
    done = unirun_cli("run", "clitasks:aadd", "--mode", "thread", cwd=workdir, stdin="[1, 2]\n")
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == [{"index": 0, "result": 3}]


def test_run_result_that_is_not_json_is_an_error_record(workdir: Path) -> None:
    done = unirun_cli("run", "clitasks:unjsonable", "--mode", "serial", cwd=workdir, stdin="[]\n")
    assert done.returncode == 1
    (record,) = records(done.stdout)
    assert record["error"]["type"] == "TypeError"
    assert "JSON serializable" in record["error"]["message"]


def test_run_task_timeout_and_retries(workdir: Path) -> None:
    done = unirun_cli(
        "run", "clitasks:sleepy", "--mode", "thread", "--task-timeout", "0.2",
        cwd=workdir, stdin="0\n5\n0\n",
    )  # fmt: skip
    assert done.returncode == 1
    out = records(done.stdout)
    assert out[0] == {"index": 0, "result": 0}
    assert out[1]["error"]["type"] == "TaskTimeoutError"
    assert out[2] == {"index": 2, "result": 0}

    done = unirun_cli(
        "run", "clitasks:flaky", "--mode", "serial", "--retries", "1", cwd=workdir, stdin="9\n"
    )
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == [{"index": 0, "result": 9}]


@needs_mode("process")
def test_run_retry_crashes(workdir: Path) -> None:
    args = ["run", "clitasks:crash_once", "--mode", "process", "--retries", "1"]
    done = unirun_cli(*args, cwd=workdir, stdin='"first"\n')
    assert done.returncode == 1
    assert records(done.stdout)[0]["error"]["type"] == "WorkerCrashedError"
    done = unirun_cli(*args, "--retry-crashes", cwd=workdir, stdin='"second"\n')
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == [{"index": 0, "result": "second worker"}]


def test_run_whole_timeout_exits_1_with_one_line(workdir: Path) -> None:
    done = unirun_cli(
        "run", "clitasks:sleepy", "--mode", "thread", "--timeout", "0.3",
        cwd=workdir, stdin="0\n10\n",
    )  # fmt: skip
    assert done.returncode == 1
    assert "--timeout" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "no_such_module_xyz:f", "input.jsonl"], "no_such_module_xyz"),
        (["run", "clitasks:nope", "input.jsonl"], "nope"),
        (["run", "clitasks:NOT_CALLABLE", "input.jsonl"], "not callable"),
        (["run", "clitasks", "input.jsonl"], "MODULE:FUNC"),
        (["run", "clitasks:add", "missing.jsonl"], "missing.jsonl"),
        (["run", "clitasks:add", "input.jsonl", "--mode", "proces"], "Did you mean 'process'"),
        (["run", "clitasks:add", "input.jsonl", "--jobs", "0"], "--jobs"),
        (["run", "clitasks:add", "input.jsonl", "--jobs", "x"], "--jobs"),
        (["run", "clitasks:add", "input.jsonl", "--task-timeout", "-1"], "--task-timeout"),
        (["run", "clitasks:add", "input.jsonl", "--retries", "-1"], "--retries"),
        (["run", "clitasks:add", "input.jsonl", "--bogus"], "--bogus"),
        (["bench", "--modes", "threads"], "Did you mean 'thread'"),
        (["frobnicate"], "frobnicate"),
        ([], "COMMAND"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(workdir: Path, argv: list[str], expected: str) -> None:
    done = unirun_cli(*argv, cwd=workdir)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]


@needs_mode("gevent")
def test_async_function_on_gevent_is_usage_error(workdir: Path) -> None:
    done = unirun_cli("run", "clitasks:aadd", "--mode", "gevent", cwd=workdir, stdin="[1]\n")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert "async" in done.stderr.strip().splitlines()[-1]


def test_import_error_in_the_module_is_usage_error(workdir: Path) -> None:
    (workdir / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    done = unirun_cli("run", "broken:f", cwd=workdir, stdin="1\n")
    assert done.returncode == 2
    assert "boom at import" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_rich_names_the_extra(workdir: Path) -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from unirun.__main__ import main\n"
        "sys.exit(main(['bench', '--quick']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "pip install 'unirun[cli]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- unirun bench -------------------------------------------------------------------------


def test_bench_quick_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out_file = tmp_path / "bench.json"
    done = unirun_cli(
        "bench", "--quick", "--modes", "serial,thread", "--json", str(out_file),
        cwd=tmp_path, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for word in ("cpu", "blocking-io", "async-io", "tiny", "serial", "thread", "vs serial"):
        assert word in done.stdout
    figures = json.loads(out_file.read_text())
    assert figures["quick"] is True
    rows = figures["results"]
    assert {(r["workload"], r["mode"]) for r in rows} == {
        (w, m) for w in ("cpu", "blocking-io", "async-io", "tiny") for m in ("serial", "thread")
    }
    assert all(r["status"] == "ok" and r["wall_s"] > 0 for r in rows)
    assert all(r["speedup"] == pytest.approx(1.0) for r in rows if r["mode"] == "serial")


def test_bench_reports_auto_choice(tmp_path: Path) -> None:
    out_file = tmp_path / "bench.json"
    done = unirun_cli(
        "bench", "--quick", "--modes", "auto", "--json", str(out_file), cwd=tmp_path, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert "What auto picked" in done.stdout
    auto = {
        r["workload"]: r for r in json.loads(out_file.read_text())["results"] if r["mode"] == "auto"
    }
    assert auto["blocking-io"]["auto_mode"] == "thread"
    assert auto["async-io"]["auto_mode"] == "asyncio"
    assert auto["blocking-io"]["auto_reason"]
