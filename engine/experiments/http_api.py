"""The Vitrine API as the experiment simulation and the load benchmark reach it.

:class:`ApiClient` makes the few calls the simulation needs over any httpx-compatible client (a real one, or
FastAPI's TestClient in tests); :func:`remote_api` yields one for an API running at a URL, :func:`local_api`
for a ``vitrine serve`` subprocess (:func:`serve_subprocess`) on a bundle, with the client clock on, an
admin token made up for the run and a temporary event store.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from engine.experiments.eventstore import Event

EVENTS_PER_POST = 1000  # the most POST /v1/events takes


class ApiClient:
    """The few calls the simulation makes, over any httpx-compatible client (a real one, or FastAPI's
    TestClient in tests). Every answer other than the expected status is an error naming the call."""

    def __init__(self, client: httpx.Client, *, admin_token: str | None) -> None:
        self.client = client
        self.admin_token = admin_token
        self.requests = 0

    def _check(self, r: httpx.Response, what: str, status: int = 200) -> Any:
        self.requests += 1
        if r.status_code != status:
            raise RuntimeError(f"{what}: HTTP {r.status_code}: {r.text[:400]}")
        return r.json()

    def create_experiment(self, config: Mapping[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        r = self.client.post("/v1/admin/experiments", json=dict(config), headers=headers)
        return self._check(r, f"creating experiment {config.get('name')}", 201)

    def image_set(self, user_id: str, *, at: float, n: int, neighbours: int, **params: str) -> dict[str, Any]:
        query = {"n": n, "neighbours": neighbours, "at": iso_utc(at), **params}
        return self._check(self.client.get(f"/v1/users/{user_id}/image-set", params=query), f"image set of {user_id}")

    def post_events(self, events: Sequence[Event]) -> None:
        for start in range(0, len(events), EVENTS_PER_POST):
            chunk = [_event_json(e) for e in events[start : start + EVENTS_PER_POST]]
            body = self._check(self.client.post("/v1/events", json={"events": chunk}), "posting events")
            if body["stored"] + body["duplicates"] != len(chunk):
                raise RuntimeError(f"posting events: {len(chunk)} sent, {body['stored'] + body['duplicates']} answered")

    def session_events(self, session_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Post session events (item_id, event_type, timestamp); returns how many the session now holds."""
        r = self.client.post(f"/v1/sessions/{session_id}/events", json={"events": list(events)})
        return self._check(r, f"posting the events of session {session_id}")["session_events"]

    def reload(self) -> str:
        """Make the server load the registry's CURRENT bundle now (``POST /v1/admin/reload``); returns it."""
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        return self._check(self.client.post("/v1/admin/reload", headers=headers), "reloading the bundle")["serving"]

    def report(self, name: str, as_of: datetime) -> dict[str, Any]:
        r = self.client.get(f"/v1/experiments/{name}/report", params={"as_of": iso_utc(as_of.timestamp())})
        return self._check(r, f"report of {name}")


def iso_utc(ts: float) -> str:
    """``ts`` (epoch seconds) as the API's ISO 8601 UTC time, e.g. 2024-03-04T00:00:00Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _event_json(e: Event) -> dict[str, Any]:
    """The event as ``POST /v1/events`` takes it (its time as an ISO 8601 string, as the schema says)."""
    return {k: iso_utc(v) if k == "ts" else v for k, v in asdict(e).items() if v is not None}


@contextmanager
def remote_api(url: str, admin_token: str | None) -> Iterator[ApiClient]:
    """A running API at ``url`` (it must run with ``VITRINE_CLIENT_CLOCK=1``; ``admin_token`` creates the
    experiments)."""
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        yield ApiClient(client, admin_token=admin_token)


@contextmanager
def local_api(
    artifacts: Path, *, database_url: str | None = None, server: Callable[..., Any] | None = None
) -> Iterator[ApiClient]:
    """A uvicorn subprocess on ``artifacts`` with the client clock on, an admin token made up for the run and
    an event store in a temporary folder (or ``database_url``); yields an :class:`ApiClient` to it."""

    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="vitrine-sim-") as tmp:
        env = {
            "VITRINE_CLIENT_CLOCK": "1",
            "VITRINE_ADMIN_TOKEN": token,
            "VITRINE_DATABASE_URL": database_url or f"sqlite:///{tmp}/events.db",
            "VITRINE_RATE_LIMIT_PER_SECOND": "0",  # one client sends a crowd's requests: no per-client limit
        }
        with (
            (server or serve_subprocess)(artifacts, env) as url,
            # the admin token: the simulated storefront reads and writes every shopper's data, and runs experiments
            httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client,
        ):
            yield ApiClient(client, admin_token=token)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_subprocess(artifacts: Path, env: Mapping[str, str] | None = None, *, workers: int = 1) -> Iterator[str]:
    """A `vitrine serve` subprocess serving ``artifacts`` on a free local port (extra ``env``: VITRINE_* settings),
    with ``workers`` uvicorn workers."""
    port = _free_port()
    env = {**os.environ, **(env or {}), "VITRINE_ARTIFACTS": str(Path(artifacts).resolve())}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--artifacts",
            str(Path(artifacts).resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with code {proc.returncode} before it was ready")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("the API did not become healthy within 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
