"""The server's own view of a run: vLLM's Prometheus ``/metrics``, scraped before, during and after the run.

:class:`ServerMetricsMonitor` scrapes ``GET {base}/metrics`` before the run, samples it every ``interval_s``
while the run goes (gauges have no history: the KV-cache peak must be seen while it happens), and scrapes it
after. The page is parsed with the prometheus-client package's text parser
(``prometheus_client.parser.text_string_to_metric_families``), never by hand. :func:`window` turns the two
scrapes and the samples into a :class:`ServerMetrics` for the run: counter and histogram *deltas* (so a
long-running server's history does not leak into the run), histogram means and quantiles (PromQL's
``histogram_quantile`` interpolation), and gauge peaks. Series are summed over their label sets (several
engines of one server, data parallel); the KV-cache usage takes the fullest engine.

The metric names are vLLM's (``vllm/v1/metrics/loggers.py``, vLLM 0.32; the KV-cache gauge was
``vllm:gpu_cache_usage_perc`` before it became ``vllm:kv_cache_usage_perc``, both are read):
:data:`VLLM_METRICS`. Server TTFT (``vllm:time_to_first_token_seconds``: from the request's arrival at the
engine to its first token) is reported beside the client's TTFT as a cross-check: the client's is larger by the
network, HTTP and detokenisation time.

When the server has no ``/metrics`` (not vLLM, metrics disabled, a proxy in front) or it cannot be reached, the
result is ``ServerMetrics(available=False, reason=...)`` with the reason in one line; the run is not failed.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["measure_server", "VLLM_METRICS", "Histogram", "Snapshot", "ServerMetrics", "ScrapeError", "parse_metrics", "scrape",
           "histogram_quantile", "window", "metrics_url_for", "ServerMetricsMonitor"]

#: Our name -> vLLM metric family name(s) (first found wins), as the prometheus parser names families
#: (a counter's family drops ``_total``).
VLLM_METRICS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "queue": ("vllm:request_queue_time_seconds",),
    "prefill": ("vllm:request_prefill_time_seconds",),
    "decode": ("vllm:request_decode_time_seconds",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "preemptions": ("vllm:num_preemptions",),
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
}
_MAX_GAUGES = frozenset({"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"})


class ScrapeError(Exception):
    """``/metrics`` could not be read or parsed; the message is the one-line reason."""


@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets ``((upper_bound, count), ...)`` sorted by bound (``inf`` last), with sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, before: Histogram | None) -> Histogram:
        """The observations made since ``before`` (a server restart, counts going down, gives ``self``)."""
        if before is None or before.count > self.count:
            return self
        prev = dict(before.buckets)
        return Histogram(tuple((le, c - prev.get(le, 0.0)) for le, c in self.buckets), self.sum - before.sum,
                         self.count - before.count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


@dataclass(frozen=True)
class Snapshot:
    """One scrape: gauges (summed over label sets; KV usage: max), counter totals and histograms by family name."""

    t_unix_s: float
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def find(self, key: str, kind: str) -> Any:
        table: Mapping[str, Any] = (self.gauges if kind == "gauge" else self.counters if kind == "counter"
                                    else self.histograms)
        return next((table[name] for name in VLLM_METRICS[key] if name in table), None)


def parse_metrics(text: str, t_unix_s: float | None = None) -> Snapshot:
    """Parse a Prometheus text page (prometheus-client's parser); keeps the ``vllm:`` families."""
    from prometheus_client.parser import text_string_to_metric_families

    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # noqa: BLE001 - the parser raises ValueError and others on bad pages
        raise ScrapeError(f"not a Prometheus text page ({type(exc).__name__}: {str(exc)[:120]})") from None
    for fam in families:
        if not fam.name.startswith("vllm:") or fam.name.endswith("_created"):
            continue  # vLLM's page also lists each series' creation time as a "<name>_created" gauge
        for s in fam.samples:
            value = float(s.value)
            if fam.type == "gauge" and s.name == fam.name:
                if fam.name in _MAX_GAUGES:
                    gauges[fam.name] = max(gauges.get(fam.name, -math.inf), value)
                else:
                    gauges[fam.name] = gauges.get(fam.name, 0.0) + value
            elif fam.type == "counter" and s.name == fam.name + "_total":
                counters[fam.name] = counters.get(fam.name, 0.0) + value
            elif fam.type == "histogram":
                if s.name == fam.name + "_bucket":
                    le = float(s.labels["le"])
                    per = buckets.setdefault(fam.name, {})
                    per[le] = per.get(le, 0.0) + value
                elif s.name == fam.name + "_sum":
                    sums[fam.name] = sums.get(fam.name, 0.0) + value
                elif s.name == fam.name + "_count":
                    counts[fam.name] = counts.get(fam.name, 0.0) + value
    hists = {name: Histogram(tuple(sorted(b.items())), sums.get(name, 0.0), counts.get(name, 0.0))
             for name, b in buckets.items()}
    return Snapshot(time.time() if t_unix_s is None else t_unix_s, gauges, counters, hists)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """PromQL's ``histogram_quantile``: the ``q`` quantile of cumulative ``(upper_bound, count)`` buckets,
    interpolated linearly inside the bucket holding it (from 0 for the first bucket). A quantile in the ``+Inf``
    bucket is the largest finite bound. None when there is no observation."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank and count > prev_count:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        if not math.isinf(le):
            prev_le = le
        prev_count = count
    return prev_le


@dataclass(frozen=True)
class ServerMetrics:
    """The server's side of one run (times in ms; ``None`` = not measured). ``requests`` is how many requests
    the server finished in the window (its TTFT histogram's count delta)."""

    available: bool
    reason: str | None = None
    requests: int | None = None
    server_ttft_mean_ms: float | None = None
    server_ttft_p50_ms: float | None = None
    server_ttft_p95_ms: float | None = None
    server_e2el_mean_ms: float | None = None
    queue_time_mean_ms: float | None = None
    queue_time_p95_ms: float | None = None
    prefill_time_mean_ms: float | None = None
    decode_time_mean_ms: float | None = None
    kv_cache_usage_peak_pct: float | None = None
    preemptions: int | None = None
    running_peak: int | None = None
    waiting_peak: int | None = None
    samples: int = 0

    def summary(self) -> dict[str, float]:
        """Per-run summary keys (``server_*``), measured ones only."""
        skip = {"available", "reason", "samples"}
        out = {}
        for key, value in asdict(self).items():
            if key in skip or value is None:
                continue
            out[key if key.startswith("server_") else f"server_{key}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def window(before: Snapshot, after: Snapshot, samples: Sequence[Snapshot] = ()) -> ServerMetrics:
    """The run between two scrapes: histogram/counter deltas, gauge peaks over ``before``, ``samples``, ``after``."""
    def delta(key: str) -> Histogram | None:
        h = after.find(key, "histogram")
        return None if h is None else h.minus(before.find(key, "histogram"))

    ttft, e2e, queue, prefill, decode = (delta(k) for k in ("ttft", "e2e", "queue", "prefill", "decode"))
    if all(h is None for h in (ttft, e2e, queue, prefill, decode)) and not after.gauges and not after.counters:
        return ServerMetrics(False, "the /metrics page has no vLLM series (vllm:*): not a vLLM server?")

    def peak(key: str) -> float | None:
        values = [v for snap in (before, *samples, after) if (v := snap.find(key, "gauge")) is not None]
        return max(values) if values else None

    pre_after, pre_before = after.find("preemptions", "counter"), before.find("preemptions", "counter")
    preemptions = None if pre_after is None else int(round(max(0.0, pre_after - (pre_before or 0.0))))
    kv, running, waiting = peak("kv_cache_usage"), peak("running"), peak("waiting")
    return ServerMetrics(
        available=True,
        requests=None if ttft is None else int(round(ttft.count)),
        server_ttft_mean_ms=_ms(ttft.mean) if ttft else None,
        server_ttft_p50_ms=_ms(histogram_quantile(0.5, ttft.buckets)) if ttft else None,
        server_ttft_p95_ms=_ms(histogram_quantile(0.95, ttft.buckets)) if ttft else None,
        server_e2el_mean_ms=_ms(e2e.mean) if e2e else None,
        queue_time_mean_ms=_ms(queue.mean) if queue else None,
        queue_time_p95_ms=_ms(histogram_quantile(0.95, queue.buckets)) if queue else None,
        prefill_time_mean_ms=_ms(prefill.mean) if prefill else None,
        decode_time_mean_ms=_ms(decode.mean) if decode else None,
        kv_cache_usage_peak_pct=None if kv is None else kv * 100.0,
        preemptions=preemptions,
        running_peak=None if running is None else int(round(running)),
        waiting_peak=None if waiting is None else int(round(waiting)),
        samples=len(samples),
    )


def metrics_url_for(endpoint: str) -> str:
    """``http://h:p/v1`` -> ``http://h:p/metrics`` (vLLM serves it beside the OpenAI routes)."""
    base = endpoint.rstrip("/")
    return (base[: -len("/v1")] if base.endswith("/v1") else base) + "/metrics"


def scrape(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 2.0) -> Snapshot:
    """GET and parse ``url``; raise :class:`ScrapeError` with a one-line reason (never echoes headers)."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"GET {url} answered HTTP {exc.code}: the server exposes no Prometheus metrics there") \
            from None
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeError(f"nothing answers at {url}: {getattr(exc, 'reason', exc)}") from None
    return parse_metrics(text)


class _Box:
    """What :meth:`ServerMetricsMonitor.measure` yields: ``result`` after the block; ``mark_start()`` moves the
    window's opening scrape to now (called by the load runner once its warmup requests are done)."""

    def __init__(self, monitor: ServerMetricsMonitor | None = None) -> None:
        self.result: ServerMetrics | None = None
        self.before: Snapshot | None = None
        self.samples: list[Snapshot] = []
        self.restarted = False
        self._monitor = monitor

    def run_record(self, warmup_requests: int, repeats: int) -> tuple[dict[str, Any] | None, dict[str, float]]:
        """(the run's ``server`` record, the ``server_*`` keys for its gated summary); (None, {}) before a result.

        The runner reopens the window after the warmup requests (:meth:`mark_start`); if that scrape failed, the
        first run's window still holds them: its record says ``warmup_requests_in_window`` and, with later runs to
        judge by (``repeats`` > 1), its figures stay out of the gated summary."""
        if self.result is None:
            return None, {}
        record = self.result.to_dict()
        warm_inside = self.result.available and bool(warmup_requests) and not self.restarted
        if warm_inside:
            record["warmup_requests_in_window"] = int(warmup_requests)
        return record, {} if warm_inside and repeats > 1 else self.result.summary()

    def mark_start(self) -> None:
        """Open the window here: scrape again; samples taken before it are left out of the peaks (a failed scrape
        keeps the old opening scrape, so the window then still holds what came before, and ``restarted`` is
        False)."""
        if self._monitor is None or self.before is None:
            return
        try:
            self.before = scrape(self._monitor.url, self._monitor.headers, self._monitor.timeout_s)
        except ScrapeError:
            return
        self.restarted = True


@contextmanager
def measure_server(monitor: ServerMetricsMonitor | None) -> Iterator[_Box | None]:
    """``monitor.measure()`` (its box holds the run's ServerMetrics after the block), or None without a monitor
    (``--llmperf-server-metrics off``)."""
    if monitor is None:
        yield None
        return
    with monitor.measure() as box:
        yield box


class ServerMetricsMonitor:
    """Scrape ``url`` around a run: ``with monitor.measure() as box: run(); box.result`` is a
    :class:`ServerMetrics` (``available=False`` with the reason when ``/metrics`` is absent or unreachable).
    ``box.mark_start()`` inside the block moves the start of the window (past a warmup).
    Headers default to the endpoint credentials (``LLMPERF_API_KEY`` / ``LLMPERF_HEADERS``)."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, interval_s: float = 0.5,
                 timeout_s: float = 2.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if headers is None:
            from pytest_llmperf.load.auth import auth_headers

            headers = auth_headers()
        self.url, self.headers, self.interval_s, self.timeout_s = url, dict(headers), interval_s, timeout_s

    @contextmanager
    def measure(self) -> Iterator[_Box]:
        box = _Box(self)
        try:
            box.before = scrape(self.url, self.headers, self.timeout_s)
        except ScrapeError as exc:
            box.result = ServerMetrics(False, str(exc))
            yield box
            return
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval_s):
                try:
                    box.samples.append(scrape(self.url, self.headers, self.timeout_s))
                except ScrapeError:
                    continue  # a missed sample only loses peak resolution

        thread = threading.Thread(target=sample, name="llmperf-server-metrics", daemon=True)
        thread.start()
        try:
            yield box
        finally:
            stop.set()
            thread.join(self.timeout_s + 1.0)
            try:
                after = scrape(self.url, self.headers, self.timeout_s)
            except ScrapeError as exc:
                box.result = ServerMetrics(False, f"the /metrics scrape after the run failed: {exc}")
            else:
                opened = box.before.t_unix_s
                box.result = window(box.before, after, [snap for snap in list(box.samples) if snap.t_unix_s >= opened])
