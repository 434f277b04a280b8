"""Mode names -> backend factories, imported lazily.

Built-in modes are listed here as (module, class, extra, package); third parties add modes
with :func:`register_backend` or an entry point in the ``unirun.backends`` group. Nothing
is imported until a mode is asked for, and a missing optional package becomes
``BackendUnavailableError`` naming the extra, only when the missing module *is* that
package (a bug inside unirun is never reported as "not installed").
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from ._errors import BackendUnavailableError
from ._executor import Executor

__all__ = ["backend_class", "check_mode", "factory_for", "register_backend", "valid_modes"]

Factory = Callable[..., Executor]


class _Builtin(NamedTuple):  # not a dataclass: ``dataclasses`` costs 4 ms of import time
    module: str
    attr: str
    extra: str | None = None
    package: str | None = None  # the top-level import the extra provides


_BUILTINS: Final[dict[str, _Builtin]] = {
    "serial": _Builtin("unirun._backends._serial", "SerialBackend"),
    "thread": _Builtin("unirun._backends._thread", "ThreadBackend"),
    "process": _Builtin("unirun._backends._process", "ProcessBackend"),
    "asyncio": _Builtin("unirun._backends._asyncio", "AsyncioBackend"),
    "gevent": _Builtin("unirun._backends._gevent", "GeventBackend", "unirun[gevent]", "gevent"),
    "dask": _Builtin("unirun._backends._dask", "DaskBackend", "unirun[dask]", "distributed"),
}

#: Public class names -> mode, for ``unirun.ThreadBackend`` and friends (PEP 562).
BACKEND_CLASSES: Final = {spec.attr: mode for mode, spec in _BUILTINS.items()}

_lock = threading.Lock()
_registered: dict[str, Factory] = {}
_entry_points_loaded = False


def register_backend(name: str, factory: Factory) -> None:
    """Add a mode: ``factory(**options)`` must return an ``Executor`` (a class will do).

    A registered name may replace an earlier registration but not a built-in mode or
    ``"auto"``.

    Raises:
        ValueError: ``name`` is empty, ``"auto"`` or a built-in mode.
        TypeError: ``factory`` is not callable.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a mode name must be an identifier, got {name!r}")
    if name == "auto" or name in _BUILTINS:
        raise ValueError(f"{name!r} is a built-in mode and cannot be registered again")
    if not callable(factory):
        raise TypeError(f"register_backend() needs a callable factory, got {factory!r}")
    with _lock:
        _registered[name] = factory


def _load_entry_points() -> None:
    global _entry_points_loaded  # one flag, set once; the registry dict is the state
    if _entry_points_loaded:
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group="unirun.backends"):
        if ep.name in _BUILTINS or ep.name == "auto":
            continue
        with _lock:
            _registered.setdefault(ep.name, _LazyEntryPoint(ep.name, ep.value))
    _entry_points_loaded = True


class _LazyEntryPoint:
    """A factory that imports its entry point's target on first call."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def load(self) -> Factory:
        module, _, attr = self.value.partition(":")
        obj: Any = importlib.import_module(module.strip())
        for part in attr.strip().split(".") if attr else ():
            obj = getattr(obj, part)
        return obj  # type: ignore[no-any-return]

    def __call__(self, **options: Any) -> Executor:
        return self.load()(**options)


def valid_modes() -> list[str]:
    """Every mode name: ``auto``, the built-in ones and the registered ones, sorted."""
    _load_entry_points()
    return sorted({"auto", *_BUILTINS, *_registered})


def check_mode(mode: object) -> str:
    """Return ``mode`` if it names a mode, else raise with the valid names and a suggestion."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a mode name or an Executor, got {mode!r}")
    if mode == "auto" or mode in _BUILTINS or mode in _registered:
        return mode
    modes = valid_modes()
    if mode in modes:
        return mode
    message = f"Unknown mode {mode!r}. Valid modes: {', '.join(modes)}."
    import difflib  # only for the error message

    close = difflib.get_close_matches(mode.lower(), modes, n=1)
    if close:
        message += f" Did you mean {close[0]!r}?"
    raise ValueError(message)


def backend_class(mode: str) -> type[Any]:
    """Import and return the class of a built-in mode."""
    spec = _BUILTINS[mode]
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        if spec.package and exc.name and exc.name.split(".")[0] == spec.package:
            raise BackendUnavailableError(
                f"mode {mode!r} needs the {spec.package!r} package: pip install '{spec.extra}'",
                backend=mode,
                extra=spec.extra,
            ) from exc
        raise
    cls: type[Any] = getattr(module, spec.attr)
    return cls


def factory_for(mode: str) -> Factory:
    """The factory of a mode (not ``"auto"``), importing its module now."""
    check_mode(mode)
    if mode in _BUILTINS:
        return backend_class(mode)
    factory = _registered[mode]
    if isinstance(factory, _LazyEntryPoint):
        factory = factory.load()
    return factory


def accepted_options(factory: Factory, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``factory``'s signature accepts."""
    import inspect  # not at import time: it costs a tenth of ``import unirun``

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return options
    names = {p.name for p in params}
    return {k: v for k, v in options.items() if k in names}
