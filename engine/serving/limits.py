"""Limits that keep one caller, or a crowd, from taking the service down: per-key rate limits and an admission
gate around image generation.

- :class:`MemoryRateLimiter` and :class:`RedisRateLimiter` are token buckets (``rate`` tokens a second, at most
  ``burst`` saved up) per client key: :meth:`take` answers 0 when a request may go ahead, else the seconds until
  it may (the ``Retry-After`` of a 429). In Redis, every worker and host shares the buckets;
  :func:`open_rate_limiter` picks one from the settings.
- :class:`AdmissionGate` runs at most ``max_running`` generations at once and lets at most ``max_waiting`` more
  wait (each for at most ``wait_seconds``); any further one is refused at once with :class:`Overloaded` (a 503
  with ``Retry-After``), so overload never becomes a queue that grows without limit. A :class:`GateObserver`
  (``engine.serving.metrics.ServingMetrics``) hears of every change and every refusal.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import redis

from engine.serving import redis_client

logger = logging.getLogger(__name__)


class RateLimiter(Protocol):
    def take(self, key: str) -> float:
        """Take a token from ``key``'s bucket: 0.0 when the request may go ahead, else the seconds until it may."""
        ...


def _check(rate: float, burst: int) -> None:
    if not (math.isfinite(rate) and rate > 0) or burst < 1:
        raise ValueError(f"a rate limit needs rate > 0 tokens a second and burst >= 1; got {rate} and {burst}")


class MemoryRateLimiter:
    """Token buckets in this process: one worker's view (several workers each allow the full rate).

    At most ``max_keys`` buckets are kept, the least recently used dropped first; a dropped bucket comes back
    full, which only ever lets a quiet key through.
    """

    def __init__(
        self, *, rate: float, burst: int, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        _check(rate, burst)
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, when)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


# One bucket, atomically: Redis runs a script to its end before any other command. KEYS[1]: the bucket, a hash
# of tokens and the time they were counted (the Redis server's clock, so hosts' clocks never disagree); ARGV:
# rate, burst. Answers the wait in seconds, as a string (a Lua number would be truncated to an integer).
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every worker and host (``<prefix><key>``, expiring once full again).

    A Redis that does not answer lets requests through (logged, at most once a minute): a rate limit must not
    take the service down with Redis.
    """

    def __init__(self, client: redis.Redis, *, rate: float, burst: int, prefix: str = "vitrine:rate:") -> None:
        _check(rate, burst)
        self.client = client
        self.rate = rate
        self.burst = burst
        self.prefix = prefix
        self._take = client.register_script(_TAKE_SCRIPT)
        self._last_complaint = -math.inf

    def take(self, key: str) -> float:
        try:
            return float(self._take(keys=[self.prefix + key], args=[self.rate, self.burst]))
        except redis.RedisError as exc:
            if time.monotonic() - self._last_complaint > 60:
                self._last_complaint = time.monotonic()
                logger.error(
                    "rate limits are off while %s does not answer: %s", redis_client.describe(self.client), exc
                )
            return 0.0


def open_rate_limiter(
    redis_url: str | None, *, rate: float, burst: int, redis_prefix: str = redis_client.DEFAULT_PREFIX
) -> RateLimiter | None:
    """The limiter a server process uses: None when ``rate`` is 0 (off), in Redis with ``redis_url`` (shared by
    every host, under ``<redis_prefix>rate:``), else in this process."""
    if rate == 0:
        return None
    if redis_url:
        client = redis_client.connect(redis_url, timeout_seconds=0.25)
        return RedisRateLimiter(
            client, rate=rate, burst=burst, prefix=redis_client.check_prefix(redis_prefix) + "rate:"
        )
    return MemoryRateLimiter(rate=rate, burst=burst)


class Overloaded(RuntimeError):
    """The service is at its limit of work in progress; ``retry_after`` (seconds) says when to try again."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GateObserver(Protocol):
    """Hears what an :class:`AdmissionGate` does (called while the gate holds its lock: keep it quick)."""

    def gate_limits(self, max_running: int | None, max_waiting: int) -> None: ...

    def gate_changed(self, running: int, waiting: int) -> None: ...

    def gate_refused(self, reason: str) -> None:
        """``reason``: ``full`` (no place, no room to wait) or ``timeout`` (no place came free in time)."""
        ...


class AdmissionGate:
    """At most ``max_running`` holders at once, at most ``max_waiting`` more waiting (each up to ``wait_seconds``);
    anyone beyond is refused at once with :class:`Overloaded`. ``max_running=None``: no limit at all.
    ``observer`` hears of the limits, of every change in the numbers running and waiting, and of every refusal."""

    def __init__(
        self,
        *,
        max_running: int | None,
        max_waiting: int = 0,
        wait_seconds: float = 15.0,
        retry_after: int = 5,
        observer: GateObserver | None = None,
    ) -> None:
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be at least 1 (or None: no limit); got {max_running}")
        if max_waiting < 0 or wait_seconds < 0:
            raise ValueError(f"max_waiting and wait_seconds must be >= 0; got {max_waiting} and {wait_seconds}")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after
        self._running = 0
        self._waiting = 0
        self._cond = threading.Condition()
        self._observer = observer
        if observer is not None:
            observer.gate_limits(max_running, max_waiting)
            observer.gate_changed(0, 0)

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def _changed(self) -> None:
        if self._observer is not None:
            self._observer.gate_changed(self._running, self._waiting)

    def _refuse(self, why: str, reason: str) -> Overloaded:
        if self._observer is not None:
            self._observer.gate_refused(reason)
        return Overloaded(
            f"the service is generating as many images as it can ({why}); retry in {self.retry_after} s",
            retry_after=self.retry_after,
        )

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place while the block runs; Overloaded when none is free and the waiting room is full, or when
        no place came free within ``wait_seconds``."""
        limit = self.max_running
        if limit is None:
            yield
            return
        with self._cond:
            if self._running >= limit:
                if self._waiting >= self.max_waiting:
                    raise self._refuse(f"{self._running} running, {self._waiting} waiting", "full")
                self._waiting += 1
                self._changed()
                try:
                    deadline = time.monotonic() + self.wait_seconds
                    while self._running >= limit:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise self._refuse(f"no place came free within {self.wait_seconds:g} s", "timeout")
                        self._cond.wait(left)
                finally:
                    self._waiting -= 1
                    self._changed()
            self._running += 1
            self._changed()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._changed()
                self._cond.notify()
