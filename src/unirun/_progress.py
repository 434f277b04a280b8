"""The ``progress=`` option: a tqdm bar, or the caller's ``callable(done, total)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["make_progress"]

ProgressFn = Callable[[int, "int | None"], object]


class _TqdmProgress:
    def __init__(self, total: int | None) -> None:
        try:
            from tqdm.auto import tqdm
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "tqdm":
                raise ImportError(
                    "progress=True needs tqdm: pip install 'unirun[progress]'", name="tqdm"
                ) from exc
            raise
        self._bar: Any = tqdm(total=total, unit="task")
        self._last = 0

    def __call__(self, done: int, total: int | None) -> None:
        self._bar.update(done - self._last)
        self._last = done

    def close(self) -> None:
        self._bar.close()


def make_progress(
    option: object, total: int | None
) -> tuple[ProgressFn | None, Callable[[], None]]:
    """The engine's progress callback and a function to call when the run ends."""
    if option is None or option is False:
        return None, _nothing
    if option is True:
        bar = _TqdmProgress(total)
        return bar, bar.close
    if callable(option):
        return option, _nothing
    raise TypeError(f"progress must be True, False or a callable(done, total), got {option!r}")


def _nothing() -> None:
    return None
