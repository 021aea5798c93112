"""Load benchmark: concurrent image-set requests from a separate process against the running API.

Two scenarios: shoppers the model knows (personalised sets) and new shoppers (cold-start sets). Prints
requests per second and p50 / p99 latency for each. Without ``url`` it starts the API itself on a free
port (a subprocess running uvicorn on the serving bundle) and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from engine.artifacts.registry import ArtifactRegistry
from engine.experiments.http_api import serve_subprocess
from engine.serving.privacy import shoppers_known_to
from features.pseudonyms import load_or_create_keyring


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    name: str
    requests: int
    concurrency: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        q = np.percentile(self.latencies_ms, [50, 90, 99]) if len(self.latencies_ms) else [float("nan")] * 3
        return {
            "scenario": self.name,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "rps": round(self.rps, 1),
            "p50_ms": round(float(q[0]), 1),
            "p90_ms": round(float(q[1]), 1),
            "p99_ms": round(float(q[2]), 1),
        }


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    url: str
    n: int
    scenarios: list[ScenarioResult]
    cpu_count: int

    def to_dict(self) -> dict:
        return {
            "url": self.url,
            "images_per_set": self.n,
            "cpu_count": self.cpu_count,
            "scenarios": [s.to_dict() for s in self.scenarios],
        }

    def render(self) -> str:
        lines = [
            f"load benchmark against {self.url} ({self.n} images per set, {self.cpu_count} CPUs)",
            f"  {'scenario':<14} {'requests':>8} {'conc':>5} {'errors':>6} {'req/s':>7} "
            f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}",
        ]
        for s in self.scenarios:
            d = s.to_dict()
            lines.append(
                f"  {d['scenario']:<14} {d['requests']:>8} {d['concurrency']:>5} {d['errors']:>6} "
                f"{d['rps']:>7.1f} {d['p50_ms']:>8.1f} {d['p90_ms']:>8.1f} {d['p99_ms']:>8.1f}"
            )
        return "\n".join(lines)


async def _scenario(
    name: str, base: str, paths: list[str], concurrency: int, headers: dict[str, str] | None = None
) -> ScenarioResult:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while True:
            try:
                path = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            try:
                r = await client.get(path)
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - t) * 1000.0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits, headers=headers) as client:
        await client.get(paths[0])  # warm-up, not counted
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return ScenarioResult(
        name=name,
        requests=len(paths),
        concurrency=concurrency,
        errors=errors,
        seconds=seconds,
        latencies_ms=np.asarray(latencies),
    )


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
                return list(rng.choice(ids, count, replace=True))
    raise ValueError("known users come from the serving bundle and the data it was trained on: pass --artifacts")


def run_load_benchmark(
    *,
    url: str | None,
    artifacts: Path | None,
    requests: int = 400,
    concurrency: int = 8,
    n: int = 8,
    seed: int = 0,
    service_key: str | None = None,
) -> LoadReport:
    """``service_key`` authenticates to the API at ``url`` (default: ``VITRINE_SERVICE_KEY``); a server started
    here gets a key made up for the run."""
    rng = np.random.default_rng(seed)
    known = _known_users(artifacts, requests, rng)
    new = [f"bench-new-{seed}-{k}" for k in range(requests)]

    def run(base: str, key: str | None) -> LoadReport:
        headers = {"Authorization": f"Bearer {key}"} if key else None
        known_paths = [f"/v1/users/{u}/image-set?n={n}" for u in known]
        new_paths = [f"/v1/users/{u}/image-set?n={n}" for u in new]
        results = [
            asyncio.run(_scenario("known users", base, known_paths, concurrency, headers)),
            asyncio.run(_scenario("new users", base, new_paths, concurrency, headers)),
        ]
        return LoadReport(url=base, n=n, scenarios=results, cpu_count=os.cpu_count() or 0)

    if url:
        return run(url.rstrip("/"), service_key or os.environ.get("VITRINE_SERVICE_KEY"))
    if artifacts is None:
        raise ValueError("give --url of a running API, or --artifacts to start one")
    key = secrets.token_urlsafe(24)
    # one client sends a crowd's requests: the per-client rate limit would measure itself, not the service
    env = {"VITRINE_SERVICE_KEYS": key, "VITRINE_RATE_LIMIT_PER_SECOND": "0"}
    with serve_subprocess(artifacts, env) as base:
        return run(base, key)
