"""Command-line options, each defined once with a ``--llmperf-`` prefix and validated by its ``type=``.

Every option has a twin key in ``[tool.llmperf]`` of pyproject.toml (the option name without the prefix,
dashes as underscores); resolution is CLI, then pyproject, then the backend's default
(:func:`pytest_llmperf.config.LLMPerfConfig.from_pytest_config`). Help-text rule (as in xdist): say what
it does, the default, and the pyproject key when it differs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["add_options", "parse_int_list", "parse_positive_int", "parse_nonneg_int", "parse_positive_float",
           "parse_fraction", "parse_mode_list", "choice", "parse_metric_list", "parse_rates_option", "OPTIONS", "FLAGS",
           "SessionCV", "parse_session_cv"]


def parse_int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parse_number(text: str, convert: Callable[[str], Any], *, low: float, inclusive: bool, what: str) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def parse_positive_int(text: str) -> int:
    return int(_parse_number(text, int, low=1, inclusive=True, what="a positive integer"))


def parse_nonneg_int(text: str) -> int:
    return int(_parse_number(text, int, low=0, inclusive=True, what="an integer >= 0"))


def parse_fraction(text: str) -> float:
    try:
        value = float(str(text).rstrip("%")) / (100.0 if str(text).endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.05 or 5%, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def parse_positive_float(text: str) -> float:
    return float(_parse_number(text, float, low=0.0, inclusive=False, what="a finite number > 0"))


def _parse_names(text: str, check: Callable[[str], Any], what: str, example: str) -> tuple[str, ...]:
    """Comma-separated names, each validated by ``check`` (which raises UsageError naming the problem)."""
    from pytest_llmperf.errors import UsageError

    names = tuple(n for n in str(text).replace(" ", "").split(",") if n)
    try:
        for name in names:
            check(name)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not names:
        raise argparse.ArgumentTypeError(f"expected at least one {what}, e.g. {example}")
    return names


def parse_metric_list(text: str) -> tuple[str, ...]:
    from pytest_llmperf.stats.metrics import direction_of

    return _parse_names(text, direction_of, "metric", "ttft_p95_ms,tpot_p50_ms")


class SessionCV(NamedTuple):
    """``--llmperf-session-cv``: the prior for every metric (None: the backend's default) and per-metric priors."""

    default: float | None
    per_metric: tuple[tuple[str, float], ...]

    def settings(self) -> dict[str, Any]:
        """What it sets in a config or gate settings: the per-metric priors (replacing any before), and the
        every-metric prior where one was given (else the one already there stays)."""
        return {"session_cv_metrics": self.per_metric,
                **({"session_cv": self.default} if self.default is not None else {})}


def parse_session_cv(text: str) -> SessionCV:
    """``0.05``, ``tpot_p50_ms=0.01,ttft_p95_ms=0.2`` or both (``0.05,tpot_p50_ms=0.01``): each a std of logs >= 0
    (``llmperf baseline noise`` prints the values measured on a machine's recorded sessions)."""
    default, per_metric = None, {}
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected a number >= 0 and/or METRIC=NUMBER pairs, e.g. 0.05,tpot_p50_ms=0.01")
    for part in parts:
        metric, sep, value = part.rpartition("=")
        scale = 100.0 if value.endswith("%") else 1.0  # 5% like --llmperf-tolerance
        number = _parse_number(value.removesuffix("%"), float, low=0.0, inclusive=True,
                               what=f"a number >= 0 in {part!r}") / scale
        if number > 1:  # a std of logs: 1 is a factor of e (2.7x) between sessions
            raise argparse.ArgumentTypeError(f"{part!r}: a session prior is a std of logs (0.05 = about 5% between "
                                             f"sessions); above 1 is not a prior")
        if not sep:
            if default is not None:
                raise argparse.ArgumentTypeError(f"two values for every metric in {text!r}: give one, and "
                                                 f"METRIC=NUMBER for the others")
            default = float(number)
            continue
        (name,) = parse_metric_list(metric)
        if name in per_metric:
            raise argparse.ArgumentTypeError(f"{name} is given twice in {text!r}")
        per_metric[name] = float(number)
    return SessionCV(default, tuple(sorted(per_metric.items())))


def parse_mode_list(text: str) -> tuple[str, ...]:
    from pytest_llmperf.engine.spec import parse_mode_shape

    return _parse_names(text, parse_mode_shape, "mode", "single,tp2,pp2,dp2,ep2")


def parse_rates_option(text: str) -> tuple[float, ...]:
    """Request rates in req/s (``1,2,4.5``), each finite and > 0 (a rate of 0 or below is refused)."""
    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.load.arrivals import parse_rates

    try:
        return parse_rates(str(text))
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def choice(*choices: str) -> Callable[[str], str]:
    """An argparse ``type=`` accepting only ``choices`` (the message names them and what was given)."""
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text
    parse.__name__ = "choice"
    return parse


#: name (without prefix) -> (type, metavar, help). Defaults are None: resolved in config.py.
OPTIONS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "backend": (choice("auto", "cpu", "gpu"), "auto|cpu|gpu",
                "engine backend; auto = gpu when NVML sees GPUs, else vLLM's CPU backend (default auto)"),
    "model": (str, "PRESET|PATH", "model preset (tiny-llama, llama-3.1-8b, deepseek-r1-distill-qwen-14b) or a "
              "real model path; default tiny-llama on cpu, deepseek-r1-distill-qwen-14b on gpu"),
    "modes": (parse_mode_list, "M,M", "engine modes of the sweep (default single,tp2,pp2)"),
    "concurrency": (parse_int_list, "C,C", "concurrency sweep (default 1,4,16 on cpu; 1,2,4,8,16,32 on gpu)"),
    "request-rates": (parse_rates_option, "R,R", "open-loop request rates in req/s, a sweep beside concurrency for "
                      "tests that take llmperf_request_rate (Poisson arrivals; concurrency stays the cap on requests "
                      "in flight; default: closed loop)"),
    "burstiness": (parse_positive_float, "F", "gamma shape of open-loop gaps, 1 = Poisson (default 1)"),
    "input-lens": (parse_int_list, "L,L", "prompt lengths in tokens (default 64,256 on cpu; 256,2048 on gpu)"),
    "output-len": (parse_positive_int, "N", "output tokens per request, exact (default 32 cpu, 128 gpu)"),
    "num-requests": (parse_positive_int, "N", "measured requests per run, at least 2 x concurrency "
                     "(default 16 cpu, 64 gpu)"),
    "warmup": (parse_nonneg_int, "N", "warmup requests before each test's runs, excluded (default: concurrency)"),
    "min-waves": (parse_positive_int, "N", "measured requests per run are at least N x concurrency (default 2)"),
    "repeats": (parse_positive_int, "K", "runs per test: each run is one sample for the gate (default 3)"),
    "dtype": (str, "DTYPE", "engine dtype (default bfloat16)"),
    "max-model-len": (parse_positive_int, "N", "engine max_model_len (default 2048 cpu, 8192 gpu)"),
    "startup-timeout": (parse_positive_float, "S", "engine startup timeout in seconds (default 600)"),
    "python": (str, "PATH", "Python interpreter that runs vLLM (default: the one running pytest)"),
    "emulate-pcie": (choice("auto", "on", "off"), "auto|on|off",
                     "PCIe emulation for the pcie suite on NVLink GPUs (default auto = on for NVLink)"),
    "allreduce-fusion": (choice("auto", "on", "off"), "auto|on|off",
                         "TP on GPUs: vLLM's FlashInfer all-reduce + RMSNorm fusion; auto = off under PCIe emulation "
                         "or where NVLink multicast is disabled (NCCL_NVLS_ENABLE=0 ...), else vLLM's default"),
    "request-timeout": (parse_positive_float, "S", "seconds allowed per request, connection included (default 300)"),
    "stall-timeout": (parse_positive_float, "S", "fail the run when no token arrives for this many seconds while "
                      "requests are in flight (default 60)"),
    "run-deadline": (parse_positive_float, "S", "fail a run (warmup included) that takes longer than this many "
                     "seconds (default 1800)"),
    "power-rate-hz": (parse_positive_float, "HZ", "NVML sampling rate per GPU (default 100)"),
    "endpoint": (str, "URL", "measure an already running OpenAI-compatible server (http://HOST:PORT/v1) "
                 "instead of starting vLLM; its mode is taken from the test (default: start engines)"),
    "vocab-size": (parse_positive_int, "N", "with --llmperf-endpoint and a synthetic-tokenizer model: its vocabulary "
                   "size, for exact prompt lengths (default: the preset's)"),
    "endpoint-hardware": (str, "LABEL", "with --llmperf-endpoint: the hardware behind it, e.g. 2xH100-nvlink or "
                          "cpu-xeon-8488c; part of the fingerprint, and with --llmperf-backend auto a GPU label "
                          "gives the GPU defaults (default $LLMPERF_ENDPOINT_HARDWARE, else 'unlabelled')"),
    "api": (choice("completions", "chat"), "completions|chat", "OpenAI route to drive (default completions)"),
    "dataset": (str, "SPEC", "prompts from a dataset instead of synthetic t<id> words: jsonl:PATH, sharegpt:PATH or "
                "dist:IN,OUT (e.g. dist:sharegpt-in,sharegpt-out); see docs/endpoint.md (default: synthetic)"),
    "server-metrics": (choice("on", "off"), "on|off", "scrape vLLM's Prometheus /metrics around each run into "
                       "server_* summary keys; a server without it is noted, not failed (default on)"),
    "engine-args": (str, "'ARGS'", "extra vLLM server arguments for every engine, shell-quoted in one string, "
                    "e.g. '--max-num-seqs 8' (default none)"),
    "engine-env": (str, "K=V,K=V", "extra environment variables for every engine (default none)"),
    "baseline-dir": (str, "DIR", "baselines root (default baselines)"),
    "gate-metrics": (parse_metric_list, "M,M", "per-run metrics the regression gate compares (default on gpu: "
                     "ttft_p95_ms,tpot_p50_ms,output_throughput_tok_s plus power CV and J/token where NVML measures; "
                     "on cpu: e2el_p50_ms,output_throughput_tok_s, see docs/load.md on bursty delivery)"),
    "far": (parse_fraction, "F", "build-wide false-alarm rate of the regression gate, Holm (default 0.05)"),
    "tolerance": (parse_fraction, "F", "change ignored as practically irrelevant, e.g. 0.1 or 10% (default 0.1 on gpu, "
                  "0.5 on the noisy shared CPU backend)"),
    "session-cv": (parse_session_cv, "F[,M=F]",
                   "prior session-to-session noise (std of logs) of the regression model, worth 4 sessions of "
                   "evidence; recorded sessions refine it; METRIC=F sets one metric's, e.g. 0.05,tpot_p50_ms=0.01 "
                   "(llmperf baseline noise measures them; default 0.05 on gpu, 0.10 on cpu)"),
    "sessions-kept": (parse_positive_int, "N", "baseline sessions in the rolling window the gate compares "
                      "with; the first N also form the automatic anchor (default 20)"),
    "results": (str, "PATH", "session results JSON (default .llmperf/results.json)"),
    "report-dir": (str, "DIR", "where plots and the Markdown summary go (default .llmperf/report)"),
    "update-reason": (str, "TEXT", "why the baselines are updated (recorded with them)"),
}

FLAGS: dict[str, str] = {
    "update-baselines": "record this run as the new baselines, after showing old-vs-new verdicts; refused "
                        "when a metric regressed unless --llmperf-accept-regression",
    "accept-regression": "with --llmperf-update-baselines: absorb a regression (needs --llmperf-update-reason)",
    "no-gate": "measure and report only: SLO and regression verdicts do not fail tests",
    "no-plots": "write the Markdown summary and results but no plots (faster, e.g. for CI of the plugin itself)",
    "fail-inconclusive": "an INCONCLUSIVE regression check fails its test (default: reported, not failed)",
    "require-baseline": "a test without a stored baseline for this fingerprint FAILs (default: NO_BASELINE, "
                        "reported and passed)",
}


def add_options(addoption: Callable[..., Any], prefix: str = "--llmperf-") -> None:
    """Register every option through ``addoption`` (a pytest group's or an argparse parser's)."""
    for name, (type_, metavar, help_) in OPTIONS.items():
        addoption(f"{prefix}{name}", dest=f"llmperf_{name.replace('-', '_')}", type=type_, metavar=metavar,
                  default=None, help=help_.replace("%", "%%"))  # argparse %-formats help texts
    for name, help_ in FLAGS.items():
        addoption(f"{prefix}{name}", dest=f"llmperf_{name.replace('-', '_')}", action="store_true",
                  default=False, help=help_.replace("%", "%%"))
