"""Credentials for an endpoint, from the environment only; never stored in results, baselines or logs.

``LLMPERF_API_KEY`` becomes ``Authorization: Bearer <key>`` (what vLLM's ``--api-key`` and hosted OpenAI-compatible
services check). ``LLMPERF_HEADERS`` adds headers, either a JSON object (``{"X-Team": "perf"}``) or
``Name: value`` pairs separated by newlines or ``;`` (``X-Team: perf; X-Route: gpu-a``). A header in
``LLMPERF_HEADERS`` wins over the API key's ``Authorization``. :func:`redact` removes the values from a text
before it is shown (error messages that echo a request).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pytest_llmperf.errors import UsageError

__all__ = ["API_KEY_ENV", "HEADERS_ENV", "auth_headers", "redact"]

#: Environment variable holding the API key (sent as a bearer token).
API_KEY_ENV = "LLMPERF_API_KEY"
#: Environment variable holding extra request headers.
HEADERS_ENV = "LLMPERF_HEADERS"


def _parse_headers(text: str) -> dict[str, str]:
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{HEADERS_ENV} is not a valid JSON object: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, (str, int, float)) for v in data.values()):
            raise UsageError(f"{HEADERS_ENV} must be a JSON object of header names to string values")
        return {str(k): str(v) for k, v in data.items()}
    out: dict[str, str] = {}
    for k, part in enumerate((p for p in text.replace(";", "\n").splitlines() if p.strip()), start=1):
        name, sep, value = part.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            # nothing of the entry is echoed: it may be a secret
            raise UsageError(f"{HEADERS_ENV}: entry {k} is not a 'Name: value' pair (pairs are separated by ';' "
                             f"or newlines)")
        out[name.strip()] = value.strip()
    return out


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers every request to the endpoint carries (empty when neither variable is set)."""
    env = os.environ if environ is None else environ
    headers: dict[str, str] = {}
    key = (env.get(API_KEY_ENV) or "").strip()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    headers.update(_parse_headers(env.get(HEADERS_ENV) or ""))
    return headers


def redact(text: str, headers: Mapping[str, str]) -> str:
    """``text`` with every header value (and a bearer token's key on its own) replaced by ``***``."""
    secrets = set()
    for value in headers.values():
        secrets.add(value)
        if value.startswith("Bearer "):
            secrets.add(value[len("Bearer "):])
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
