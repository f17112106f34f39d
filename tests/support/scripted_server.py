"""A scripted OpenAI-compatible SSE server: a measuring instrument for the load client.

It streams ``max_tokens`` tokens for every completion request with a known first-token delay and
inter-token delay, on an absolute schedule (no drift): chunk ``j`` carrying ``tokens_per_chunk`` tokens is
written at ``receipt + ttft_s + j * tokens_per_chunk * itl_s``. Every chunk carries running
``usage.completion_tokens`` (unless ``usage_per_chunk=False``); a ``:`` comment precedes the first chunk
(unless ``ping_comment=False``: vLLM's bench client drops the first event after a comment),
and a usage-only chunk and ``data: [DONE]`` end the stream. Failure modes: ``http_status`` (answer that
status with a text body), ``error_after_tokens`` (a mid-stream ``error`` object), ``stall`` (never answer).

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


@dataclass(frozen=True)
class ServerHandle:
    """A running server: ``endpoint`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""

    port: int
    script: Script

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def make_app(script: Script) -> web.Application:
    """The aiohttp application answering ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``."""

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": script.model, "object": "model"}]})

    async def complete(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t_receipt = loop.time()
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
        n_prompt = len(str(prompt).split())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if script.ping_comment:
            await resp.write(b": scripted-server ping\n\n")
        sent, j = 0, 0
        per = max(1, script.tokens_per_chunk)
        while sent < n_out:
            target = t_receipt + script.ttft_s + j * per * script.itl_s
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
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
                chunk["usage"] = {"prompt_tokens": n_prompt, "completion_tokens": sent,
                                  "total_tokens": n_prompt + sent}
            await resp.write(_sse(chunk))
            j += 1
        await resp.write(_sse({"id": "cmpl-scripted", "choices": [], "usage": {
            "prompt_tokens": n_prompt, "completion_tokens": sent, "total_tokens": n_prompt + sent}}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
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
    a = p.parse_args(argv)
    return Script(ttft_s=a.ttft_ms / 1000, itl_s=a.itl_ms / 1000, tokens_per_chunk=a.tokens_per_chunk,
                  usage_per_chunk=not a.no_usage_per_chunk, error_after_tokens=a.error_after_tokens,
                  http_status=a.http_status, stall=a.stall, model=a.model,
                  ping_comment=not a.no_ping)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve_forever(_parse(None))
