"""L1/L2, smaller: trivial tasks through ``imap`` in flat memory.

``benchmarks/soak_imap.py`` runs the full million and prints the figures; here a fifth of
it per mode, with the same gate: RSS growth under 5 MiB between the first fifth of the
results and the last. Marked ``slow`` (about 10 s in all on 2 cores).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_imap", ROOT / "benchmarks/soak_imap.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "n", "options"),
    [
        ("thread", 200_000, {"max_workers": 4}),
        ("process", 200_000, {"max_workers": 2}),
        ("asyncio", 100_000, {}),
    ],
)
def test_imap_soak_memory_is_flat(mode: str, n: int, options: dict[str, int]) -> None:
    soak = _soak_module()
    figures = soak.soak(n, mode, **options)
    assert figures["growth_mib"] < soak.GATE / soak.MiB, figures
