"""Endpoint mode: the fingerprint comes from the server and a hardware label (never the client machine),
credentials come from the environment and are never recorded, Hugging Face names are served names, and the
ways an endpoint can be wrong give one-line errors."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest

from pytest_llmperf.engine.external import ExternalEngine, backend_from_label, parse_hardware_label
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EndpointUnreachable, UsageError
from pytest_llmperf.load.auth import auth_headers, redact
from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.workload import Workload
from pytest_llmperf.storage.fingerprint import collect_cpu_facts, slug
from tests.support.scripted_server import scripted_server

HF_NAME = "Qwen/Qwen2.5-0.5B-Instruct"
SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("LLMPERF_API_KEY", "LLMPERF_HEADERS", "LLMPERF_ENDPOINT_HARDWARE"):
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fingerprint_comes_from_the_server_and_the_label():
    with scripted_server(version="0.99.1", max_model_len=4096, model=HF_NAME) as srv:
        eng = ExternalEngine(EngineSpec(), srv.endpoint, HF_NAME, hardware="2xH100-nvlink")
    fp = eng.fingerprint("gpu", "bfloat16")
    assert (fp.engine, fp.engine_version, fp.model) == ("endpoint-vllm", "0.99.1", HF_NAME)
    assert (fp.gpu_count, fp.gpu_model, fp.interconnect) == (2, "H100", "nvlink")
    assert fp.cpu_model is None and fp.cpu_cores is None
    assert fp.extra == {"endpoint_hardware": "2xH100-nvlink", "max_model_len": 4096}
    hw_id = fp.hardware_id()
    assert hw_id.startswith("gpu-2xh100-nvlink") and "vllm-0.99.1" in hw_id
    client_cpu = slug(str(collect_cpu_facts()["cpu_model"]), hardware=True)
    assert client_cpu not in hw_id  # nothing from the machine running the client
    assert eng.engine_version() == "vllm 0.99.1"
    assert eng.engine_facts()["max_model_len"] == 4096
    assert eng.metrics_url == srv.metrics_url


def test_label_from_environment_and_unlabelled_default(monkeypatch):
    with scripted_server(version=None) as srv:
        plain = ExternalEngine(EngineSpec(), srv.endpoint)
        monkeypatch.setenv("LLMPERF_ENDPOINT_HARDWARE", "1xL4")
        labelled = ExternalEngine(EngineSpec(), srv.endpoint)
    assert plain.hardware == "unlabelled"
    fp = plain.fingerprint("gpu")
    assert (fp.engine, fp.engine_version) == ("endpoint-openai-compatible", "unknown")  # no /version: not vLLM
    assert plain.engine_version() == "unknown"
    assert labelled.fingerprint("gpu").gpu_model == "L4"
    assert labelled.fingerprint("cpu").cpu_model == "1xL4"
    assert plain.fingerprint("gpu").hardware_id() != labelled.fingerprint("gpu").hardware_id()


@pytest.mark.parametrize(("label", "backend", "expected"), [
    ("8xH200-nvlink", "gpu", {"gpu_model": "H200", "gpu_count": 8, "interconnect": "nvlink"}),
    ("2x A100-pcie", "gpu", {"gpu_model": "A100", "gpu_count": 2, "interconnect": "pcie"}),
    ("1xH100-nvlink", "gpu", {"gpu_model": "H100", "gpu_count": 1, "interconnect": "none"}),
    ("MI300X box", "gpu", {"gpu_model": "MI300X box", "gpu_count": 1}),
    ("Xeon 8488C", "cpu", {"cpu_model": "Xeon 8488C"}),
])
def test_parse_hardware_label(label, backend, expected):
    assert parse_hardware_label(label, backend) == expected


def test_backend_from_label():
    assert backend_from_label("2xH100-nvlink") == "gpu"
    assert backend_from_label("CPU Xeon 8488C") == "cpu"
    assert backend_from_label("unlabelled") is None and backend_from_label(None) is None


def test_hugging_face_name_resolves_by_id_or_root():
    with scripted_server(model="qwen-small", root=HF_NAME) as srv:
        eng = ExternalEngine(EngineSpec(), srv.endpoint, HF_NAME)
        assert eng.served_model_name == "qwen-small"  # served under an alias of the HF checkpoint
        with pytest.raises(UsageError, match=r"model 'org/other' is not served at .*; it serves: qwen-small"):
            ExternalEngine(EngineSpec(), srv.endpoint, "org/other")


def test_unreachable_not_openai_and_bad_url_are_one_line_errors():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(EndpointUnreachable, match=f"nothing answers at {url}/models") as exc:
        ExternalEngine(EngineSpec(), url)
    assert "\n" not in str(exc.value)
    with scripted_server(not_openai=True) as srv:
        with pytest.raises(EndpointUnreachable, match="is not an OpenAI-compatible endpoint"):
            ExternalEngine(EngineSpec(), srv.endpoint)
        with pytest.raises(EndpointUnreachable, match="is not an OpenAI-compatible endpoint"):
            run_load(srv.endpoint, "scripted-model", Workload(num_requests=1))
    for bad in ("http://127.0.0.1:8000", "127.0.0.1:8000/v1"):
        with pytest.raises(UsageError, match="OpenAI base URL"):
            ExternalEngine(EngineSpec(), bad)


def test_api_key_from_environment_never_recorded(monkeypatch):
    with scripted_server(api_key=SECRET, ttft_s=0.002, itl_s=0.001) as srv:
        with pytest.raises(EndpointUnreachable, match="wants credentials; set LLMPERF_API_KEY"):
            ExternalEngine(EngineSpec(), srv.endpoint)
        with pytest.raises(EndpointUnreachable, match="wants credentials"):
            run_load(srv.endpoint, srv.script.model, Workload(num_requests=1))
        monkeypatch.setenv("LLMPERF_API_KEY", SECRET)
        eng = ExternalEngine(EngineSpec(), srv.endpoint, hardware="1xH100")
        workload = Workload(num_requests=3, output_len=4, concurrency=2)
        run = run_load(srv.endpoint, srv.script.model, workload, chat=True)
        assert eng.alive()
    assert run.failed == 0
    recorded = json.dumps([dataclasses.asdict(r) for r in run.records]) + json.dumps(workload.to_dict()) \
        + json.dumps(eng.fingerprint("gpu").to_dict()) + json.dumps(eng.engine_facts()) + repr(eng.info)
    assert SECRET not in recorded


def test_extra_headers_from_environment(monkeypatch):
    with scripted_server(required_header=("X-Team", "perf"), ttft_s=0.002, itl_s=0.001) as srv:
        monkeypatch.setenv("LLMPERF_HEADERS", "X-Team: perf; X-Other: 1")
        run = run_load(srv.endpoint, srv.script.model, Workload(num_requests=2, output_len=4))
        assert run.failed == 0
        monkeypatch.setenv("LLMPERF_HEADERS", '{"X-Team": "wrong"}')
        with pytest.raises(EndpointUnreachable, match="HTTP 401"):
            run_load(srv.endpoint, srv.script.model, Workload(num_requests=1))


def test_auth_header_parsing_and_redaction():
    env = {"LLMPERF_API_KEY": SECRET, "LLMPERF_HEADERS": "X-A: 1\nX-B: two words"}
    headers = auth_headers(env)
    assert headers == {"Authorization": f"Bearer {SECRET}", "X-A": "1", "X-B": "two words"}
    assert auth_headers({}) == {}
    assert auth_headers({"LLMPERF_HEADERS": '{"Authorization": "Token abc"}', "LLMPERF_API_KEY": "k"}) == \
        {"Authorization": "Token abc"}
    with pytest.raises(UsageError, match="entry 2 is not a 'Name: value' pair") as exc:
        auth_headers({"LLMPERF_HEADERS": "X-A: 1; no-colon-secretvalue"})
    assert "secretvalue" not in str(exc.value)  # a malformed entry may be a secret: never echoed
    with pytest.raises(UsageError, match="is not a valid JSON object"):
        auth_headers({"LLMPERF_HEADERS": "{bad"})
    assert redact(f"GET failed with Bearer {SECRET}", headers) == "GET failed with ***"


def test_subprocess_scripted_server_carries_the_endpoint_knobs(monkeypatch):
    monkeypatch.setenv("LLMPERF_API_KEY", SECRET)
    with scripted_server(in_subprocess=True, model=HF_NAME, api_key=SECRET, version="0.31.1", max_model_len=1024,
                         max_num_seqs=2, legacy_kv_metric=True, required_header=("X-Team", "perf")) as srv:
        monkeypatch.setenv("LLMPERF_HEADERS", "X-Team: perf")
        eng = ExternalEngine(EngineSpec(), srv.endpoint, HF_NAME, hardware="4xA100-pcie")
        from pytest_llmperf.telemetry.server_metrics import scrape

        snap = scrape(srv.metrics_url)
    assert eng.engine_version() == "vllm 0.31.1" and eng.max_model_len == 1024
    assert "vllm:gpu_cache_usage_perc" in snap.gauges
    assert eng.fingerprint("gpu").interconnect == "pcie"
