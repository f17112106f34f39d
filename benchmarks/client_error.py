"""The load client's measurement error: measured minus scripted TTFT and ITL, ours beside vLLM's client.

A scripted SSE server (tests/support/scripted_server.py) runs in its own process with a known first-token
delay and inter-token delay. Both clients stream the same workload from it at each concurrency, back to back:
ours (:func:`pytest_llmperf.load.runner.run_load`) and vLLM's ``async_request_openai_completions`` (the
request function of ``vllm bench serve``), driven by the same semaphore + connector-limit loop as
``vllm.benchmarks.serve.benchmark``. The error includes the scripted server's own lag under load, which
both clients see alike; the comparison between clients is the point.

    .venv/bin/python benchmarks/client_error.py [--ttft-ms 50 --itl-ms 20 --output-len 32]
        [--concurrency 1 64 256] [--json .llmperf/client_error.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_llmperf.load.reference import ours_run, vllm_client_run  # noqa: E402
from pytest_llmperf.load.workload import Workload  # noqa: E402
from tests.support.scripted_server import Script, scripted_server  # noqa: E402

__all__ = ["main"]


def _err(values: list[float], truth_ms: float) -> dict[str, float | None]:
    if not values:
        return {"median_ms": None, "p99_ms": None}
    e = np.asarray(values) - truth_ms
    return {"median_ms": float(np.percentile(e, 50)), "p99_ms": float(np.percentile(e, 99))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--requests-per-slot", type=int, default=2, help="requests = max(8, this x concurrency)")
    p.add_argument("--json", type=Path, default=ROOT / ".llmperf" / "client_error.json")
    a = p.parse_args(argv)
    from tabulate import tabulate

    # no ':' ping: vLLM's client strips the blank-line separator after it and then drops the first data event
    script = Script(ttft_s=a.ttft_ms / 1000, itl_s=a.itl_ms / 1000, ping_comment=False)
    results: list[dict[str, Any]] = []
    clients = {"ours": ours_run, "vllm": vllm_client_run}
    with scripted_server(script, in_subprocess=True) as srv:
        for conc in a.concurrency:
            wl = Workload(num_requests=max(8, a.requests_per_slot * conc), concurrency=conc, input_len=a.input_len,
                          output_len=a.output_len, warmup_requests=min(conc, 8), seed=0, timeout_s=120)
            for name, fn in clients.items():
                t = time.perf_counter()
                ttft, _, itl, failed, _ = fn(srv.endpoint, script.model, wl)
                results.append({"client": name, "concurrency": conc, "requests": wl.num_requests, "failed": failed,
                                "itl_count": len(itl), "ttft_error": _err(ttft, a.ttft_ms),
                                "itl_error": _err(itl, a.itl_ms), "wall_s": time.perf_counter() - t})
    rows = [[r["client"], r["concurrency"], r["requests"], r["failed"], r["itl_count"],
             r["ttft_error"]["median_ms"], r["ttft_error"]["p99_ms"], r["itl_error"]["median_ms"],
             r["itl_error"]["p99_ms"]] for r in results]
    print(f"scripted TTFT {a.ttft_ms} ms, ITL {a.itl_ms} ms, {a.output_len} output tokens; error = measured - scripted")
    print(tabulate(rows, headers=["client", "conc", "reqs", "failed", "itl n", "TTFT err p50", "TTFT err p99",
                                  "ITL err p50", "ITL err p99"], floatfmt=".3f"))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"ttft_ms": a.ttft_ms, "itl_ms": a.itl_ms, "output_len": a.output_len,
                                  "results": results}, indent=1))
    print(f"wrote {a.json}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
