"""Load benchmark: image-set requests from a separate process against the running API, in five scenarios.

1. ``known``: shoppers the model knows, asked again after a warm-up pass, so their sets come from the service's
   set cache (the path a known shopper's repeat visit takes), by ``concurrency`` clients;
2. ``sessions``: new shoppers, each with a session of a few views posted first (untimed): fresh sets, folded in;
3. ``new``: new shoppers without events: fresh cold-start sets;
4. ``known x2``: the first scenario again with twice the clients;
5. ``overload``: new shoppers arriving at ``overload_factor`` × the rate measured in ``new`` (open loop: each
   request leaves at its time whether or not earlier ones were answered), so the admission gate must refuse.

Scenarios 1–4 are closed loops: ``concurrency`` clients each send a request as soon as their last is answered.
For each: throughput (answers with 200 a second), p50 / p90 / p99 latency of those accepted requests, the share
answered 503 (refused by the admission gate, or a store that does not answer), other 5xx, and other failures.
Without ``url`` it starts the API itself on a free port (``workers`` uvicorn workers on the serving bundle, one by
default) and stops it afterwards; a server it can read ``/metrics`` from adds its own counts to the report.

The client is aiohttp (:class:`AioClient`): it costs about 0.6 ms of CPU a request where httpx cost 4 ms (cached
sets, 16 clients), so on a small machine the client leaves the cores to the server it measures. The scenarios take
any client with httpx's ``get`` and ``post``; the tests drive them through httpx's in-process transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from engine.artifacts.registry import ArtifactRegistry
from engine.experiments.http_api import serve_subprocess
from engine.serving.privacy import shoppers_known_to
from features.pseudonyms import load_or_create_keyring

logger = logging.getLogger(__name__)

#: Server counters the report copies from ``/metrics`` when it may read them (name → label that splits it).
SERVER_SERIES = {
    "vitrine_set_cache_hits_total": None,
    "vitrine_set_cache_misses_total": None,
    "vitrine_precomputed_set_hits_total": None,
    "vitrine_precomputed_set_misses_total": None,
    "vitrine_admission_rejections_total": "reason",
    "vitrine_image_set_duration_seconds_count": "strategy",
}


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    """One scenario's answers. ``latencies_ms`` holds the accepted (200) requests' latencies only, ``refused_ms``
    the 503s' (how quickly a crowd is told to come back)."""

    name: str
    requests: int
    seconds: float
    statuses: dict[int, int]  # HTTP status → answers; 0: no answer (a transport error or a timeout)
    latencies_ms: np.ndarray  # (accepted,)
    refused_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (503s,)
    concurrency: int | None = None  # closed loop: clients
    offered_rps: float | None = None  # open loop: arrivals a second

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rejected(self) -> int:
        return self.statuses.get(503, 0)

    @property
    def other_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500 and s != 503)

    @property
    def throughput(self) -> float:
        """Accepted answers a second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        q = np.percentile(self.latencies_ms, [50, 90, 99]) if len(self.latencies_ms) else [float("nan")] * 3
        return {
            "scenario": self.name,
            "mode": "closed" if self.offered_rps is None else "open",
            "requests": self.requests,
            "concurrency": self.concurrency,
            "offered_rps": None if self.offered_rps is None else round(self.offered_rps, 1),
            "seconds": round(self.seconds, 2),
            "rps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,  # answers of any status
            "throughput_rps": round(self.throughput, 1),
            "ok": self.ok,
            "errors": self.requests - self.ok,
            "share_503": round(self.rejected / self.requests, 4) if self.requests else 0.0,
            "other_5xx": self.other_5xx,
            "other_failures": self.requests - self.ok - self.rejected - self.other_5xx,
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "p50_ms": round(float(q[0]), 1),
            "p90_ms": round(float(q[1]), 1),
            "p99_ms": round(float(q[2]), 1),
            "refused_p50_ms": round(float(np.percentile(self.refused_ms, 50)), 1) if len(self.refused_ms) else None,
            "refused_p99_ms": round(float(np.percentile(self.refused_ms, 99)), 1) if len(self.refused_ms) else None,
        }


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    url: str
    n: int
    scenarios: list[ScenarioResult]
    cpu_count: int
    server: dict[str, Any] = field(default_factory=dict)  # the server's own counts (/metrics), when readable

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "images_per_set": self.n,
            "cpu_count": self.cpu_count,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "server_metrics": self.server,
        }

    def render(self) -> str:
        lines = [
            f"load benchmark against {self.url} ({self.n} images per set, {self.cpu_count} CPUs)",
            f"  {'scenario':<10} {'requests':>8} {'load':>10} {'ok/s':>7} {'p50 ms':>8} {'p90 ms':>8} "
            f"{'p99 ms':>8} {'503':>6} {'503 p50':>8} {'5xx':>4} {'other':>5}",
        ]
        for s in self.scenarios:
            d = s.to_dict()
            load = f"{d['concurrency']} clients" if d["mode"] == "closed" else f"{d['offered_rps']:g}/s open"
            refused = "-" if d["refused_p50_ms"] is None else f"{d['refused_p50_ms']:.1f}"
            lines.append(
                f"  {d['scenario']:<10} {d['requests']:>8} {load:>10} {d['throughput_rps']:>7.1f} "
                f"{d['p50_ms']:>8.1f} {d['p90_ms']:>8.1f} {d['p99_ms']:>8.1f} {d['share_503']:>6.1%} "
                f"{refused:>8} {d['other_5xx']:>4} {d['other_failures']:>5}"
            )
        if self.server:
            lines.append("  server: " + json.dumps(self.server, sort_keys=True))
        return "\n".join(lines)


@dataclass(frozen=True)
class Answer:
    """An answer read whole, with the part of httpx's response that the scenarios use."""

    status_code: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"the API answered {self.status_code}: {self.text[:200]}")


class AioClient:
    """The benchmark's client against a real server: an aiohttp session without a connection limit (the open loop
    must not queue in the client), with httpx's ``get`` and ``post`` (see the module)."""

    def __init__(self, base: str, *, headers: dict[str, str], timeout: float) -> None:
        self._session = aiohttp.ClientSession(
            base_url=base,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def get(self, path: str) -> Answer:
        async with self._session.get(path) as r:
            return Answer(r.status, await r.read())

    async def post(self, path: str, *, json: Any) -> Answer:
        async with self._session.post(path, json=json) as r:
            return Answer(r.status, await r.read())


#: What the scenarios send requests through.
Client = httpx.AsyncClient | AioClient
#: A request that got no answer: a transport error or a timeout, in either client.
NO_ANSWER = (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError)


async def _timed_get(client: Client, path: str) -> tuple[int, float]:
    """(status, milliseconds); status 0 when no answer came."""
    started = time.perf_counter()
    try:
        status = (await client.get(path)).status_code
    except NO_ANSWER:
        status = 0
    return status, (time.perf_counter() - started) * 1000.0


def _result(name: str, answers: list[tuple[int, float]], seconds: float, **load: Any) -> ScenarioResult:
    statuses: dict[int, int] = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1

    def latencies(wanted: int) -> np.ndarray:
        return np.asarray([ms for status, ms in answers if status == wanted], dtype=float)

    return ScenarioResult(
        name=name,
        requests=len(answers),
        seconds=seconds,
        statuses=statuses,
        latencies_ms=latencies(200),
        refused_ms=latencies(503),
        **load,
    )


async def closed_loop(client: Client, name: str, paths: list[str], concurrency: int) -> ScenarioResult:
    """``concurrency`` clients, each sending the next of ``paths`` as soon as its last request was answered."""
    queue = list(reversed(paths))
    answers: list[tuple[int, float]] = []

    async def worker() -> None:
        while queue:
            answers.append(await _timed_get(client, queue.pop()))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _result(name, answers, time.perf_counter() - started, concurrency=concurrency)


async def open_loop(client: Client, name: str, paths: list[str], rate: float) -> ScenarioResult:
    """Request k of ``paths`` leaves at k / ``rate`` seconds, whether or not earlier ones were answered (an open
    loop: arrivals do not slow down when the server does). Seconds run until the last answer."""
    started = time.perf_counter()
    tasks = []
    for k, path in enumerate(paths):
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_timed_get(client, path)))
    answers = list(await asyncio.gather(*tasks))
    return _result(name, answers, time.perf_counter() - started, offered_rps=rate)


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """Who asks in each scenario. ``known``: shoppers the bundle knows (the shop's ids); ``new_ids``: fresh ids
    to draw new shoppers from; ``requests`` per scenario, ``overload_factor`` 0 leaves the overload out."""

    known: list[str]
    requests: int
    concurrency: int
    n: int
    overload_factor: float = 4.0
    session_events: int = 3
    prefix: str = "bench"
    seed: int = 0


def _image_set(user: str, n: int, session_id: str | None = None) -> str:
    return f"/v1/users/{user}/image-set?n={n}" + (f"&session_id={session_id}" if session_id else "")


async def _sessions(client: Client, plan: LoadPlan, rng: np.random.Generator) -> list[str]:
    """Post ``plan.requests`` sessions of a few views of items the first known shopper is recommended (untimed);
    the image-set paths of new shoppers in those sessions."""
    r = await client.get(f"/v1/users/{plan.known[0]}/recommendations?k=50")
    r.raise_for_status()
    items = [i["item_id"] for i in r.json()["items"]]
    if not items:
        raise RuntimeError("the API recommended no items to make sessions of")
    sessions = [f"{plan.prefix}-session-{plan.seed}-{k}" for k in range(plan.requests)]
    gate = asyncio.Semaphore(plan.concurrency)

    async def post(session_id: str) -> None:
        views = rng.choice(items, min(plan.session_events, len(items)), replace=False)
        body = {"events": [{"item_id": str(i), "event_type": "view"} for i in views]}
        async with gate:
            answer = await client.post(f"/v1/sessions/{session_id}/events", json=body)
        answer.raise_for_status()

    await asyncio.gather(*(post(s) for s in sessions))
    return [_image_set(f"{s}-shopper", plan.n, s) for s in sessions]


async def run_scenarios(client: Client, plan: LoadPlan) -> list[ScenarioResult]:
    """The five scenarios (module docstring) through ``client``, in order; the known shoppers' sets are asked for
    once first (untimed), so that the ``known`` scenarios meet them in the set cache."""
    rng = np.random.default_rng(plan.seed)
    pool = list(dict.fromkeys(plan.known))
    warm = [_image_set(u, plan.n) for u in pool]
    await closed_loop(client, "warm-up", warm, plan.concurrency)
    known = [_image_set(str(u), plan.n) for u in rng.choice(pool, plan.requests, replace=True)]
    session_paths = await _sessions(client, plan, rng)

    def new(tag: str) -> list[str]:
        return [_image_set(f"{plan.prefix}-{tag}-{plan.seed}-{k}", plan.n) for k in range(plan.requests)]

    results = [
        await closed_loop(client, "known", known, plan.concurrency),
        await closed_loop(client, "sessions", session_paths, plan.concurrency),
        fresh := await closed_loop(client, "new", new("new"), plan.concurrency),
        await closed_loop(client, "known x2", list(reversed(known)), 2 * plan.concurrency),
    ]
    if plan.overload_factor > 0:
        if fresh.throughput > 0:
            rate = plan.overload_factor * fresh.throughput
            results.append(await open_loop(client, "overload", new("over"), rate))
        else:
            logger.warning("no fresh set was accepted in 'new': the overload scenario has no rate to start from")
    return results


async def server_counts(client: Client) -> dict[str, Any]:
    """The server's own counters (:data:`SERVER_SERIES`) from ``/metrics``; empty when it may not be read."""
    try:
        r = await client.get("/metrics")
    except NO_ANSWER:
        return {}
    if r.status_code != 200:
        return {}
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name not in SERVER_SERIES:
                continue
            label = SERVER_SERIES[s.name]
            if label is None:
                out[s.name] = out.get(s.name, 0) + int(s.value)
            else:
                split = out.setdefault(s.name, {})
                split[s.labels[label]] = split.get(s.labels[label], 0) + int(s.value)
    return out


def _known_users(artifacts: Path | None, count: int, rng: np.random.Generator) -> list[str]:
    """Shoppers the serving bundle knows, by the shop's own ids: read from the data it was trained on (the
    bundle holds pseudonyms only), and mapped with the artifacts' keyring."""
    if artifacts is not None:
        registry = ArtifactRegistry(artifacts)
        version = registry.current()
        if version:
            with np.load(registry.path(version) / "embeddings" / "factors.npz", allow_pickle=False) as f:
                known = set(f["user_ids"].astype(str))
            manifest = json.loads((registry.path(version) / "manifest.json").read_text())
            data = Path(manifest["data"]["path"])
            ids = shoppers_known_to(data, load_or_create_keyring(artifacts), known.__contains__, 5000)
            if ids:
                return list(rng.choice(ids, min(count, len(ids)), replace=False))
    raise ValueError("known users come from the serving bundle and the data it was trained on: pass --artifacts")


def _client(base: str, credential: str | None) -> AioClient:
    # a generous timeout, since the gate lets a request wait its turn (15 s by default) before it is generated
    return AioClient(base, headers={"Authorization": f"Bearer {credential}"} if credential else {}, timeout=120.0)


async def _bench(base: str, key: str | None, scrape: str | None, plan: LoadPlan) -> LoadReport:
    async with _client(base, key) as client:
        results = await run_scenarios(client, plan)
    async with _client(base, scrape or key) as client:
        counts = await server_counts(client)
    return LoadReport(url=base, n=plan.n, scenarios=results, cpu_count=os.cpu_count() or 0, server=counts)


def run_load_benchmark(
    *,
    url: str | None,
    artifacts: Path | None,
    requests: int = 400,
    concurrency: int = 8,
    n: int = 8,
    seed: int = 0,
    service_key: str | None = None,
    overload_factor: float = 4.0,
    known_pool: int = 100,
    metrics_token: str | None = None,
    workers: int = 1,
) -> LoadReport:
    """``service_key`` authenticates to the API at ``url`` (default: ``VITRINE_SERVICE_KEY``), ``metrics_token``
    reads its ``/metrics`` (default: ``VITRINE_METRICS_TOKEN``); a server started here gets keys made up for the
    run, with ``workers`` uvicorn workers. ``known_pool`` distinct known shoppers are warmed up and asked again in the
    ``known`` scenarios."""
    if min(requests, concurrency, known_pool, workers) < 1 or overload_factor < 0:
        raise ValueError("requests, concurrency, known_pool and workers must be >= 1 and overload_factor >= 0")
    rng = np.random.default_rng(seed)
    known = _known_users(artifacts, known_pool, rng)
    plan = LoadPlan(
        known=known,
        requests=requests,
        concurrency=concurrency,
        n=n,
        overload_factor=overload_factor,
        prefix=f"bench{secrets.token_hex(3)}",  # new shoppers and sessions, new on every run against one server
        seed=seed,
    )

    if url:
        key = service_key or os.environ.get("VITRINE_SERVICE_KEY")
        scrape = metrics_token or os.environ.get("VITRINE_METRICS_TOKEN")
        return asyncio.run(_bench(url.rstrip("/"), key, scrape, plan))
    if artifacts is None:
        raise ValueError("give --url of a running API, or --artifacts to start one")
    key, scrape = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    # one client sends a crowd's requests: the per-client rate limit would measure itself, not the service
    env = {"VITRINE_SERVICE_KEYS": key, "VITRINE_METRICS_TOKEN": scrape, "VITRINE_RATE_LIMIT_PER_SECOND": "0"}
    with serve_subprocess(artifacts, env, workers=workers) as base:
        return asyncio.run(_bench(base, key, scrape, plan))
