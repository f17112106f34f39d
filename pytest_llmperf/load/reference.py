"""vLLM's own benchmark client (the request function behind ``vllm bench serve``), driven the same way as
its ``benchmark()`` (semaphore + connector limit), for cross-checking our client on the same engine.

Imports vllm lazily; only benchmarks and the agreement test use it. TPOT is per request
``(e2e - ttft) / (output_tokens - 1)`` for both clients, as vLLM defines it.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from pytest_llmperf.load.prompts import SampleRequest, build_requests
from pytest_llmperf.load.runner import run_generators, run_load
from pytest_llmperf.load.workload import Workload

__all__ = ["vllm_client_outputs", "vllm_client_run", "ours_run", "ClientFigures", "p50"]

ClientFigures = tuple[list[float], list[float], list[float], int]  # ttft_ms, tpot_ms, itl_ms, failed


async def _vllm_client_async(endpoint: str, model: str, requests: list[SampleRequest], concurrency: int,
                             warmup: int = 0) -> list[Any]:
    """vLLM's request function over one session: ``requests[:warmup]`` first (closed loop, dropped, as our
    runner's warmup), then the rest; returns the outputs of the rest."""
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
        return await asyncio.gather(*(one(r) for r in requests[warmup:]))


def vllm_client_outputs(endpoint: str, model: str, workload: Workload, vocab_size: int = 32000) -> list[Any]:
    """vLLM's RequestFuncOutput objects for ``workload``'s measured requests (same prompts as ours).

    The warmup requests go first through vLLM's request function on the same session (same connections),
    as our runner does them, so neither side measures on cold connections.
    """
    reqs = build_requests(workload, run_generators(workload.seed)[0], vocab_size=vocab_size)
    return asyncio.run(_vllm_client_async(endpoint, model, reqs, int(workload.concurrency),
                                          warmup=int(workload.warmup_requests)))


def vllm_client_run(endpoint: str, model: str, workload: Workload, vocab_size: int = 32000) -> ClientFigures:
    outs = vllm_client_outputs(endpoint, model, workload, vocab_size)
    ok = [o for o in outs if o.success]
    tpot = [(o.latency - o.ttft) * 1000 / (o.output_tokens - 1) for o in ok if (o.output_tokens or 0) > 1]
    return [o.ttft * 1000 for o in ok], tpot, [x * 1000 for o in ok for x in o.itl], len(outs) - len(ok)


def ours_run(endpoint: str, model: str, workload: Workload, vocab_size: int = 32000) -> ClientFigures:
    run = run_load(endpoint, model, workload, vocab_size=vocab_size)
    ok = [r for r in run.records if r.error is None]
    return ([r.ttft_ms for r in ok if r.ttft_ms is not None], [r.tpot_ms for r in ok if r.tpot_ms is not None],
            [x for r in ok for x in r.itl_ms], run.failed)


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
