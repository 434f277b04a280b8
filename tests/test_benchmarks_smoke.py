"""``benchmarks/run.py --quick`` works: it prints its tables and writes JSON and Markdown.

A smoke check of the runner only, on its smallest workload with one repeat: no timing is
asserted (benchmarks are read by people, never part of a pass/fail verdict).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.timeout(60)
def test_quick_tiny_run_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--quick",
            "--only",
            "tiny",
            "--repeats",
            "1",
            "--timeout",
            "20",
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
        ],
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| variant |" in proc.stdout
    assert "| target (issue 7) |" in proc.stdout

    report = json.loads(out_json.read_text())
    assert [case["workload"] for case in report["cases"]] == ["tiny"]
    results = report["cases"][0]["results"]
    assert "tpe" in results
    for name, result in results.items():
        # every variant either ran (with a median wall time) or says why it was skipped
        assert result["runs"] or result["skipped"], name
        if result["runs"]:
            assert result["median"]["wall"] > 0, name
    assert results["tpe"]["runs"], results["tpe"]["skipped"]
    assert report["targets"], "the tiny workload's targets are checked"
    assert all(t["met"] in (True, False, None) for t in report["targets"])

    markdown = out_md.read_text()
    assert "| variant |" in markdown
    assert "### Targets (issue 7)" in markdown
