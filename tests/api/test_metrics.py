"""GET /metrics: what it counts (read back from the exposition text), who may read it, and the admission gate's
bound under a crowd of fresh-set requests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.settings import Settings

IMAGE_SET = "/v1/users/{user_id}/image-set"
METRICS_TOKEN = "metrics-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


def app_client(root, tmp_path, **overrides) -> TestClient:
    settings = Settings(artifacts=root, database_url=f"sqlite:///{tmp_path}/events.db", **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def samples(client: TestClient, **headers: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of GET /metrics: (name, its labels) → value."""
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_strategy_and_cache_hit(trained_artifacts, tmp_path, shopper_ids):
    known = shopper_ids[0]
    with app_client(trained_artifacts[0], tmp_path) as c:
        for user in (known, known, "a-shopper-never-seen"):  # fresh, from the set cache, cold start
            assert c.get(f"/v1/users/{user}/image-set", params={"n": 2}).status_code == 200
        assert c.get("/v1/nowhere").status_code == 404
        text = c.get("/metrics").text
        found = samples(c)

    assert known not in text and "a-shopper-never-seen" not in text  # templates, never paths
    route = {"method": "GET", "route": IMAGE_SET, "status_class": "2xx"}
    assert value(found, "vitrine_http_requests_total", **route) == 3
    assert value(found, "vitrine_http_request_duration_seconds_count", **route) == 3
    assert value(found, "vitrine_http_request_duration_seconds_bucket", **route, le="+Inf") == 3
    assert value(found, "vitrine_http_requests_total", method="GET", route="(no route)", status_class="4xx") == 1
    by_strategy = {
        s: value(found, "vitrine_image_set_duration_seconds_count", strategy=s)
        for s in ("personalised", "cached", "cold_start")
    }
    assert by_strategy == {"personalised": 1, "cached": 1, "cold_start": 1}
    assert value(found, "vitrine_set_cache_hits_total") == 1
    assert value(found, "vitrine_set_cache_misses_total") == 2
    assert ("vitrine_precomputed_set_hits_total", frozenset()) in found  # defined, at 0, for the batch sets
    assert value(found, "vitrine_generations_running_limit") == 4  # the default VITRINE_MAX_CONCURRENT_GENERATIONS


def test_a_refused_generation_is_a_counted_503_and_the_gate_is_visible(trained_artifacts, tmp_path, shopper_ids):
    with app_client(trained_artifacts[0], tmp_path, max_concurrent_generations=1, max_queued_generations=0) as c:
        gate = c.app.state.service.gate
        with gate.admit():  # the one place is taken, and no one may wait
            held = samples(c)
            assert c.get(f"/v1/users/{shopper_ids[2]}/image-set", params={"n": 2}).status_code == 503
        found = samples(c)
    assert value(held, "vitrine_generations_running") == 1
    assert value(found, "vitrine_generations_running") == 0
    assert value(found, "vitrine_admission_rejections_total", reason="full") == 1
    assert value(found, "vitrine_admission_rejections_total", reason="timeout") == 0
    refused = {"method": "GET", "route": IMAGE_SET, "status_class": "5xx"}
    assert value(found, "vitrine_http_requests_total", **refused) == 1


@pytest.mark.parametrize(
    ("settings", "credential", "status"),
    [
        ({}, None, 403),  # no token configured: metrics are off, saying how to turn them on
        ({"metrics_token": METRICS_TOKEN}, None, 401),
        ({"metrics_token": METRICS_TOKEN}, "not-the-metrics-token-0123", 403),
        ({"metrics_token": METRICS_TOKEN}, METRICS_TOKEN, 200),
        ({"metrics_token": METRICS_TOKEN, "admin_token": ADMIN_TOKEN}, ADMIN_TOKEN, 200),
        ({"admin_token": ADMIN_TOKEN, "service_keys": "service-key-0123456789"}, "service-key-0123456789", 403),
        ({"open_access": True}, None, 200),
    ],
)
def test_only_the_metrics_or_admin_token_reads_metrics_on_a_closed_server(
    trained_artifacts, tmp_path, settings, credential, status
):
    with app_client(trained_artifacts[0], tmp_path, **{"open_access": False, **settings}) as c:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        r = c.get("/metrics", headers=headers)
    assert r.status_code == status, r.text
    if status == 403 and not settings:
        assert "VITRINE_METRICS_TOKEN" in r.json()["detail"]


def test_a_crowd_of_fresh_sets_runs_one_waits_one_and_the_rest_are_refused_at_once(trained_artifacts, tmp_path):
    """Behaviour, not timing: while one generation is held, exactly one more waits and every other request is
    answered 503 before the held one is let go, so accepted work never exceeds the gate's two places."""
    crowd = 6
    with app_client(
        trained_artifacts[0], tmp_path, max_concurrent_generations=1, max_queued_generations=1, rate_limit_per_second=0
    ) as c:
        service = c.app.state.service
        generator = service.personaliser.generator
        release, entered = threading.Event(), threading.Semaphore(0)
        render = generator.render

        def held_render(*args, **kwargs):
            entered.release()
            assert release.wait(60), "the test never released the generation"
            return render(*args, **kwargs)

        generator.render = held_render  # type: ignore[method-assign]
        answered: list[int] = []

        def ask(k: int) -> int:
            status = c.get(f"/v1/users/crowd-{k}/image-set", params={"n": 2}).status_code  # cold start: render()
            answered.append(status)
            return status

        with ThreadPoolExecutor(crowd) as pool:
            futures = [pool.submit(ask, k) for k in range(crowd)]
            assert entered.acquire(timeout=60)  # one generation holds the place
            for _ in range(600):  # until every request but the running and the waiting one is answered
                if len(answered) >= crowd - 2 and service.gate.waiting == 1:
                    break
                threading.Event().wait(0.1)
            early = sorted(answered)
            running, waiting = service.gate.running, service.gate.waiting
            release.set()
            statuses = sorted(f.result(timeout=60) for f in futures)
        generator.render = render  # type: ignore[method-assign]
        found = samples(c)

    assert (running, waiting) == (1, 1)
    assert early == [503] * (crowd - 2)  # refused while the place was still held: no one queued behind
    assert statuses == [200, 200] + [503] * (crowd - 2)
    assert value(found, "vitrine_admission_rejections_total", reason="full") == crowd - 2


WORKER = """
import sys
from fastapi.testclient import TestClient
from api.app import create_app
from api.settings import Settings

settings = Settings(artifacts=sys.argv[1], database_url=f"sqlite:///{sys.argv[1]}/events.db", open_access=True)
with TestClient(create_app(settings), raise_server_exceptions=False) as c:
    assert c.get("/healthz").status_code == 503  # no bundle: the worker needs none to count requests
    assert "vitrine_http_requests_total" in c.get("/metrics").text
"""


def test_workers_sharing_a_multiprocess_folder_are_summed_and_a_stopped_ones_gauges_leave(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    workers = []
    for k in range(2):  # two worker processes at once, each stopping cleanly
        artifacts = tmp_path / f"worker{k}"
        artifacts.mkdir()
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, str(artifacts)], env=env))
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    healthz = {"method": "GET", "route": "/healthz", "status_class": "5xx"}
    assert value(found, "vitrine_http_requests_total", **healthz) == 2  # one from each worker
    assert value(found, "vitrine_generations_running_limit") == 0  # both stopped: their gauges left the sums
