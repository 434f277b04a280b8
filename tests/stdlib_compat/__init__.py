"""CPython's own ``test_concurrent_futures`` run against unirun's ThreadBackend and ProcessBackend.

See ``test_cpython_futures.py`` and ``docs/stdlib-compat.md``.
"""
