"""``spokehub-agent`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("spokehub-agent: not implemented yet (see the agent issue)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
