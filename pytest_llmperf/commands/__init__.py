"""Subcommands of the ``llmperf`` CLI, one module each, each with ``add_parser(subparsers)`` and ``main(args)``."""

from __future__ import annotations

#: subcommand name -> module under pytest_llmperf.commands (imported only when that subcommand runs)
COMMANDS: dict[str, str] = {
    "run": "run",
    "baseline": "baseline",
    "compare": "compare",
    "calibrate": "calibrate",
    "report": "report",
    "plan": "plan",
}
