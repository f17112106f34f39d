"""vLLM's own benchmark client (the request function behind ``vllm bench serve``), driven the same way as
its ``benchmark()`` (semaphore + connector limit), for cross-checking our client on the same engine.

Imports vllm lazily; only benchmarks and the agreement test use it. TPOT is per request
``(e2e - ttft) / (output_tokens - 1)`` for both clients, as vLLM defines it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any, NamedTuple, TYPE_CHECKING

from pytest_llmperf.load.prompts import SampleRequest, build_requests
from pytest_llmperf.load.runner import run_generators, run_load

if TYPE_CHECKING:
    from pytest_llmperf.load.workload import Workload

__all__ = ["vllm_client_outputs", "vllm_client_run", "ours_run", "ClientFigures", "p50"]



class ClientFigures(NamedTuple):
    """One client's figures for one workload: per-request TTFT and TPOT, token gaps, failures, throughput."""

    ttft_ms: list[float]
    tpot_ms: list[float]
    itl_ms: list[float]
    failed: int
    output_tok_s: float | None  # output tokens of successful requests / measured wall time


async def _vllm_client_async(endpoint: str, model: str, requests: list[SampleRequest], concurrency: int,
                             warmup: int = 0) -> tuple[list[Any], float]:
    """vLLM's request function over one session: ``requests[:warmup]`` first (closed loop, dropped, as our
    runner's warmup), then the rest; returns the outputs of the rest and their wall time in seconds."""
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300,
                                     use_dns_cache=True, keepalive_timeout=60, enable_cleanup_closed=True,
                                     force_close=False)
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 60 * 60)) as session:
        async def one(req: SampleRequest) -> Any:
            inp = RequestFuncInput(prompt=req.prompt, api_url=endpoint + "/completions", prompt_len=req.prompt_len,
                                   output_len=req.output_len, model=model, ignore_eos=True,
                                   extra_body={"min_tokens": req.output_len, "temperature": 0})
            async with sem:
                return await async_request_openai_completions(inp, session)

        if warmup:
            await asyncio.gather(*(one(r) for r in requests[:warmup]))
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(one(r) for r in requests[warmup:]))
        return list(outs), time.perf_counter() - t0


def vllm_client_outputs(endpoint: str, model: str, workload: Workload,
                        vocab_size: int = 32000) -> tuple[list[Any], float]:
    """vLLM's RequestFuncOutput objects for ``workload``'s measured requests (same prompts as ours), and the
    measured requests' wall time in seconds.

    The warmup requests go first through vLLM's request function on the same session (same connections),
    as our runner does them, so neither side measures on cold connections.
    """
    reqs = build_requests(workload, run_generators(workload.seed)[0], vocab_size=vocab_size)
    return asyncio.run(_vllm_client_async(endpoint, model, reqs, int(workload.concurrency),
                                          warmup=int(workload.warmup_requests)))


def _rate(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 else None


def vllm_client_run(endpoint: str, model: str, workload: Workload, vocab_size: int = 32000) -> ClientFigures:
    outs, wall_s = vllm_client_outputs(endpoint, model, workload, vocab_size)
    ok = [o for o in outs if o.success]
    tpot = [(o.latency - o.ttft) * 1000 / (o.output_tokens - 1) for o in ok if (o.output_tokens or 0) > 1]
    return ClientFigures([o.ttft * 1000 for o in ok], tpot, [x * 1000 for o in ok for x in o.itl],
                         len(outs) - len(ok), _rate(sum(o.output_tokens or 0 for o in ok), wall_s))


def ours_run(endpoint: str, model: str, workload: Workload, vocab_size: int = 32000) -> ClientFigures:
    run = run_load(endpoint, model, workload, vocab_size=vocab_size)
    ok = [r for r in run.records if r.error is None]
    return ClientFigures([r.ttft_ms for r in ok if r.ttft_ms is not None],
                         [r.tpot_ms for r in ok if r.tpot_ms is not None], [x for r in ok for x in r.itl_ms],
                         run.failed, _rate(sum(r.output_tokens or 0 for r in ok), run.duration_s))


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
