"""Every ``examples/*.py`` runs, standalone, in a subprocess, with a timeout.

An example skips a backend it cannot load and says so ("skipped"); once every built-in
backend and extra is present, no example may skip anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unirun._errors import BackendUnavailableError
from unirun._registry import factory_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUILTIN_MODES = ["serial", "thread", "process", "asyncio", "gevent", "dask"]


def _unavailable() -> list[str]:
    missing = []
    for mode in BUILTIN_MODES:
        try:
            factory_for(mode)
        except (BackendUnavailableError, ImportError):
            missing.append(mode)
    return missing


@pytest.mark.timeout(150)
@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_runs(path: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,  # examples must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{path.name} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{path.name} printed nothing"
    assert "Traceback" not in done.stderr, done.stderr
    missing = _unavailable()
    if not missing:
        assert "skipped" not in done.stdout, done.stdout
    elif "skipped" in done.stdout:
        # It ran what it could; say what it could not, rather than pass silently.
        pytest.skip(f"{path.name} skipped some modes; not available here: {', '.join(missing)}")
