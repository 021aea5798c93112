"""Sessions shared by every server process through Redis, and image sets that keep serving when Redis fails.

The shared-session test starts two real ``vitrine serve`` processes on one Redis: session views posted to one
must shape every next set from either, as they would across uvicorn workers or hosts behind a balancer.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import ExitStack

import httpx
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.experiments.http_api import serve_subprocess

NOBODY_LISTENS = "redis://127.0.0.1:1/0"  # port 1: connection refused at once


def catalogue_items(trained_artifacts, k: int) -> list[str]:
    root, version = trained_artifacts
    return pd.read_parquet(root / version / "catalogue" / "items.parquet")["item_id"].iloc[:k].tolist()


def views(item_ids: list[str]) -> dict:
    return {"events": [{"item_id": i, "event_type": "view"} for i in item_ids]}


@pytest.fixture
def session_id(redis_cleanup) -> str:
    """A session id of the test's own, whose keys (under the servers' default prefix) are deleted afterwards."""
    sid = f"test-{uuid.uuid4().hex[:12]}"
    redis_cleanup.append(f"vitrine:session:{{{sid}}}:*")
    return sid


@pytest.mark.redis
def test_two_servers_on_one_redis_share_a_session(trained_artifacts, redis_url, session_id):
    root, _ = trained_artifacts
    with ExitStack() as stack:
        # the servers also keep the sets' latent codes in Redis: a minute's life leaves nothing behind
        env = {"VITRINE_REDIS_URL": redis_url, "VITRINE_IMAGE_TTL_SECONDS": "60"}
        urls = [stack.enter_context(serve_subprocess(root, env)) for _ in range(2)]
        clients = [stack.enter_context(httpx.Client(base_url=url, timeout=60)) for url in urls]
        path = "/v1/users/anon-shared/image-set"
        assert clients[1].get(path, params={"n": 4, "session_id": session_id}).json()["strategy"] == "cold_start"
        for item in catalogue_items(trained_artifacts, 5):  # five views, one post each, all to the first server
            r = clients[0].post(f"/v1/sessions/{session_id}/events", json=views([item]))
            assert r.status_code == 200, r.text
        assert r.json()["session_events"] == 5
        sets = [clients[k % 2].get(path, params={"n": 4, "session_id": session_id}).json() for k in range(10)]
    strategies = [s["strategy"] for s in sets]
    assert strategies.count("session") == 10, strategies
    # both servers fold in the same five views, so they draw the same conditions
    conditions = {tuple(tuple(sorted(img["condition"].items())) for img in s["images"]) for s in sets}
    assert len(conditions) == 1, conditions


@pytest.mark.redis
def test_an_app_on_redis_keeps_sessions_there(trained_artifacts, redis_url, session_id):
    root, _ = trained_artifacts
    with TestClient(create_app(Settings(artifacts=root, redis_url=redis_url))) as client:
        r = client.post(f"/v1/sessions/{session_id}/events", json=views(catalogue_items(trained_artifacts, 3)))
        assert r.status_code == 200 and r.json()["session_events"] == 3
    with redis.Redis.from_url(redis_url) as raw:
        assert raw.zcard(f"vitrine:session:{{{session_id}}}:events") == 3
        assert 0 < raw.ttl(f"vitrine:session:{{{session_id}}}:events") <= 86_400


@pytest.mark.redis
def test_every_key_an_app_writes_starts_with_its_redis_prefix(trained_artifacts, redis_url, redis_prefix):
    root, _ = trained_artifacts
    settings = Settings(artifacts=root, redis_url=redis_url, redis_prefix=redis_prefix, rate_limit_per_second=100)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/sessions/s-prefixed/events", json=views(catalogue_items(trained_artifacts, 2)))
        assert r.status_code == 200, r.text
        r = client.get("/v1/users/anon-prefixed/image-set", params={"n": 2, "session_id": "s-prefixed"})
        assert r.status_code == 200 and r.json()["strategy"] == "session"
    with redis.Redis.from_url(redis_url) as raw:
        kinds = {key.decode()[len(redis_prefix) :].split(":")[0] for key in raw.scan_iter(match=f"{redis_prefix}*")}
        assert {"session", "owner", "rate"} <= kinds, kinds  # the session, its shopper's link, the rate bucket
        assert raw.zcard(f"{redis_prefix}session:{{s-prefixed}}:events") == 2
        assert not raw.exists("vitrine:session:{s-prefixed}:events")  # nothing under the default prefix


@pytest.mark.parametrize("prefix", ["", "two words", "{slot}:", "x*", "a" * 65])
def test_a_redis_prefix_that_could_not_start_keys_is_refused(prefix):
    with pytest.raises(ValueError, match="Redis key prefix is 1-64 letters"):
        Settings(redis_url="redis://127.0.0.1:6379/0", redis_prefix=prefix)


def test_without_redis_image_sets_serve_and_session_posts_are_503(trained_artifacts, caplog):
    root, _ = trained_artifacts
    settings = Settings(artifacts=root, redis_url=NOBODY_LISTENS)
    with caplog.at_level(logging.ERROR), TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert any("does not answer" in r.getMessage() for r in caplog.records)  # said at start-up
        r = client.post("/v1/sessions/s1/events", json=views(catalogue_items(trained_artifacts, 2)))
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert "session store does not answer" in r.json()["detail"]
        r = client.get("/v1/users/anon-1/image-set", params={"n": 2, "session_id": "s1"})
        assert r.status_code == 200 and r.json()["strategy"] == "cold_start"  # served without the session
        assert any("without its events" in r.getMessage() for r in caplog.records)


def test_a_redis_url_that_is_not_one_stops_the_start(trained_artifacts):
    root, _ = trained_artifacts
    with (
        pytest.raises(ValueError, match="Redis URL"),
        TestClient(create_app(Settings(artifacts=root, redis_url="http://x"))),
    ):
        pass
