"""One streaming request against an OpenAI-compatible server, timed; it never raises.

:func:`stream_request` posts to ``/v1/completions`` (or ``/v1/chat/completions`` with ``chat=True``; both share
one SSE loop, :class:`StreamAccount`) and returns a :class:`~pytest_llmperf.records.RequestRecord`. HTTP errors
(status and body), mid-stream ``error`` objects, connection errors and the per-request total timeout are
recorded in ``RequestRecord.error``.

Token accounting. The request asks for ``stream_options.continuous_usage_stats``, so every chunk carries the
running ``usage.completion_tokens``; the tokens a read brought are the increase of that count, which counts a
chunk carrying several tokens right (vLLM's own client counts one per chunk, its issue 27485). Servers that
send no per-chunk usage fall back to one token per chunk with text. Timing is per network read
(``time.perf_counter`` when the bytes arrive): TTFT is the first read that brings a token; a later read that
brings ``n`` tokens after a gap ``g`` since the previous token read adds ``n`` ITL entries of ``g / n``
(token-weighted). Tokens that arrive in the same read as the first token add ITL entries of 0, so
``len(itl_ms) == output_tokens - 1``. E2E latency ends at the last read that brought a token.

SSE parsing is line based: blank lines and ``:`` comments are skipped, ``data: [DONE]`` ends the stream,
each ``data:`` line is one JSON event (as OpenAI-compatible servers send them).

Success (docs/faults.md). A stream counts as a success only if it ended with ``data: [DONE]`` and delivered
exactly the tokens asked for (``max_tokens = min_tokens``, ``ignore_eos``); otherwise its record carries the
cause: truncated (fewer tokens), missing ``[DONE]`` (connection closed early), or inflated usage. ``usage`` is
cross-checked against the stream: a count above ``max_tokens``, or tokens claimed by usage with no choice event
that could have carried them, is a failure (an inflated count must not inflate throughput). A running count is
not bounded by the number of events: vLLM merges the outputs of several engine steps into one event when the
client reads slower than the engine writes (and speculative decoding emits several tokens per step), so one
event may carry many tokens. A final usage that disagrees with the running count is noted (``note``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TYPE_CHECKING

import aiohttp

from pytest_llmperf.records import RequestRecord

if TYPE_CHECKING:
    from pytest_llmperf.load.prompts import SampleRequest

__all__ = ["StreamAccount", "build_payload", "stream_request", "ERROR_BODY_MAX_CHARS"]

ActivityFn = Callable[[], None]

#: How much of an HTTP error body is kept in ``RequestRecord.error``.
ERROR_BODY_MAX_CHARS = 500


class StreamAccount:
    """Incremental SSE parser and token/timing accountant for one response (no I/O; benchmarkable alone).

    Call :meth:`feed` with each network read and the ``perf_counter`` time it arrived, then :meth:`record`.
    ``expected_tokens`` (the request's ``max_tokens``) makes a short or over-counted stream a failure.
    ``done`` means parsing stopped (``[DONE]``, an error event or malformed data); ``done_marker`` that the
    stream ended properly with ``data: [DONE]``.
    """

    __slots__ = ("start_perf_s", "_buf", "tokens", "prompt_tokens", "ttft_s", "last_token_perf_s",
                 "itl_ms", "error", "done", "_usage_seen", "expected_tokens", "done_marker", "choice_events",
                 "final_usage", "note")

    def __init__(self, start_perf_s: float, expected_tokens: int | None = None) -> None:
        self.start_perf_s = start_perf_s
        self.expected_tokens = expected_tokens
        self.done_marker = False
        self.choice_events = 0
        self.final_usage: int | None = None
        self.note: str | None = None
        self._buf = b""
        self.tokens = 0
        self.prompt_tokens: int | None = None
        self.ttft_s: float | None = None
        self.last_token_perf_s: float | None = None
        self.itl_ms: list[float] = []
        self.error: str | None = None
        self.done = False
        self._usage_seen = False

    def feed(self, data: bytes, now_perf_s: float) -> None:
        """Parse the complete lines in ``data`` (plus any buffered remainder) and account their tokens."""
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        total = self.tokens
        for line in lines:
            if self.done:
                break
            if not line.startswith(b"data:"):
                continue  # blank separator, ':' comment, 'event:'/'id:' fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = self.done_marker = True
                break
            if not payload:
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                self.error = f"malformed SSE data line: {payload[:200]!r}"
                self.done = True
                break
            total = self._account_event(event, total)
        new_tokens = total - self.tokens
        if new_tokens > 0:
            self._add_tokens(new_tokens, now_perf_s)

    def _account_event(self, event: Any, total: int) -> int:
        if not isinstance(event, dict):
            return total
        err = event.get("error")
        if err:
            msg = err.get("message", err) if isinstance(err, dict) else err
            self.error = f"server error mid-stream: {msg}"
            self.done = True
            return total
        usage = event.get("usage")
        choices = event.get("choices")
        if choices:
            self.choice_events += 1
        if usage:
            if self.prompt_tokens is None and usage.get("prompt_tokens") is not None:
                self.prompt_tokens = int(usage["prompt_tokens"])
            completion = usage.get("completion_tokens")
            if completion is not None:
                self.final_usage = int(completion)
                if choices:
                    self._usage_seen = True
                    return max(total, int(completion))
                return total  # usage-only chunk: a summary, not new tokens (checked against the count in record)
        if choices and not self._usage_seen:
            first = choices[0]
            text = first.get("text")
            if text is None:
                text = (first.get("delta") or {}).get("content")
            if text:
                return total + 1
        return total

    def _add_tokens(self, n_tokens: int, now_perf_s: float) -> None:
        if self.last_token_perf_s is None:
            self.ttft_s = now_perf_s - self.start_perf_s
            if n_tokens > 1:
                self.itl_ms.extend([0.0] * (n_tokens - 1))
        else:
            share_ms = (now_perf_s - self.last_token_perf_s) * 1000.0 / n_tokens
            self.itl_ms.extend([share_ms] * n_tokens)
        self.tokens += n_tokens
        self.last_token_perf_s = now_perf_s

    def completeness_error(self) -> str | None:
        """Why the stream is not a success on its own terms (None if it is): no token, no ``[DONE]``, fewer or
        more tokens than asked, or a usage count the stream could not have carried. Without running usage it
        adopts a consistent final usage count as ``tokens`` (multi-token events); it sets ``note`` when a final
        usage count disagrees with the running count but the stream is otherwise complete."""
        want = self.expected_tokens
        usage = self.final_usage
        if self.tokens == 0 and not usage:
            return "stream ended without any token"
        if want is not None and max(self.tokens, usage or 0) > want:
            return (f"inflated usage: the server reported {max(self.tokens, usage or 0)} completion tokens for "
                    f"max_tokens={want} (more than the stream can carry; {self.choice_events} token events)")
        if self.choice_events == 0:
            return f"inflated usage: usage reports {usage} completion tokens but the stream carried no token event"
        if not self.done_marker:
            return (f"stream ended without data: [DONE] after {self.tokens}"
                    + (f" of {want}" if want is not None else "") + " tokens (connection closed early)")
        if usage is not None and usage != self.tokens:
            if not self._usage_seen and 0 < self.tokens < usage:
                # no running usage: one token was counted per text event; the final count is the truth
                self.note = f"usage counted {usage} tokens over {self.choice_events} text events"
                self.tokens = usage
            else:
                self.note = f"final usage {usage} != {self.tokens} tokens counted from the stream"
        if want is not None and self.tokens < want:
            return f"stream delivered {self.tokens} of {want} requested tokens (truncated)"
        return None

    def record(self, request_id: str, run_start_perf_s: float, prompt_len: int,
               error: str | None = None) -> RequestRecord:
        """The :class:`RequestRecord` so far; ``error`` (if given) wins over a parse/stream error, which wins
        over :meth:`completeness_error`."""
        error = error or self.error or self.completeness_error()
        return RequestRecord(
            request_id=request_id,
            start_s=self.start_perf_s - run_start_perf_s,
            prompt_tokens=self.prompt_tokens if self.prompt_tokens is not None else prompt_len,
            output_tokens=self.tokens,
            ttft_ms=None if self.ttft_s is None else self.ttft_s * 1000.0,
            e2el_ms=None if self.last_token_perf_s is None
            else (self.last_token_perf_s - self.start_perf_s) * 1000.0,
            itl_ms=tuple(self.itl_ms),
            error=error,
        )


def build_payload(model: str, request: SampleRequest, *, chat: bool = False) -> dict[str, Any]:
    """The JSON body: exact output length (``min_tokens = max_tokens``, ``ignore_eos``), greedy, streamed."""
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": request.output_len,
        "min_tokens": request.output_len,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "temperature": 0,
    }
    if chat:
        payload["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        payload["prompt"] = request.prompt
    return payload


async def stream_request(
    session: aiohttp.ClientSession,
    endpoint: str,
    model: str,
    request: SampleRequest,
    *,
    timeout_s: float,
    run_start_perf_s: float | None = None,
    chat: bool = False,
    activity: ActivityFn | None = None,
    notes: list[str] | None = None,
) -> RequestRecord:
    """Send ``request`` to ``{endpoint}/completions`` (``/chat/completions`` if ``chat``), stream and time it.

    ``endpoint`` is the OpenAI base URL (``http://host:port/v1``); ``timeout_s`` bounds the whole request.
    ``run_start_perf_s`` (``perf_counter`` of the run's first send) makes ``start_s`` run-relative.
    ``activity()`` is called after each read that brought tokens (the runner's stall detector); a usage
    mismatch note is appended to ``notes``. Never raises (except on cancellation): every failure is in the
    returned record's ``error``.
    """
    url = endpoint.rstrip("/") + ("/chat/completions" if chat else "/completions")
    payload = build_payload(model, request, chat=chat)
    start = time.perf_counter()
    acct = StreamAccount(start, expected_tokens=request.output_len)
    base = start if run_start_perf_s is None else run_start_perf_s
    perf = time.perf_counter
    error: str | None = None
    try:
        async with session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                body = (await resp.text(errors="replace"))[:ERROR_BODY_MAX_CHARS]
                error = f"HTTP {resp.status} from {url}: {body}"
            else:
                # read to EOF even after [DONE]: leaving the chunked body unfinished made the next
                # request on a reused uvicorn connection arrive in one burst (seen with vLLM 0.32)
                async for data in resp.content.iter_any():
                    if not acct.done:
                        before = acct.tokens
                        acct.feed(data, perf())
                        if activity is not None and acct.tokens > before:
                            activity()
    except (asyncio.TimeoutError, TimeoutError):
        error = f"timeout after {timeout_s:g} s at {url} ({acct.tokens} tokens received)"
    except aiohttp.ClientError as exc:
        error = f"connection error at {url}: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a request never raises; the error is recorded
        error = f"client error at {url}: {type(exc).__name__}: {exc}"
    rec = acct.record(request.request_id, base, request.prompt_len, error)
    if acct.note and notes is not None:
        notes.append(f"{request.request_id}: {acct.note}")
    return rec
