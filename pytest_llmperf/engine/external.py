"""ExternalEngine: an OpenAI-compatible server that is already running (vLLM, SGLang, ...), used in place
of a started engine when ``--llmperf-endpoint URL`` is given. Same interface as VLLMServer for the fixtures.

What was measured is described by the *server*, never by the client machine (a CPU-only CI runner driving a GPU
box): :meth:`ExternalEngine.fingerprint` takes the engine and its version from vLLM's ``GET /version``, the model
and its ``max_model_len`` from ``GET /v1/models``, and the hardware behind the endpoint from a label the user
gives (``--llmperf-endpoint-hardware 2xH100-nvlink``, or the ``LLMPERF_ENDPOINT_HARDWARE`` variable): nothing
on the client can know it. A server without ``/version`` (not vLLM) is recorded as engine ``openai-compatible``,
version ``unknown``. Credentials come from the environment (:mod:`pytest_llmperf.load.auth`) and are never
stored. The model may be a Hugging Face name (``org/name``): in endpoint mode it is only a served model name,
matched against the ids (and ``root``) the server lists; nothing is looked up on disk.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING

from pytest_llmperf.errors import EndpointUnreachable, EngineDiedError, UsageError
from pytest_llmperf.load.auth import auth_headers, redact
from pytest_llmperf.storage.fingerprint import Fingerprint

if TYPE_CHECKING:
    from pytest_llmperf.engine.spec import EngineSpec

__all__ = ["ExternalEngine", "ServerInfo", "probe_server", "parse_hardware_label", "backend_from_label",
           "HARDWARE_ENV", "UNLABELLED_HARDWARE"]

#: Environment variable naming the hardware behind the endpoint (when the option is not given).
HARDWARE_ENV = "LLMPERF_ENDPOINT_HARDWARE"
#: The hardware label of an endpoint nobody labelled (baselines then only compare with other unlabelled runs).
UNLABELLED_HARDWARE = "unlabelled"

_LABEL = re.compile(r"^(?P<count>\d+)\s*x\s*(?P<model>.+?)(?:-(?P<link>nvlink|pcie))?$", re.IGNORECASE)


@dataclass(frozen=True)
class _ExternalPlan:
    served_model_name: str
    enforce_eager: bool | None
    model_paths: object


@dataclass(frozen=True)
class _Paths:
    vocab_size: int | None
    max_position_embeddings: int | None = None


@dataclass(frozen=True)
class ServerInfo:
    """What the server says about itself. ``engine`` is ``vllm`` when ``/version`` answered, else
    ``openai-compatible``; ``models`` are the served ids with their model cards."""

    engine: str
    engine_version: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def card(self, model: str) -> dict[str, Any]:
        return self.models.get(model, {})


def _get_json(url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, Any]:
    """(HTTP status, parsed JSON or None). Raises EndpointUnreachable when nothing answers."""
    req = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointUnreachable(redact(f"nothing answers at {url}: {reason}", headers)) from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def probe_server(endpoint: str, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0) -> ServerInfo:
    """Ask ``{endpoint}/models`` and ``{base}/version``; one-line errors for the ways this goes wrong."""
    headers = auth_headers() if headers is None else headers
    url = f"{endpoint}/models"
    status, data = _get_json(url, headers, timeout_s)
    if status in (401, 403):
        raise EndpointUnreachable(f"{url} answered HTTP {status}: the endpoint wants credentials; set "
                                  f"LLMPERF_API_KEY (sent as a bearer token) or LLMPERF_HEADERS")
    if status != 200:
        raise EndpointUnreachable(f"{url} answered HTTP {status}; is {endpoint!r} the OpenAI base URL "
                                  f"(http://HOST:PORT/v1)?")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EndpointUnreachable(f"{url} did not answer an OpenAI model list (JSON with 'data'): {endpoint} is not "
                                  f"an OpenAI-compatible endpoint")
    models = {str(m["id"]): m for m in data["data"] if isinstance(m, dict) and m.get("id")}
    base = endpoint[: -len("/v1")]
    v_status, v_data = _get_json(f"{base}/version", headers, timeout_s)
    if v_status == 200 and isinstance(v_data, dict) and isinstance(v_data.get("version"), str):
        return ServerInfo("vllm", v_data["version"], models)
    return ServerInfo("openai-compatible", "unknown", models)


def parse_hardware_label(label: str, backend: str) -> dict[str, Any]:
    """Fingerprint hardware fields from a label. ``2xH100-nvlink`` -> 2 GPUs, model ``H100``, interconnect
    ``nvlink``; any other label is the GPU (``backend='gpu'``) or CPU model as given."""
    label = label.strip()
    if not label:
        raise UsageError("the endpoint hardware label is empty; give e.g. --llmperf-endpoint-hardware 2xH100-nvlink")
    if backend == "cpu":
        return {"cpu_model": label}
    m = _LABEL.match(label)
    if m is None:
        return {"gpu_model": label, "gpu_count": 1}
    count = int(m["count"])
    if count < 1:
        raise UsageError(f"endpoint hardware label {label!r}: the GPU count must be >= 1")
    link = (m["link"] or "none").lower() if count > 1 else "none"
    return {"gpu_model": m["model"], "gpu_count": count, "interconnect": link}


def backend_from_label(label: str | None) -> str | None:
    """The backend a hardware label implies, for the gate's defaults (gated metrics, tolerance) with
    ``--llmperf-backend auto``: ``cpu`` for a label starting with ``cpu`` (``cpu-xeon-8488c``), ``gpu`` for any other
    label, ``None`` when unlabelled (the caller keeps its own default)."""
    if not label or label.strip() == UNLABELLED_HARDWARE:
        return None
    return "cpu" if label.strip().lower().startswith("cpu") else "gpu"


class ExternalEngine:
    """A running server at ``endpoint`` (``http://HOST:PORT/v1``); never started or stopped by us.

    ``hardware`` labels the machine behind it (default: ``$LLMPERF_ENDPOINT_HARDWARE``, else ``unlabelled``);
    ``headers`` go with every probe (default: from ``LLMPERF_API_KEY`` / ``LLMPERF_HEADERS``).
    """

    def __init__(self, spec: EngineSpec, endpoint: str, model: str | None = None, vocab_size: int | None = None,
                 timeout_s: float = 5.0, *, hardware: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.endpoint = endpoint.rstrip("/")
        if not self.endpoint.startswith(("http://", "https://")) or not self.endpoint.endswith("/v1"):
            raise UsageError(f"--llmperf-endpoint must be an OpenAI base URL like http://HOST:PORT/v1, "
                             f"got {endpoint!r}")
        self.url = self.endpoint[: -len("/v1")]
        self.startup_s: float | None = None
        self.headers = dict(auth_headers() if headers is None else headers)
        self.hardware = (hardware or os.environ.get(HARDWARE_ENV) or UNLABELLED_HARDWARE).strip()
        self.info = probe_server(self.endpoint, self.headers, timeout_s)
        served = list(self.info.models)
        if model is None:
            if not served:
                raise UsageError(f"{self.endpoint}/models lists no model; pass --llmperf-model NAME")
            model = served[0]
        elif model not in served:
            by_root = [mid for mid, card in self.info.models.items() if card.get("root") == model]
            if len(by_root) != 1:
                raise UsageError(f"model {model!r} is not served at {self.endpoint}; it serves: "
                                 f"{', '.join(served) or '(none)'}")
            model = by_root[0]
        card = self.info.card(model)
        max_len = card.get("max_model_len")
        self.max_model_len: int | None = int(max_len) if isinstance(max_len, int) and max_len > 0 else None
        self.plan = _ExternalPlan(model, None, _Paths(vocab_size, self.max_model_len))

    @property
    def served_model_name(self) -> str:
        return self.plan.served_model_name

    @property
    def metrics_url(self) -> str:
        """Where vLLM serves its Prometheus metrics (``GET /metrics``, beside ``/v1``)."""
        return f"{self.url}/metrics"

    def engine_version(self) -> str:
        """``vllm 0.32.0`` from the server's ``/version``; ``unknown`` for a server without one."""
        return f"{self.info.engine} {self.info.engine_version}" if self.info.engine == "vllm" else "unknown"

    def engine_facts(self) -> dict[str, Any]:
        """Keys of the engine dict that only the server knows (read by the bench; no credentials)."""
        return {"enforce_eager": None, "engine_version": self.engine_version(), "endpoint_hardware": self.hardware,
                "served_model": self.served_model_name, "max_model_len": self.max_model_len,
                "model_root": self.info.card(self.served_model_name).get("root")}

    def fingerprint(self, backend: str, dtype: str | None = None) -> Fingerprint:
        """The fingerprint of what is measured: the server's engine, version and model, and the hardware label.
        No fact of the client machine enters it. ``backend`` (``gpu``/``cpu``) is what the user says is behind
        the endpoint."""
        if backend not in ("cpu", "gpu"):
            raise UsageError(f"endpoint backend must be 'cpu' or 'gpu', got {backend!r}")
        hw = parse_hardware_label(self.hardware, backend)
        extra: dict[str, Any] = {"endpoint_hardware": self.hardware}
        if self.max_model_len is not None:
            extra["max_model_len"] = self.max_model_len
        return Fingerprint(backend=backend, engine=f"endpoint-{self.info.engine}",
                           engine_version=self.info.engine_version, model=self.served_model_name, dtype=dtype,
                           cpu_model=hw.get("cpu_model"), cpu_cores=None, gpu_model=hw.get("gpu_model"),
                           gpu_count=int(hw.get("gpu_count", 0)), interconnect=hw.get("interconnect", "none"),
                           extra=extra)

    def alive(self) -> bool:
        try:
            probe_server(self.endpoint, self.headers, 2.0)
        except (EndpointUnreachable, UsageError):
            return False
        return True

    def check_alive(self) -> None:
        if not self.alive():
            raise EngineDiedError(f"the external engine at {self.endpoint} stopped answering")

    def stop(self) -> None:
        """Not ours to stop."""
