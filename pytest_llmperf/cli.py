"""The ``llmperf`` command line: ``llmperf run | baseline update | compare | calibrate | report``.

Each subcommand lives in :mod:`pytest_llmperf.commands` and is imported lazily, so ``llmperf --help`` is fast.
Exit codes: 0 success/pass, 1 regression, 2 inconclusive or error (usage errors included).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pytest_llmperf.commands import COMMANDS
from pytest_llmperf.errors import LLMPerfError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmperf", description="LLM serving performance: measure, compare, gate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(f"pytest_llmperf.commands.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args))
    except LLMPerfError as exc:
        print(f"llmperf: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("llmperf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
