"""A stand-in for a vLLM engine's process tree, as hostile to cleanup as the real one (issue 14).

The "API server" (this script) ignores SIGTERM (vLLM swallows the parent-death signal during initialisation),
starts two "workers" titled like vLLM's (``VLLM::Worker_TP0``, ``VLLM::Worker_TP1``: argv[0] set, as
``setproctitle`` would) that ignore SIGTERM and get no parent-death signal (EngineCore and the workers do not
notice the API server's death); ``Worker_TP1`` also leaves the process group (``setsid``). Only SIGKILL of
every process ends the tree. It writes every pid to ``--pids`` (JSON, atomically) as soon as the tree exists,
then after ``--startup-s`` serves ``GET /health`` (200) on ``--port`` until killed. With
``--worker-dies-after-s X`` worker TP1 logs a CUDA error and exits X seconds after startup while the API
server keeps answering ``/health`` with 200 and every completion with HTTP 500, as seen on 2 x H200.

Stdlib only; the workers are this same file with ``--worker``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def _log(title: str, msg: str) -> None:
    sys.stdout.write(f"({title} pid={os.getpid()}) {msg}\n")
    sys.stdout.flush()


def _worker(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.setsid:
        os.setsid()
    _log(args.title, "INFO worker ready")
    if args.dies_after_s is not None:
        time.sleep(args.dies_after_s)
        _log(args.title, "ERROR torch.AcceleratorError: CUDA error: an illegal memory access was encountered")
        _log(args.title, "ERROR worker exiting")
        os._exit(1)
    while True:
        time.sleep(3600)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = b"EngineDeadError: worker died"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _api_server(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    me = Path(__file__).resolve()
    workers = []
    for rank in (0, 1):
        title = f"VLLM::Worker_TP{rank}"
        cmd = [title, str(me), "--worker", "--title", f"Worker_TP{rank}", "--tag", args.tag]
        if rank == 1:
            cmd.append("--setsid")
            if args.worker_dies_after_s is not None:
                cmd += ["--dies-after-s", str(args.startup_s + args.worker_dies_after_s)]
        workers.append(subprocess.Popen(cmd, executable=sys.executable, stdin=subprocess.DEVNULL))
    tmp = Path(args.pids + ".tmp")
    tmp.write_text(json.dumps({"api_server": os.getpid(), "workers": [w.pid for w in workers]}))
    tmp.replace(args.pids)
    _log("APIServer", f"INFO starting (startup takes {args.startup_s} s)")
    time.sleep(args.startup_s)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _log("APIServer", "INFO Application startup complete.")
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--startup-s", type=float, default=0.0)
    p.add_argument("--pids", default="")
    p.add_argument("--worker-dies-after-s", type=float, default=None)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--title", default="Worker")
    p.add_argument("--setsid", action="store_true")
    p.add_argument("--dies-after-s", type=float, default=None)
    p.add_argument("--tag", default="", help="a marker in every process's command line (tests find them by it)")
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
    else:
        _api_server(args)


if __name__ == "__main__":
    main()
