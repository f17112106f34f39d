"""The ``llmperf`` command line: ``llmperf run | baseline update | compare | calibrate | report | plan``.

Each subcommand lives in :mod:`pytest_llmperf.commands` and is imported lazily, so ``llmperf --help`` is fast.
Exit codes: 0 success/pass, 1 regression, 2 inconclusive or error (usage errors included).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

from pytest_llmperf.commands import COMMANDS
from pytest_llmperf.errors import LLMPerfError

__all__ = ["build_parser", "main", "package_version", "plain_text"]

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


_RST_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str | None) -> str | None:
    """Help text without reStructuredText markup: ````x```` -> ``x``, ``:func:`~a.b``` -> ``b``."""
    if text is None:
        return None
    text = _RST_ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return _RST_LITERAL.sub(r"\1", text)


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip RST markup from every description and help text of ``parser`` and its subcommands (their texts
    come from module docstrings, which Sphinx-style markup serves better than a terminal)."""
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain_text(choice.help)
            for sub in action.choices.values():
                _plain_help(sub)


def package_version() -> str:
    """The installed distribution's version (the one source: ``pytest_llmperf.__version__`` via pyproject)."""
    from importlib import metadata

    try:
        return metadata.version("pytest-llmperf")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        from pytest_llmperf import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmperf", description="LLM serving performance: measure, compare, gate.")
    parser.add_argument("--version", action="version", version=f"%(prog)s (pytest-llmperf) {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(f"pytest_llmperf.commands.{module}").add_parser(sub)
    _plain_help(parser)
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
    except BrokenPipeError:  # `llmperf report ... | head`: the reader left; stop quietly, as other tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
