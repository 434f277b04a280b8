"""The ``unirun`` command line: ``unirun bench`` and ``unirun run`` (SPEC section 7).

Parsing is argparse; output is rich (extra ``unirun[cli]``), imported here and nowhere
else in the package, so ``import unirun`` never needs it. Usage errors are one line on
stderr and exit status 2, never a traceback::

    main(argv) -> _parser() -> bench.run_bench(args)   (tables, --json)
                            -> run_cmd.run_command(args) (JSON lines in, JSON lines out)
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["UsageError", "main"]

CLI_EXTRA_HINT = "the unirun command line needs rich: pip install 'unirun[cli]'"


class UsageError(Exception):
    """Bad usage: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="unirun",
        description="Process, thread, coroutine or greenlet: one parameter, not a rewrite.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    bench = sub.add_parser(
        "bench",
        help="measure built-in workloads on every available backend",
        description=(
            "Run CPU-bound, blocking-I/O, async-I/O and tiny-task workloads on every "
            "available backend and on auto; print wall time, speed-up over serial and "
            "what auto picked."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="small workloads: under ~20 s")
    bench.add_argument("--json", metavar="FILE", help="also write the raw figures to FILE")
    bench.add_argument(
        "--modes",
        metavar="A,B",
        help="comma-separated modes to measure (auto included); serial always runs as the "
        "baseline. Default: every mode",
    )

    run = sub.add_parser(
        "run",
        help="call MODULE:FUNC once per JSON line of FILE (or stdin)",
        description=(
            "Call MODULE:FUNC once per line of FILE (or stdin; '-' is stdin). Each line is a "
            "JSON value: an array is spread as positional arguments, an object as keyword "
            "arguments, anything else is the one argument. Writes one JSON object per input "
            'line, in input order: {"index": i, "result": ...} or {"index": i, "error": '
            '{"type": ..., "message": ...}}. Exit status 1 when any line failed, 2 for bad '
            "usage."
        ),
    )
    run.add_argument("target", metavar="MODULE:FUNC", help="the function to call")
    run.add_argument("file", metavar="FILE", nargs="?", default="-", help="JSON lines input")
    run.add_argument("--mode", default="auto", help="backend mode (default: auto)")
    run.add_argument("--jobs", type=int, metavar="N", help="max_workers")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="limit for the whole run")
    run.add_argument("--task-timeout", type=float, metavar="SECONDS", help="limit per call")
    run.add_argument(
        "--retries", type=int, default=0, metavar="N", help="extra attempts for a call that raised"
    )
    run.add_argument(
        "--retry-crashes",
        action="store_true",
        help="let --retries also retry a call whose worker process died",
    )
    run.add_argument(
        "--progress", action="store_true", help="show a progress bar on stderr (unirun[progress])"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; return the exit status."""
    try:
        import rich  # noqa: F401 - only to check that the extra is installed
    except ModuleNotFoundError as exc:
        if exc.name != "rich":
            raise
        print(f"unirun: {CLI_EXTRA_HINT}", file=sys.stderr)
        return 2
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    # argparse fills an optional positional at its first chance, so in
    # ``run MOD:FUNC --mode thread FILE`` the FILE comes back as an extra: put it in place.
    if (
        args.command == "run"
        and args.file == "-"
        and len(extras) == 1
        and (extras[0] == "-" or not extras[0].startswith("-"))
    ):
        args.file, extras = extras[0], []
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        if args.command == "bench":
            from ._bench import run_bench

            return run_bench(args)
        from ._run_cmd import run_command

        return run_command(args)
    except UsageError as exc:
        print(f"unirun {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unirun {args.command}: interrupted", file=sys.stderr)
        return 130
