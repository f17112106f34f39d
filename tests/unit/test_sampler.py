"""NvmlSampler, the NVML wrapper and the meters, against a replaying fake NVML (no GPU needed)."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pytest_llmperf.errors import UsageError
from pytest_llmperf.records import LoadWindow
from pytest_llmperf.telemetry import nvml as nvml_mod
from pytest_llmperf.telemetry.meter import EnergyMeter, NullMeter, NvmlMeter, make_meter
from pytest_llmperf.telemetry.sampler import NvmlSampler, PowerTrace, TelemetryWarning
from pytest_llmperf.telemetry.selfcheck import ReplayNvml, main

DATA = Path(__file__).resolve().parents[1] / "data"
PP_C32 = DATA / "nvml_h200x2_pp2_nop2p_eager_c32.csv"


class FakeClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def recorded() -> PowerTrace:
    return PowerTrace.from_csv(PP_C32)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(25.0)  # 25 s into the recording: under load


def make_sampler(recorded: PowerTrace, clock: FakeClock, **kw) -> tuple[NvmlSampler, ReplayNvml]:
    fake = ReplayNvml(recorded, clock=clock, fail=kw.pop("fail", None))
    clock.now = 25.0
    fake._start = 0.0
    sampler = NvmlSampler([0, 1], rate_hz=100, nvml=fake, clock=lambda: 1.7e9 + clock.now, **kw)
    sampler.open()
    return sampler, fake


def run_iterations(sampler: NvmlSampler, clock: FakeClock, n: int, dt: float = 0.01) -> PowerTrace:
    for _ in range(n):
        sampler.sample_once()
        clock.now += dt
    return sampler.stop()


def test_sample_once_records_every_field(recorded: PowerTrace, clock: FakeClock) -> None:
    sampler, _ = make_sampler(recorded, clock, slow_every=5)
    trace = run_iterations(sampler, clock, 300)
    assert len(trace) == 600 and trace.gpus == (0, 1)
    assert trace.power_source == {0: "instant", 1: "instant"}
    g0 = trace.for_gpu(0)
    assert np.all(np.diff(g0["t_unix_s"]) > 0)
    assert g0["power_w"].max() > 600  # a prefill spike within the 3 s replayed
    assert np.all(np.isfinite(g0["energy_j"])) and np.all(np.diff(g0["energy_j"]) >= 0)
    assert np.all(g0["sm_clock_mhz"] > 1000) and np.all(np.isfinite(g0["util_pct"]))
    assert np.all(g0["throttle_mask"] == 0) and np.all(g0["temp_c"] == 40)
    assert trace.notes == ()


def test_errors_mid_run_mark_fields_missing_and_warn_once(recorded: PowerTrace, clock: FakeClock) -> None:
    sampler, fake = make_sampler(recorded, clock)
    for _ in range(10):
        sampler.sample_once()
        clock.now += 0.01
    fake.fail["nvmlDeviceGetTotalEnergyConsumption"] = 999
    fake.fail["nvmlDeviceGetClockInfo"] = 3
    with pytest.warns(TelemetryWarning) as caught:
        trace = run_iterations(sampler, clock, 20)
    assert len(trace) == 60  # kept sampling
    messages = [str(w.message) for w in caught]
    assert sum("energy" in m for m in messages) == 2  # once per GPU, not once per iteration
    g0 = trace.for_gpu(0)
    assert np.all(np.isfinite(g0["energy_j"][:10])) and np.all(np.isnan(g0["energy_j"][10:]))
    assert np.all(np.isfinite(g0["power_w"]))
    report = sampler_report(trace)
    assert report.gpus[0].energy_source == "integral"
    assert any("reading energy failed" in m for m in report.missing)


def sampler_report(trace: PowerTrace):
    from pytest_llmperf.telemetry.power import analyze_power

    t = trace.t_unix_s
    return analyze_power(trace, LoadWindow(float(t.min()), float(t.max())), output_tokens=None)


def test_falls_back_to_average_power_and_marks_source(recorded: PowerTrace, clock: FakeClock) -> None:
    sampler, _ = make_sampler(recorded, clock, fail={"nvmlDeviceGetFieldValues": 13})
    with pytest.warns(TelemetryWarning, match="1-s average"):
        trace = run_iterations(sampler, clock, 50)
    assert trace.power_source == {0: "average", 1: "average"}
    g0 = trace.for_gpu(0)
    assert np.all(np.isfinite(g0["power_w"])) and np.array_equal(g0["power_w"], g0["power_avg_w"])
    assert g0["power_w"].max() < 450  # the 1-s average hides the spikes


def test_lost_gpu_stops_that_gpu_only(recorded: PowerTrace, clock: FakeClock) -> None:
    sampler, fake = make_sampler(recorded, clock)
    for _ in range(5):
        sampler.sample_once()
    original = fake.nvmlDeviceGetFieldValues

    def lose_gpu1(handle, ids):
        if handle == 1:
            raise fake.NVMLError(15)
        return original(handle, ids)

    fake.nvmlDeviceGetFieldValues = lose_gpu1
    with pytest.warns(TelemetryWarning, match="GPU 1: lost"):
        trace = run_iterations(sampler, clock, 10)
    assert len(trace.for_gpu(0)["t_unix_s"]) == 15
    assert len(trace.for_gpu(1)["t_unix_s"]) == 5


def test_thread_start_stop_idempotent_and_context_manager(recorded: PowerTrace) -> None:
    fake = ReplayNvml(recorded)
    sampler = NvmlSampler([0, 1], rate_hz=200, nvml=fake)
    with pytest.raises(UsageError, match="after stop"):
        _ = sampler.trace
    before = threading.active_count()
    with sampler:
        sampler.start()  # second start: no second thread
        assert threading.active_count() == before + 1
        threading.Event().wait(0.2)
    assert threading.active_count() == before
    trace = sampler.trace
    assert sampler.stop() is trace  # idempotent
    assert len(trace.for_gpu(0)["t_unix_s"]) >= 2  # no rate assert: the machine is shared


def test_bad_gpu_index_and_rate_are_usage_errors(recorded: PowerTrace) -> None:
    with pytest.raises(UsageError, match="GPU 3 requested but NVML sees 2 GPUs: 0 \\(Replayed GPU\\)"):
        NvmlSampler([3], nvml=ReplayNvml(recorded)).start()
    with pytest.raises(UsageError, match="rate"):
        NvmlSampler([0], rate_hz=0)
    with pytest.raises(UsageError):
        NvmlSampler([])


# -- nvml.py ---------------------------------------------------------------------------------------

GPUS = [(0, "NVIDIA H200", "GPU-aaaa-1111"), (1, "NVIDIA H200", "GPU-bbbb-2222"), (2, "NVIDIA H200", "GPU-cccc-3333")]


@pytest.mark.parametrize(("visible", "requested", "expected"), [
    (None, None, [0, 1, 2]),
    (None, [1], [1]),
    ("2,0", None, [2, 0]),
    ("2,0", [0], [2]),
    ("GPU-bbbb,GPU-cccc-3333", [1], [2]),
    ("cccc", None, [2]),
    ("1,-1,0", None, [1]),
    ("", None, []),
])
def test_resolve_gpu_indices(visible, requested, expected) -> None:
    assert nvml_mod.resolve_gpu_indices(requested, GPUS, visible, use_env=False) == expected


def test_resolve_gpu_indices_errors_name_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"GPU 3 requested but NVML sees 3 GPUs: 0 \(NVIDIA H200\), 1 \(NVIDIA H200\)"):
        nvml_mod.resolve_gpu_indices([3], GPUS, None, use_env=False)
    with pytest.raises(UsageError, match="leaves 1 visible"):
        nvml_mod.resolve_gpu_indices([1], GPUS, "2", use_env=False)
    with pytest.raises(UsageError, match="matches no GPU"):
        nvml_mod.resolve_gpu_indices(None, GPUS, "GPU-ffff", use_env=False)
    with pytest.raises(UsageError, match="names GPU 7"):
        nvml_mod.resolve_gpu_indices(None, GPUS, "7", use_env=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert nvml_mod.resolve_gpu_indices([0], GPUS) == [1]


class CountingNvml(SimpleNamespace):
    def __init__(self, fail_init: bool = False) -> None:
        super().__init__(inits=0, shutdowns=0, fail_init=fail_init)

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2


def test_init_shutdown_refcounted(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = CountingNvml()
    monkeypatch.setattr(nvml_mod, "_override", fake)
    nvml_mod.nvml_init()
    with nvml_mod.nvml_session():
        assert fake.inits == 1
    assert fake.shutdowns == 0
    nvml_mod.nvml_shutdown()
    nvml_mod.nvml_shutdown()  # extra call harmless
    assert (fake.inits, fake.shutdowns) == (1, 1)
    assert nvml_mod.nvml_available()


def test_unavailable_nvml_gives_null_meter_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_mod, "_override", CountingNvml(fail_init=True))
    assert not nvml_mod.nvml_available()
    assert "Shared Library Not Found" in (nvml_mod.nvml_unavailable_reason() or "")
    meter = make_meter([0], "gpu")
    assert isinstance(meter, NullMeter) and isinstance(meter, EnergyMeter)
    with meter.measure() as m:
        with pytest.raises(UsageError):
            _ = m.trace
    report = m.report(LoadWindow(0.0, 1.0), output_tokens=10)
    assert report.gpus == () and report.energy_j is None
    assert report.missing == ("NVML not available: nvmlInit failed: RuntimeError: NVML Shared Library Not Found",)
    cpu = make_meter(None, "cpu")
    assert isinstance(cpu, NullMeter) and "cpu backend" in (cpu.reason or "")


def test_make_meter_resolves_visible_ids(monkeypatch: pytest.MonkeyPatch, recorded: PowerTrace) -> None:
    monkeypatch.setattr(nvml_mod, "_override", ReplayNvml(recorded))
    meter = make_meter([0], "gpu", visible_devices="1")
    assert isinstance(meter, NvmlMeter) and meter.gpu_indices == (1,)
    with pytest.raises(UsageError, match="GPU 2 requested"):
        make_meter([2], "gpu", visible_devices="")


def test_nvml_meter_measures_a_block(recorded: PowerTrace) -> None:
    meter = NvmlMeter([0, 1], rate_hz=200, nvml=ReplayNvml(recorded))
    with meter.measure() as m:
        threading.Event().wait(0.2)
    trace = m.trace
    assert trace is not None and trace.gpus == (0, 1)
    report = m.report(LoadWindow(float(trace.t_unix_s.min()), float(trace.t_unix_s.max())), output_tokens=100)
    assert [g.gpu for g in report.gpus] == [0, 1]
    assert report.energy_per_output_token_j is not None and report.energy_per_output_token_j > 0


def test_selfcheck_replay_and_no_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    rc = main(["--seconds", "0.3", "--rate-hz", "50", "--replay", str(PP_C32), "--json", str(tmp_path / "s.json")],
              out=out)
    text = out.getvalue()
    assert "GPU 0 (Replayed GPU)" in text and "GPU 1" in text and "sampler CPU" in text
    data = json.loads((tmp_path / "s.json").read_text())
    assert [g["gpu"] for g in data["gpus"]] == [0, 1] and data["gpus"][0]["power_source"] == "instant"
    assert rc in (0, 1)  # 1 only if the shared machine starved the thread
    monkeypatch.setattr(nvml_mod, "_override", CountingNvml(fail_init=True))
    out = io.StringIO()
    assert main(["--seconds", "0.1"], out=out) == 2
    assert out.getvalue().startswith("NVML not available")
