"""``python -m unirun`` and the ``unirun`` console script."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``unirun`` command line and return its exit status.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when left out.

    Returns:
        0 on success, 1 when some work failed, 2 for bad usage.
    """
    from unirun._cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
