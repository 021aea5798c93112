"""What serving counts for Prometheus: image sets by strategy, set-cache and precomputed-set hits, and the
admission gate's places (``GET /metrics`` exposes them; ``docs/OPERATIONS.md`` lists every series).

One :class:`ServingMetrics` per :class:`engine.serving.service.Service`, its series in a registry the caller
passes (the API's, which also holds the HTTP series), so that two services in one process never share counts.
Under ``PROMETHEUS_MULTIPROC_DIR`` (several uvicorn workers, ``vitrine serve --workers N``) prometheus-client
writes every value to a per-process file and the API's ``/metrics`` adds them up; the gauges then sum over the
workers alive (``livesum``).

For the code that serves sets a batch job made in advance: call :meth:`ServingMetrics.precomputed_set` with
``hit=True`` when a stored set was served, ``hit=False`` when none was stored for the request and the set was made
afresh; ``Service.metrics`` is the instance to call.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.serving.types import ImageSet, PopularSet

#: Upper bounds (seconds) of the latency buckets: a cached set takes milliseconds, a fresh one a fraction of a
#: second on a CPU, and one that waited at the admission gate up to its wait (15 s by default) on top.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)

#: Values of the ``strategy`` label: the Personaliser's strategies, ``cached`` for a set served from the set
#: cache, ``popular`` for an experiment's popular arm, and ``precomputed`` for a set made in advance.
STRATEGIES = ("personalised", "session", "cold_start", "cached", "popular", "precomputed")


def served_as(images: ImageSet | PopularSet) -> str:
    """The ``strategy`` label of a set (one of :data:`STRATEGIES`): how it was answered, where that is not how it
    was made (the set cache, the precomputed sets), else the strategy that made it."""
    if isinstance(images, ImageSet) and images.precomputed:
        return "precomputed"
    if isinstance(images, ImageSet) and images.cached:
        return "cached"
    return images.strategy


class ServingMetrics:
    """The serving layer's series, registered in ``registry`` (default: a registry of their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.set_seconds = Histogram(
            "vitrine_image_set_duration_seconds",
            "Time to answer an image set inside the service (experiment assignment included), by strategy",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.set_cache_hits = Counter(
            "vitrine_set_cache_hits", "Personalised image sets answered from the set cache", registry=r
        )
        self.set_cache_misses = Counter(
            "vitrine_set_cache_misses", "Personalised image sets not in the set cache, so made afresh", registry=r
        )
        self.precomputed_hits = Counter(
            "vitrine_precomputed_set_hits", "Image sets served from the sets precomputed for known shoppers", registry=r
        )
        self.precomputed_misses = Counter(
            "vitrine_precomputed_set_misses",
            "Image set requests that found no precomputed set and were made afresh",
            registry=r,
        )
        self.running = Gauge(
            "vitrine_generations_running",
            "Generations holding a place at the admission gate now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.waiting = Gauge(
            "vitrine_generations_waiting",
            "Generations waiting for a place at the admission gate now (the queue depth)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.running_limit = Gauge(
            "vitrine_generations_running_limit",
            "Places at the admission gate (VITRINE_MAX_CONCURRENT_GENERATIONS; summed over workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.waiting_limit = Gauge(
            "vitrine_generations_waiting_limit",
            "Generations that may wait at the admission gate (VITRINE_MAX_QUEUED_GENERATIONS; summed over workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "vitrine_admission_rejections",
            "Generations refused with 503 by the admission gate; reason: full (no place and no room to wait) "
            "or timeout (no place came free within the wait)",
            ["reason"],
            registry=r,
        )
        for reason in ("full", "timeout"):  # both series exist from the start, at 0
            self.rejections.labels(reason=reason)

    # ---- image sets ---------------------------------------------------------------------------------
    def image_set(self, images: ImageSet | PopularSet, seconds: float) -> None:
        """One image set answered in ``seconds``: its time under its strategy (:func:`served_as`), and, for a set
        the Personaliser answered, whether its set cache held it."""
        self.set_seconds.labels(strategy=served_as(images)).observe(seconds)
        if isinstance(images, ImageSet) and not images.precomputed:
            (self.set_cache_hits if images.cached else self.set_cache_misses).inc()

    def precomputed_set(self, *, hit: bool) -> None:
        """One look-up in the precomputed sets: ``hit`` when a stored set was served, else the set was made afresh."""
        (self.precomputed_hits if hit else self.precomputed_misses).inc()

    # ---- the admission gate (engine.serving.limits.GateObserver) -------------------------------------
    def gate_limits(self, max_running: int | None, max_waiting: int) -> None:
        """The gate's capacity; a gate without a limit shows 0 places."""
        self.running_limit.set(max_running or 0)
        self.waiting_limit.set(max_waiting if max_running is not None else 0)

    def gate_changed(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)

    def gate_refused(self, reason: str) -> None:
        self.rejections.labels(reason=reason).inc()
