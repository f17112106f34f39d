"""Drive a :class:`~pytest_llmperf.load.workload.Workload` against an OpenAI-compatible endpoint.

:func:`run_load` checks the endpoint first (``GET {endpoint}/models``: fails fast with
:class:`~pytest_llmperf.errors.EndpointUnreachable` naming the URL, or
:class:`~pytest_llmperf.errors.UsageError` listing the served models), runs the warmup requests (closed loop,
excluded from the result), then the measured requests at their precomputed send offsets, limited by an
``asyncio.Semaphore`` and an aiohttp connector ``limit`` both equal to the concurrency.

Randomness: ``SeedSequence(workload.seed)`` is split into one generator for prompts/lengths and one for
arrivals, so the same seed gives the same prompts whatever the arrival settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np

from pytest_llmperf.errors import EndpointUnreachable, UsageError
from pytest_llmperf.load.arrivals import send_offsets_s
from pytest_llmperf.load.client import stream_request
from pytest_llmperf.load.prompts import SampleRequest, build_requests
from pytest_llmperf.load.workload import Workload
from pytest_llmperf.records import LoadWindow, RequestRecord

__all__ = ["LoadRun", "run_load", "run_load_async", "check_endpoint", "run_generators", "PREFLIGHT_TIMEOUT_S"]

logger = logging.getLogger(__name__)

#: Total time allowed for ``GET /models`` before the endpoint counts as unreachable.
PREFLIGHT_TIMEOUT_S = 3.0

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class LoadRun:
    """The measured requests of one run (warmup excluded) and their window.

    ``records[i].start_s`` is relative to the first measured send; ``window`` is on the wall clock
    (``time.time``) from the first measured send to the last measured finish; ``duration_s`` is that span
    measured on ``time.perf_counter``.
    """

    records: tuple[RequestRecord, ...]
    window: LoadWindow
    duration_s: float

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.error is not None)


def run_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(prompt generator, arrival generator), independent streams derived from ``seed``."""
    prompt_seq, arrival_seq = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(prompt_seq), np.random.default_rng(arrival_seq)


async def check_endpoint(session: aiohttp.ClientSession, endpoint: str, model: str,
                         timeout_s: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Return the served model names; raise EndpointUnreachable / UsageError naming the URL or models."""
    url = endpoint.rstrip("/") + "/models"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                body = (await resp.text(errors="replace"))[:200]
                raise EndpointUnreachable(
                    f"{url} answered HTTP {resp.status} ({body!r}); is {endpoint!r} the OpenAI base URL "
                    f"(http://HOST:PORT/v1)?")
            data = await resp.json(content_type=None)
    except (asyncio.TimeoutError, TimeoutError):
        raise EndpointUnreachable(f"nothing answered at {url} within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise EndpointUnreachable(f"nothing answers at {url}: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise EndpointUnreachable(f"{url} did not return the JSON model list: {exc}") from None
    served = [str(m.get("id")) for m in (data.get("data") or []) if isinstance(m, dict)] \
        if isinstance(data, dict) else []
    if model not in served:
        raise UsageError(f"model {model!r} is not served at {endpoint}; served models: {', '.join(served) or '(none)'}")
    return served


async def run_load_async(
    endpoint: str,
    model: str,
    workload: Workload,
    *,
    progress: ProgressFn | None = None,
    prompts: Sequence[str] | None = None,
    vocab_size: int = 32000,
    chat: bool = False,
) -> LoadRun:
    """The coroutine behind :func:`run_load` (same arguments)."""
    prompt_rng, arrival_rng = run_generators(workload.seed)
    requests = build_requests(workload, prompt_rng, vocab_size=vocab_size, prompts=prompts)
    n_warm = int(workload.warmup_requests)
    warm, measured = requests[:n_warm], requests[n_warm:]
    offsets_s = send_offsets_s(len(measured), workload.request_rate, arrival_rng, burstiness=workload.burstiness)
    concurrency = int(workload.concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        await check_endpoint(session, endpoint, model)
        sem = asyncio.Semaphore(concurrency)

        async def one(req: SampleRequest, at_perf_s: float, base_perf_s: float) -> tuple[RequestRecord, float]:
            delay_s = at_perf_s - time.perf_counter()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            async with sem:
                rec = await stream_request(session, endpoint, model, req, timeout_s=workload.timeout_s,
                                           run_start_perf_s=base_perf_s, chat=chat)
            return rec, time.perf_counter()

        if warm:
            logger.debug("llmperf: %d warmup requests to %s", len(warm), endpoint)
            t_warm = time.perf_counter()
            warm_out = await asyncio.gather(*(one(r, t_warm, t_warm) for r in warm))
            n_bad = sum(1 for rec, _ in warm_out if rec.error)
            if n_bad:
                logger.warning("llmperf: %d of %d warmup requests failed, first: %s", n_bad, len(warm),
                               next(rec.error for rec, _ in warm_out if rec.error))

        # A full collection of a big heap (e.g. torch/vllm imported in this process) stalls the event loop for
        # 100+ ms; landing in the measured burst it inflated the first wave's TTFT (p99 +100 ms at 256
        # concurrent). Collect now, outside the measurement, and freeze what exists so collections during
        # the measured requests only traverse objects created since. (Unfrozen after, unless someone else in
        # this process had frozen objects already: gc.unfreeze() would undo theirs too.)
        was_frozen = gc.get_freeze_count() > 0
        gc.collect()
        gc.freeze()
        t0_wall_s, t0_perf_s = time.time(), time.perf_counter()
        total, done = len(measured), 0

        async def tracked(req: SampleRequest, offset_s: float) -> tuple[RequestRecord, float]:
            nonlocal done
            out = await one(req, t0_perf_s + offset_s, t0_perf_s)
            done += 1
            if progress is not None:
                progress(done, total)
            return out

        try:
            outs = await asyncio.gather(*(tracked(r, float(o)) for r, o in zip(measured, offsets_s)))
        finally:
            if not was_frozen:
                gc.unfreeze()
    first_send_s = min(rec.start_s for rec, _ in outs)
    last_finish_perf_s = max(fin for _, fin in outs)
    records = tuple(dataclasses.replace(rec, start_s=rec.start_s - first_send_s) for rec, _ in outs)
    start_unix_s = t0_wall_s + first_send_s
    duration_s = (last_finish_perf_s - t0_perf_s) - first_send_s
    return LoadRun(records=records, window=LoadWindow(start_unix_s, start_unix_s + duration_s),
                   duration_s=duration_s)


def run_load(
    endpoint: str,
    model: str,
    workload: Workload,
    *,
    progress: ProgressFn | None = None,
    prompts: Sequence[str] | None = None,
    vocab_size: int = 32000,
    chat: bool = False,
) -> LoadRun:
    """Run ``workload`` against ``endpoint`` (OpenAI base URL, e.g. ``http://127.0.0.1:8000/v1``).

    ``progress(done, total)`` is called after each measured request. ``prompts`` replaces the synthetic
    prompts (lengths then approximate). Works from a thread with a running event loop too (it then runs
    in a helper thread).
    """
    coro_args = dict(progress=progress, prompts=prompts, vocab_size=vocab_size, chat=chat)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_load_async(endpoint, model, workload, **coro_args))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run_load_async(endpoint, model, workload, **coro_args)).result()
