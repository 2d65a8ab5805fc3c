"""`python -m mirage_git.proxy --config FILE`: run the proxy alone (the CLI's `mirage-git proxy` does the same)."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load
from . import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mirage_git.proxy", description=__doc__)
    parser.add_argument("--config", help="the mirage TOML file (default: $MIRAGE_CONFIG or ./mirage.toml)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        serve(config)
    except OSError as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
