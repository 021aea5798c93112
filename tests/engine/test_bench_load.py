"""``vitrine bench load``'s scenarios against a small fake API (in process, through httpx's ASGI transport): what
each scenario asks, how answers are counted, and that the overload is an open loop."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from engine.benchmarks.load import LoadPlan, ScenarioResult, closed_loop, run_scenarios, server_counts

METRICS = """\
# TYPE vitrine_set_cache_hits counter
vitrine_set_cache_hits_total 7.0
# TYPE vitrine_admission_rejections counter
vitrine_admission_rejections_total{reason="full"} 5.0
vitrine_admission_rejections_total{reason="timeout"} 1.0
"""


class FakeApi:
    """Image sets answered 200 after a short pause, except: one new shopper gets a 500, and the overload's
    shoppers are all held until ``hold`` of them have arrived, then the first two get 200 and the rest 503."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.asked: list[str] = []
        self.sessions: dict[str, list[dict]] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.overload_arrivals = 0
        self.all_arrived = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/users/{user}/image-set", self.image_set),
                Route("/v1/users/{user}/recommendations", self.recommendations),
                Route("/v1/sessions/{session}/events", self.events, methods=["POST"]),
                Route("/metrics", lambda _: PlainTextResponse(METRICS)),
            ]
        )

    async def image_set(self, request: Request) -> JSONResponse:
        user = request.path_params["user"]
        self.asked.append(str(request.url.path) + ("?" + request.url.query if request.url.query else ""))
        if "-over-" in user:
            position = self.overload_arrivals
            self.overload_arrivals += 1
            if self.overload_arrivals == self.hold:
                self.all_arrived.set()
            await self.all_arrived.wait()  # a closed loop would never get here for every request
            return JSONResponse({}, status_code=200 if position < 2 else 503)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.002)
        self.in_flight -= 1
        return JSONResponse({}, status_code=500 if user.endswith("-new-0-3") else 200)

    async def recommendations(self, request: Request) -> JSONResponse:
        return JSONResponse({"items": [{"item_id": f"i{k}"} for k in range(10)]})

    async def events(self, request: Request) -> JSONResponse:
        self.sessions[request.path_params["session"]] = (await request.json())["events"]
        return JSONResponse({"accepted": 3})


def run(api: FakeApi, plan: LoadPlan) -> tuple[list[ScenarioResult], dict]:
    async def go() -> tuple[list[ScenarioResult], dict]:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(base_url="http://fake", transport=transport) as client:
            results = await asyncio.wait_for(run_scenarios(client, plan), timeout=60)
            return results, await server_counts(client)

    return asyncio.run(go())


def test_five_scenarios_count_accepted_refused_and_other_answers():
    requests, concurrency = 8, 2
    api = FakeApi(hold=requests)
    plan = LoadPlan(known=["k1", "k2", "k3"], requests=requests, concurrency=concurrency, n=4, prefix="b")
    results, server = run(api, plan)
    by_name = {r.name: r.to_dict() for r in results}

    assert list(by_name) == ["known", "sessions", "new", "known x2", "overload"]
    assert [by_name[s]["concurrency"] for s in ("known", "sessions", "new", "known x2")] == [2, 2, 2, 4]
    assert all(d["requests"] == requests for d in by_name.values())
    # known shoppers: each asked once to warm the cache, then twice `requests` times in all, and nobody else
    known = [p for p in api.asked if "/users/k" in p]
    assert len(known) == 3 + 2 * requests and {p.split("/")[3] for p in known} == {"k1", "k2", "k3"}
    # sessions: posted first, three views of recommended items each; then a new shopper's set in each session
    assert len(api.sessions) == requests
    assert all(len(e) == 3 and {v["event_type"] for v in e} == {"view"} for e in api.sessions.values())
    assert sum("session_id=" in p for p in api.asked) == requests
    new = by_name["new"]
    assert (new["ok"], new["other_5xx"], new["share_503"], new["statuses"]) == (7, 1, 0.0, {"200": 7, "500": 1})
    assert api.most_in_flight <= 2 * concurrency  # closed loops: never more requests out than clients
    over = by_name["overload"]
    assert over["mode"] == "open" and over["offered_rps"] > 0
    assert (over["ok"], over["share_503"], over["other_5xx"], over["other_failures"]) == (2, 0.75, 0, 0)
    assert server == {
        "vitrine_set_cache_hits_total": 7,
        "vitrine_admission_rejections_total": {"full": 5, "timeout": 1},
    }


def test_percentiles_are_of_accepted_requests_only():
    result = ScenarioResult(
        name="x",
        requests=4,
        seconds=2.0,
        statuses={200: 2, 503: 1, 0: 1},
        latencies_ms=np.array([10.0, 30.0]),
        refused_ms=np.array([1.0]),
        concurrency=1,
    )
    d = result.to_dict()
    assert (d["p50_ms"], d["throughput_rps"], d["rps"], d["errors"], d["refused_p50_ms"]) == (20.0, 1.0, 2.0, 2, 1.0)
    assert (d["share_503"], d["other_5xx"], d["other_failures"]) == (0.25, 0, 1)


def test_no_answer_is_counted_as_a_failure_not_a_crash():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def go() -> ScenarioResult:
        async with httpx.AsyncClient(base_url="http://nowhere", transport=httpx.MockTransport(refuse)) as client:
            return await closed_loop(client, "down", ["/a", "/b"], 2)

    d = asyncio.run(go()).to_dict()
    assert (d["ok"], d["other_failures"], d["statuses"]) == (0, 2, {"0": 2})


def test_the_real_client_reads_answers_and_counts_no_answer_as_0():
    """AioClient, what the benchmark sends through against a server: statuses, bodies, JSON posts; a refused
    connection is status 0, as in httpx."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from engine.benchmarks.load import AioClient, _timed_get

    async def echo(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        auth = request.headers.get("Authorization")
        return web.json_response({"body": body, "auth": auth}, status=201 if body else 200)

    async def go() -> None:
        app = web.Application()
        app.router.add_route("*", "/echo", echo)
        async with TestServer(app) as server:
            base = str(server.make_url("")).rstrip("/")
            async with AioClient(base, headers={"Authorization": "Bearer k"}, timeout=10) as client:
                got = await client.get("/echo")
                assert (got.status_code, got.json()) == (200, {"body": None, "auth": "Bearer k"})
                posted = await client.post("/echo", json={"a": 1})
                assert posted.status_code == 201 and posted.json()["body"] == {"a": 1}
                missing = await client.get("/nowhere")
                assert missing.status_code == 404
                with pytest.raises(RuntimeError, match="404"):
                    missing.raise_for_status()
        async with AioClient(base, headers={}, timeout=5) as client:  # the server has stopped
            status, ms = await _timed_get(client, "/echo")
            assert status == 0 and ms >= 0

    asyncio.run(go())
