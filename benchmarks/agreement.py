"""Agreement with vLLM's own bench client on a real engine: TTFT p50 and TPOT p50, side by side.

For each concurrency, our runner and vLLM's ``async_request_openai_completions`` (the request function of
``vllm bench serve``, driven like its ``benchmark()``: semaphore + connector limit) stream the same prompts
with the same lengths, back to back. TPOT is per request ``(e2e - ttft) / (output_tokens - 1)`` for both.
Either give a running engine (``--endpoint --model``) or let the script start the tiny-llama preset on the
CPU backend through :class:`pytest_llmperf.engine.server.VLLMServer`.

    .venv/bin/python benchmarks/agreement.py [--endpoint http://127.0.0.1:8000/v1 --model NAME]
        [--concurrency 1 4] [--num-requests 16] [--input-len 128] [--output-len 32] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_llmperf.load.reference import ours_run, vllm_client_run  # noqa: E402
from pytest_llmperf.load.runner import run_load  # noqa: E402
from pytest_llmperf.load.workload import Workload  # noqa: E402

__all__ = ["main"]


@contextlib.contextmanager
def _engine(endpoint: str | None, model: str | None) -> Iterator[tuple[str, str, int]]:
    if endpoint:
        if not model:
            raise SystemExit("--model is required with --endpoint")
        yield endpoint.rstrip("/"), model, 32000
        return
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.engine.spec import EngineSpec

    with VLLMServer(EngineSpec(model="tiny-llama", backend="cpu", max_model_len=1024)) as srv:
        yield srv.endpoint, srv.served_model_name, 32000


def _p50(values: list[float]) -> float | None:
    return float(np.percentile(values, 50)) if values else None


def _rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else (a - b) / b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--num-requests", type=int, default=16)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--json", type=Path, default=ROOT / ".llmperf" / "agreement.json")
    a = p.parse_args(argv)
    from tabulate import tabulate

    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    with _engine(a.endpoint, a.model) as (endpoint, model, vocab):
        run_load(endpoint, model, Workload(num_requests=4, input_len=a.input_len, output_len=a.output_len,
                                           concurrency=4), vocab_size=vocab)  # engine warmup, unmeasured
        for conc in a.concurrency:
            wl = Workload(num_requests=a.num_requests, input_len=a.input_len, output_len=a.output_len,
                          concurrency=conc, seed=0)
            o_ttft, o_tpot, _, o_fail, _ = ours_run(endpoint, model, wl, vocab)
            v_ttft, v_tpot, _, v_fail, _ = vllm_client_run(endpoint, model, wl, vocab)
            r = {"concurrency": conc, "ours_ttft_p50_ms": _p50(o_ttft), "vllm_ttft_p50_ms": _p50(v_ttft),
                 "ours_tpot_p50_ms": _p50(o_tpot), "vllm_tpot_p50_ms": _p50(v_tpot),
                 "ours_failed": o_fail, "vllm_failed": v_fail}
            r["ttft_rel_diff"] = _rel(r["ours_ttft_p50_ms"], r["vllm_ttft_p50_ms"])
            r["tpot_rel_diff"] = _rel(r["ours_tpot_p50_ms"], r["vllm_tpot_p50_ms"])
            results.append(r)
            rows.append([conc, r["ours_ttft_p50_ms"], r["vllm_ttft_p50_ms"], r["ttft_rel_diff"],
                         r["ours_tpot_p50_ms"], r["vllm_tpot_p50_ms"], r["tpot_rel_diff"], f"{o_fail}/{v_fail}"])
    print(f"endpoint {endpoint} model {model}: {a.num_requests} requests, input {a.input_len}, output {a.output_len}")
    print(tabulate(rows, headers=["conc", "ours TTFT p50", "vllm TTFT p50", "rel diff", "ours TPOT p50",
                                  "vllm TPOT p50", "rel diff", "failed o/v"], floatfmt=".3f"))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"endpoint": endpoint, "model": model, "results": results}, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
