"""L1/L2, smaller: trivial tasks through ``imap`` in flat memory.

``benchmarks/soak_imap.py`` runs the full million and prints the figures; here a fifth of
it per mode, with the same gate: RSS growth under 5 MiB between the first fifth of the
results and the last. Marked ``slow`` (about 10 s in all on 2 cores).
"""

from __future__ import annotations

import sys

import pytest

from tests.faults.harness import benchmark_script


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
    soak = benchmark_script("soak_imap")
    figures = soak.soak(n, mode, **options)
    assert figures["growth_mib"] < soak.GATE / soak.MiB, figures
