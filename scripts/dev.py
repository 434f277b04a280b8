#!/usr/bin/env python3
"""Set up a virtual environment and run unirun's main job or its tests.

    python3 scripts/dev.py bench [ARGS...]   # unirun bench --quick (or ARGS)
    python3 scripts/dev.py test [ARGS...]    # pytest over the whole suite (or ARGS)

Needs only a Python (3.10+) on PATH: the first run creates ``.venv`` and installs unirun
with every extra and the test tools; later runs reuse it while pyproject.toml is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("UNIRUN_VENV", ROOT / ".venv"))
EXTRAS = os.environ.get("UNIRUN_EXTRAS", "all,test")


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def ensure_venv() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    stamp = VENV / ".unirun-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not _bin("python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(_bin("python")), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-U", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{EXTRAS}]"], check=True)
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("bench", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "bench":
        args = [str(_bin("python")), "-m", "unirun", "bench", *(rest or ["--quick"])]
    else:
        args = [str(_bin("python")), "-m", "pytest", *rest]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
