"""Drive a :class:`~pytest_llmperf.load.workload.Workload` against an OpenAI-compatible endpoint.

:func:`run_load` checks the endpoint first (``GET {endpoint}/models``: fails fast with
:class:`~pytest_llmperf.errors.EndpointUnreachable` naming the URL, or
:class:`~pytest_llmperf.errors.UsageError` listing the served models), runs the warmup requests (closed loop,
excluded from the result), then the measured requests at their precomputed send offsets, limited by an
``asyncio.Semaphore`` and an aiohttp connector ``limit`` both equal to the concurrency.

Randomness: ``SeedSequence(workload.seed)`` is split into one generator for prompts/lengths and one for
arrivals, so the same seed gives the same prompts whatever the arrival settings.

Nothing hangs (docs/faults.md): each request is bounded by ``workload.timeout_s`` (recorded as that request's
error); a watchdog raises :class:`~pytest_llmperf.errors.RunStalled` when no token arrived for
``workload.stall_timeout_s`` while requests were in flight, and
:class:`~pytest_llmperf.errors.RunDeadlineExceeded` when the run (warmup included) passes
``workload.deadline_s``. Either cancels the requests in flight, closes the connections, and carries the
finished requests' records; the message names the engine and endpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import aiohttp
import numpy as np

from pytest_llmperf.errors import EndpointUnreachable, LoadAborted, RunDeadlineExceeded, RunStalled, UsageError
from pytest_llmperf.load.arrivals import send_offsets_s
from pytest_llmperf.load.auth import auth_headers
from pytest_llmperf.load.client import stream_request
from pytest_llmperf.load.prompts import PromptLike, SampleRequest, build_requests
from pytest_llmperf.records import LoadWindow, RequestRecord

if TYPE_CHECKING:
    from pytest_llmperf.load.workload import Workload

__all__ = ["LoadRun", "run_load", "run_load_async", "check_endpoint", "run_generators", "PREFLIGHT_TIMEOUT_S",
           "Watchdog"]

logger = logging.getLogger(__name__)

#: Total time allowed for ``GET /models`` before the endpoint counts as unreachable.
PREFLIGHT_TIMEOUT_S = 3.0

ProgressFn = Callable[[int, int], None]


class Watchdog:
    """Stall and deadline detector for one run. ``begin``/``end`` bracket each request on the wire, ``token``
    marks a read that brought tokens. The idle clock restarts on a token and when the first request of an
    idle period starts (not on every send: a server that never answers must not hide behind new sends)."""

    def __init__(self, where: str, stall_timeout_s: float, deadline_s: float, total: int) -> None:
        self.where, self.stall_timeout_s, self.deadline_s, self.total = where, stall_timeout_s, deadline_s, total
        self.t0 = self.last_activity = time.perf_counter()
        self.in_flight = 0
        self.finished: list[RequestRecord] = []

    def begin(self) -> None:
        if self.in_flight == 0:
            self.last_activity = time.perf_counter()
        self.in_flight += 1

    def end(self, rec: RequestRecord) -> None:
        self.in_flight -= 1
        self.finished.append(rec)

    def token(self) -> None:
        self.last_activity = time.perf_counter()

    def check(self, now: float) -> LoadAborted | None:
        done = f"{len(self.finished)} of {self.total} requests finished"
        if self.in_flight and now - self.last_activity >= self.stall_timeout_s:
            return RunStalled(
                f"{self.where} stalled: no token for {now - self.last_activity:.0f} s while {self.in_flight} "
                f"request(s) were in flight (stall timeout {self.stall_timeout_s:g} s; {done}); the requests in "
                f"flight were cancelled", tuple(self.finished))
        if now - self.t0 >= self.deadline_s:
            return RunDeadlineExceeded(
                f"{self.where}: the run passed its deadline of {self.deadline_s:g} s ({done}, {self.in_flight} "
                f"in flight, cancelled)", tuple(self.finished))
        return None

    async def watch(self) -> LoadAborted:
        """Return the first stall/deadline error (never returns while the run is healthy)."""
        period_s = max(0.02, min(1.0, self.stall_timeout_s / 10, self.deadline_s / 10))
        while True:
            await asyncio.sleep(period_s)
            err = self.check(time.perf_counter())
            if err is not None:
                return err


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
            if resp.status in (401, 403):
                raise EndpointUnreachable(
                    f"{url} answered HTTP {resp.status}: the endpoint wants credentials; set LLMPERF_API_KEY "
                    f"(sent as a bearer token) or LLMPERF_HEADERS")
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
    except ValueError:
        raise EndpointUnreachable(f"{url} did not answer JSON: {endpoint} is not an OpenAI-compatible endpoint "
                                  f"(expected the base URL of an OpenAI API, http://HOST:PORT/v1)") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EndpointUnreachable(f"{url} answered JSON without a 'data' model list: {endpoint} is not an "
                                  f"OpenAI-compatible endpoint")
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
    prompts: Sequence[PromptLike] | None = None,
    vocab_size: int = 32000,
    chat: bool = False,
    engine_label: str | None = None,
    headers: Mapping[str, str] | None = None,
    on_measure_start: Callable[[], None] | None = None,
) -> LoadRun:
    """The coroutine behind :func:`run_load` (same arguments)."""
    where = f"engine {engine_label} at {endpoint}" if engine_label else f"endpoint {endpoint}"
    watchdog = Watchdog(where, float(workload.stall_timeout_s), float(workload.deadline_s),
                        int(workload.total_requests))
    work = asyncio.ensure_future(_run(endpoint, model, workload, watchdog, progress=progress, prompts=prompts,
                                      vocab_size=vocab_size, chat=chat,
                                      headers=auth_headers() if headers is None else dict(headers),
                                      on_measure_start=on_measure_start))
    guard = asyncio.ensure_future(watchdog.watch())
    try:
        await asyncio.wait({work, guard}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        guard.cancel()
        if not work.done():
            work.cancel()  # cancels every request in flight; their connections close as the tasks unwind
        await asyncio.gather(work, guard, return_exceptions=True)
    if work.cancelled():  # the watchdog fired first and cancelled the run
        raise guard.result()
    return work.result()


async def _run(endpoint: str, model: str, workload: Workload, watchdog: Watchdog, *,
               progress: ProgressFn | None, prompts: Sequence[PromptLike] | None, vocab_size: int, chat: bool,
               headers: dict[str, str], on_measure_start: Callable[[], None] | None = None) -> LoadRun:
    prompt_rng, arrival_rng = run_generators(workload.seed)
    requests = build_requests(workload, prompt_rng, vocab_size=vocab_size, prompts=prompts)
    n_warm = int(workload.warmup_requests)
    warm, measured = requests[:n_warm], requests[n_warm:]
    offsets_s = send_offsets_s(len(measured), workload.request_rate, arrival_rng, burstiness=workload.burstiness)
    concurrency = int(workload.concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                     headers=headers) as session:
        await check_endpoint(session, endpoint, model)
        sem = asyncio.Semaphore(concurrency)
        notes: list[str] = []

        async def one(req: SampleRequest, at_perf_s: float, base_perf_s: float) -> tuple[RequestRecord, float]:
            delay_s = at_perf_s - time.perf_counter()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            async with sem:
                watchdog.begin()
                rec = await stream_request(session, endpoint, model, req, timeout_s=workload.timeout_s,
                                           run_start_perf_s=base_perf_s, chat=chat, activity=watchdog.token,
                                           notes=notes)
                watchdog.end(rec)
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
        if on_measure_start is not None:
            on_measure_start()  # e.g. the /metrics scrape that opens the measured window (warmup done, none in flight)
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
            outs = await asyncio.gather(*(tracked(r, float(o)) for r, o in zip(measured, offsets_s, strict=True)))
        finally:
            if not was_frozen:
                gc.unfreeze()
        if notes:
            logger.warning("llmperf: %d stream(s) at %s whose usage disagreed with the tokens counted, first: %s",
                           len(notes), endpoint, notes[0])
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
    prompts: Sequence[PromptLike] | None = None,
    vocab_size: int = 32000,
    chat: bool = False,
    engine_label: str | None = None,
    headers: Mapping[str, str] | None = None,
    on_measure_start: Callable[[], None] | None = None,
) -> LoadRun:
    """Run ``workload`` against ``endpoint`` (OpenAI base URL, e.g. ``http://127.0.0.1:8000/v1``).

    ``progress(done, total)`` is called after each measured request. ``prompts`` replaces the synthetic
    prompts: strings, or :class:`~pytest_llmperf.load.prompts.DatasetPrompt` items whose ``output_len`` (when set)
    replaces the workload's (a dataset, :mod:`pytest_llmperf.load.datasets`); each record's prompt token count is
    then the server's ``usage.prompt_tokens``. ``headers`` go with every request; by default they come from
    ``LLMPERF_API_KEY`` / ``LLMPERF_HEADERS`` (:mod:`pytest_llmperf.load.auth`); they are never recorded. ``chat``
    posts to ``/chat/completions`` instead of ``/completions``. Works from a thread with a running event loop
    too (it then runs in a helper thread). ``engine_label`` names the engine in stall/deadline errors
    (:class:`~pytest_llmperf.errors.RunStalled`, :class:`~pytest_llmperf.errors.RunDeadlineExceeded`).
    ``on_measure_start()`` is called once the warmup requests have finished and before the first measured one is
    sent (nothing in flight): a server-metrics monitor opens its window there, so warmup stays out of it.
    """
    def coro() -> Coroutine[Any, Any, LoadRun]:
        return run_load_async(endpoint, model, workload, progress=progress, prompts=prompts, vocab_size=vocab_size,
                              chat=chat, engine_label=engine_label, headers=headers,
                              on_measure_start=on_measure_start)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro()).result()
