"""A scripted OpenAI-compatible SSE server: a measuring instrument for the load client.

It streams ``max_tokens`` tokens for every completion request with a known first-token delay and
inter-token delay, on an absolute schedule (no drift): chunk ``j`` carrying ``tokens_per_chunk`` tokens is
written at ``receipt + ttft_s + j * tokens_per_chunk * itl_s``. Every chunk carries running
``usage.completion_tokens`` (unless ``usage_per_chunk=False``); a ``:`` comment precedes the first chunk
(unless ``ping_comment=False``: vLLM's bench client drops the first event after a comment),
and a usage-only chunk and ``data: [DONE]`` end the stream. Failure modes: ``http_status`` (answer that
status with a text body), ``error_after_tokens`` (a mid-stream ``error`` object), ``stall`` (never answer),
``stall_after_tokens`` (stream that many tokens, then go silent with the connection open; ``/health`` stays
200), ``truncate_after_tokens`` (end the stream properly, usage and ``[DONE]``, after that many tokens),
``omit_done`` (end the body without ``data: [DONE]``), ``usage_factor`` (report ``usage.completion_tokens``
multiplied by it: inflated usage). ``GET /health`` answers 200 in every mode, as a stalled vLLM's does.

Endpoint-mode knobs (docs/endpoint.md): ``GET /version`` answers ``{"version": version}`` as vLLM's does (404 when
``version=None``); ``/v1/models`` lists ``model`` with ``root`` and ``max_model_len`` (a prompt plus ``max_tokens``
over ``max_model_len`` gets vLLM's HTTP 400); ``api_key`` / ``required_header`` make every ``/v1`` route answer 401
without them; ``not_openai`` makes ``/v1/models`` answer an HTML page (a server that is not OpenAI-compatible);
``prompt_tokens_per_word`` scales the prompt tokens reported in ``usage`` (a tokenizer that is not the client's
word count). Server-side state: ``max_num_seqs`` limits the requests served at once (the rest queue, FIFO, as
vLLM's scheduler), and ``GET /metrics`` serves vLLM's Prometheus metrics (same names, types and labels, written by
the prometheus-client package as vLLM does): request queue/prefill/decode time, server TTFT and e2e latency
histograms, ``vllm:num_requests_running``/``waiting``, ``vllm:kv_cache_usage_perc`` (tokens held by running
requests over ``kv_capacity_tokens``; ``vllm:gpu_cache_usage_perc`` with ``legacy_kv_metric``), and
``vllm:num_preemptions_total`` (one per ``preempt_every``-th request). ``metrics=False`` answers 404 there.

Use :func:`scripted_server` (a context manager) in process (background thread with its own event loop) or
``in_subprocess=True`` (so the server does not share the client's CPU time slice or event loop). This file
imports nothing from the project, so it also runs as a script::

    python tests/support/scripted_server.py --ttft-ms 50 --itl-ms 20   # prints "PORT <n>" then serves
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Script", "ServerHandle", "scripted_server", "make_app", "serve_forever"]


@dataclass(frozen=True)
class Script:
    """How the server answers. Delays in seconds; ``error_after_tokens=None`` streams to the end."""

    ttft_s: float = 0.01
    itl_s: float = 0.002
    tokens_per_chunk: int = 1
    usage_per_chunk: bool = True
    error_after_tokens: int | None = None
    http_status: int | None = None
    stall: bool = False
    model: str = "scripted-model"
    ping_comment: bool = True
    stall_after_tokens: int | None = None
    truncate_after_tokens: int | None = None
    omit_done: bool = False
    usage_factor: float = 1.0
    version: str | None = "0.32.0"
    max_model_len: int | None = None
    root: str | None = None
    api_key: str | None = None
    required_header: tuple[str, str] | None = None
    not_openai: bool = False
    prompt_tokens_per_word: float = 1.0
    max_num_seqs: int | None = None
    metrics: bool = True
    legacy_kv_metric: bool = False
    kv_capacity_tokens: int = 65536
    preempt_every: int | None = None


@dataclass(frozen=True)
class ServerHandle:
    """A running server: ``endpoint`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""

    port: int
    script: Script

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


#: vLLM's bucket bounds for request-time histograms (seconds), a subset of ``request_latency_buckets``.
_TIME_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0)


class _VllmMetrics:
    """The subset of vLLM's ``/metrics`` (v1 engine, ``vllm/v1/metrics/loggers.py``) this server keeps."""

    def __init__(self, script: Script) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.values = [script.model, "0"]

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, labels, buckets=_TIME_BUCKETS_S, registry=self.registry)

        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", labels,
                             registry=self.registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels,
                             registry=self.registry)
        kv_name = "vllm:gpu_cache_usage_perc" if script.legacy_kv_metric else "vllm:kv_cache_usage_perc"
        self.kv = Gauge(kv_name, "KV-cache usage. 1 means 100 percent usage.", labels, registry=self.registry)
        self.preemptions = Counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", labels,
                                   registry=self.registry)
        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.")
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.")
        self.queue = hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.")
        self.prefill = hist("vllm:request_prefill_time_seconds",
                            "Histogram of time spent in PREFILL phase for request.")
        self.decode = hist("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.")
        for metric in (self.running, self.waiting, self.kv, self.preemptions, self.ttft, self.e2e, self.queue,
                       self.prefill, self.decode):
            metric.labels(*self.values)
        self.kv_tokens = 0
        self.capacity = max(1, script.kv_capacity_tokens)

    def hold_kv(self, n_tokens: int) -> None:
        self.kv_tokens += n_tokens
        self.kv.labels(*self.values).set(min(1.0, self.kv_tokens / self.capacity))

    def page(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def make_app(script: Script) -> web.Application:
    """The aiohttp application answering ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``."""

    prom = _VllmMetrics(script) if script.metrics else None
    slots = asyncio.Semaphore(script.max_num_seqs) if script.max_num_seqs else None
    served = [0]

    def refused(request: web.Request) -> web.Response | None:
        if script.api_key is not None and request.headers.get("Authorization") != f"Bearer {script.api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        if script.required_header is not None:
            name, value = script.required_header
            if request.headers.get(name) != value:
                return web.json_response({"error": f"missing header {name}"}, status=401)
        return None

    async def models(request: web.Request) -> web.Response:
        if script.not_openai:
            return web.Response(text="<html><body>It works!</body></html>", content_type="text/html")
        denied = refused(request)
        if denied is not None:
            return denied
        card = {"id": script.model, "object": "model", "owned_by": "vllm", "root": script.root or script.model,
                "max_model_len": script.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(_request: web.Request) -> web.Response:
        if script.version is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response({"version": script.version})

    async def metrics(_request: web.Request) -> web.Response:
        if prom is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.Response(body=prom.page(), content_type="text/plain", charset="utf-8")

    def usage(n_prompt: int, n_sent: int) -> dict:
        reported = int(round(n_sent * script.usage_factor))
        return {"prompt_tokens": n_prompt, "completion_tokens": reported, "total_tokens": n_prompt + reported}

    async def complete(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t_receipt = loop.time()
        denied = refused(request)
        if denied is not None:
            return denied
        body = await request.json()
        if script.stall:
            await asyncio.sleep(3600)
        if script.http_status is not None:
            return web.Response(status=script.http_status, text=f"scripted failure for model {body.get('model')}")
        if body.get("model") != script.model:
            return web.json_response({"error": {"message": f"model {body.get('model')!r} not found"}}, status=404)
        chat = request.path.endswith("/chat/completions")
        n_out = int(body.get("max_tokens") or 16)
        prompt = body.get("prompt") if not chat else body["messages"][-1]["content"]
        n_prompt = int(round(len(str(prompt).split()) * script.prompt_tokens_per_word))
        if script.max_model_len is not None and n_prompt + n_out > script.max_model_len:
            return web.json_response({"object": "error", "type": "BadRequestError", "code": 400, "message": (
                f"This model's maximum context length is {script.max_model_len} tokens. However, you requested "
                f"{n_prompt + n_out} tokens ({n_prompt} in the messages, {n_out} in the completion).")}, status=400)
        if slots is None and prom is None:
            return await stream(request, body, chat, n_prompt, n_out, t_receipt)
        labels = prom.values if prom is not None else []
        if prom is not None:
            prom.waiting.labels(*labels).inc()
        try:
            if slots is not None:
                await slots.acquire()
        finally:
            if prom is not None:
                prom.waiting.labels(*labels).dec()
        t_admit = loop.time()
        served[0] += 1
        if prom is not None:
            prom.queue.labels(*labels).observe(t_admit - t_receipt)
            prom.running.labels(*labels).inc()
            prom.hold_kv(n_prompt + n_out)
            if script.preempt_every and served[0] % script.preempt_every == 0:
                prom.preemptions.labels(*labels).inc()
        try:
            return await stream(request, body, chat, n_prompt, n_out, t_admit,
                                on_first=(lambda t: prom.ttft.labels(*labels).observe(t - t_receipt)
                                          if prom is not None else None))
        finally:
            t_end = loop.time()
            if slots is not None:
                slots.release()
            if prom is not None:
                prom.running.labels(*labels).dec()
                prom.hold_kv(-(n_prompt + n_out))
                prom.prefill.labels(*labels).observe(min(script.ttft_s, t_end - t_admit))
                prom.decode.labels(*labels).observe(max(0.0, t_end - t_admit - script.ttft_s))
                prom.e2e.labels(*labels).observe(t_end - t_receipt)

    async def stream(request: web.Request, body: dict, chat: bool, n_prompt: int, n_out: int, t_start: float,
                     on_first: object = None) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if script.truncate_after_tokens is not None:
            n_out = min(n_out, script.truncate_after_tokens)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if script.ping_comment:
            await resp.write(b": scripted-server ping\n\n")
        sent, j = 0, 0
        per = max(1, script.tokens_per_chunk)
        while sent < n_out:
            target = t_start + script.ttft_s + j * per * script.itl_s
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if script.stall_after_tokens is not None and sent >= script.stall_after_tokens:
                await asyncio.sleep(3600)  # silent, connection open
            if script.error_after_tokens is not None and sent >= script.error_after_tokens:
                await resp.write(_sse({"error": {"object": "error", "message": "scripted mid-stream error",
                                                 "code": 500}}))
                await resp.write(b"data: [DONE]\n\n")
                return resp
            k = min(per, n_out - sent)
            sent += k
            text = " ".join(f"t{100 + (sent - k + i) % 1000}" for i in range(k))
            choice = ({"index": 0, "delta": {"content": text}, "finish_reason": None} if chat
                      else {"index": 0, "text": text, "finish_reason": None})
            chunk: dict = {"id": "cmpl-scripted", "object": "text_completion", "model": script.model,
                           "choices": [choice]}
            if script.usage_per_chunk:
                chunk["usage"] = usage(n_prompt, sent)
            if j == 0 and callable(on_first):
                on_first(loop.time())  # before the write: the client cannot have read it yet
            await resp.write(_sse(chunk))
            j += 1
        await resp.write(_sse({"id": "cmpl-scripted", "choices": [], "usage": usage(n_prompt, sent)}))
        if not script.omit_done:
            await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/chat/completions", complete)
    return app


async def _start(script: Script, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(script), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
    await site.start()
    return runner, runner.addresses[0][1]


@contextlib.contextmanager
def _thread_server(script: Script) -> Iterator[ServerHandle]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["runner"], box["port"] = loop.run_until_complete(_start(script))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        started.set()
        if "error" not in box:
            loop.run_forever()
            loop.run_until_complete(box["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="scripted-server", daemon=True)
    thread.start()
    started.wait(10)
    if "error" in box:
        raise RuntimeError(f"scripted server failed to start: {box['error']}")
    try:
        yield ServerHandle(box["port"], script)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _script_args(script: Script) -> list[str]:
    args = ["--ttft-ms", str(script.ttft_s * 1000), "--itl-ms", str(script.itl_s * 1000),
            "--tokens-per-chunk", str(script.tokens_per_chunk), "--model", script.model]
    if not script.usage_per_chunk:
        args.append("--no-usage-per-chunk")
    if script.error_after_tokens is not None:
        args += ["--error-after-tokens", str(script.error_after_tokens)]
    if script.http_status is not None:
        args += ["--http-status", str(script.http_status)]
    if script.stall:
        args.append("--stall")
    if not script.ping_comment:
        args.append("--no-ping")
    if script.stall_after_tokens is not None:
        args += ["--stall-after-tokens", str(script.stall_after_tokens)]
    if script.truncate_after_tokens is not None:
        args += ["--truncate-after-tokens", str(script.truncate_after_tokens)]
    if script.omit_done:
        args.append("--omit-done")
    if script.usage_factor != 1.0:
        args += ["--usage-factor", str(script.usage_factor)]
    args += ["--version", script.version] if script.version is not None else ["--no-version"]
    for flag, value in (("--max-model-len", script.max_model_len), ("--root", script.root),
                        ("--api-key", script.api_key), ("--max-num-seqs", script.max_num_seqs),
                        ("--preempt-every", script.preempt_every)):
        if value is not None:
            args += [flag, str(value)]
    if script.required_header is not None:
        args += ["--required-header", "=".join(script.required_header)]
    if script.prompt_tokens_per_word != 1.0:
        args += ["--prompt-tokens-per-word", str(script.prompt_tokens_per_word)]
    if script.kv_capacity_tokens != Script.kv_capacity_tokens:
        args += ["--kv-capacity-tokens", str(script.kv_capacity_tokens)]
    args += [flag for flag, on in (("--not-openai", script.not_openai), ("--no-metrics", not script.metrics),
                                   ("--legacy-kv-metric", script.legacy_kv_metric)) if on]
    return args


@contextlib.contextmanager
def _subprocess_server(script: Script) -> Iterator[ServerHandle]:
    proc = subprocess.Popen([sys.executable, __file__, *_script_args(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"scripted server subprocess did not start (said {line!r})")
        yield ServerHandle(int(line.split()[1]), script)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scripted_server(script: Script | None = None, *, in_subprocess: bool = False,
                    **overrides: object) -> contextlib.AbstractContextManager[ServerHandle]:
    """Start a scripted server on 127.0.0.1 (free port) for the ``with`` block; ``overrides`` replace fields."""
    script = dataclasses.replace(script or Script(), **overrides)  # type: ignore[arg-type]
    return _subprocess_server(script) if in_subprocess else _thread_server(script)


def serve_forever(script: Script) -> None:
    """Serve until killed, printing ``PORT <n>`` on stdout once listening."""
    async def amain() -> None:
        runner, port = await _start(script)
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain())


def _parse(argv: list[str] | None) -> Script:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ttft-ms", type=float, default=10.0)
    p.add_argument("--itl-ms", type=float, default=2.0)
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    p.add_argument("--no-usage-per-chunk", action="store_true")
    p.add_argument("--error-after-tokens", type=int, default=None)
    p.add_argument("--http-status", type=int, default=None)
    p.add_argument("--stall", action="store_true")
    p.add_argument("--model", default="scripted-model")
    p.add_argument("--no-ping", action="store_true", help="send no ':' comment before the first chunk")
    p.add_argument("--stall-after-tokens", type=int, default=None)
    p.add_argument("--truncate-after-tokens", type=int, default=None)
    p.add_argument("--omit-done", action="store_true")
    p.add_argument("--usage-factor", type=float, default=1.0)
    p.add_argument("--version", default="0.32.0")
    p.add_argument("--no-version", action="store_true", help="answer 404 at /version")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--required-header", default=None, metavar="NAME=VALUE")
    p.add_argument("--not-openai", action="store_true")
    p.add_argument("--prompt-tokens-per-word", type=float, default=1.0)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--no-metrics", action="store_true")
    p.add_argument("--legacy-kv-metric", action="store_true")
    p.add_argument("--kv-capacity-tokens", type=int, default=65536)
    p.add_argument("--preempt-every", type=int, default=None)
    a = p.parse_args(argv)
    header = tuple(a.required_header.split("=", 1)) if a.required_header else None
    return Script(ttft_s=a.ttft_ms / 1000, itl_s=a.itl_ms / 1000, tokens_per_chunk=a.tokens_per_chunk,
                  usage_per_chunk=not a.no_usage_per_chunk, error_after_tokens=a.error_after_tokens,
                  http_status=a.http_status, stall=a.stall, model=a.model,
                  ping_comment=not a.no_ping, stall_after_tokens=a.stall_after_tokens,
                  truncate_after_tokens=a.truncate_after_tokens, omit_done=a.omit_done,
                  usage_factor=a.usage_factor, version=None if a.no_version else a.version,
                  max_model_len=a.max_model_len, root=a.root, api_key=a.api_key,
                  required_header=header, not_openai=a.not_openai,  # type: ignore[arg-type]
                  prompt_tokens_per_word=a.prompt_tokens_per_word, max_num_seqs=a.max_num_seqs,
                  metrics=not a.no_metrics, legacy_kv_metric=a.legacy_kv_metric,
                  kv_capacity_tokens=a.kv_capacity_tokens, preempt_every=a.preempt_every)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve_forever(_parse(None))
