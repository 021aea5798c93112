"""Inputs that cannot hurt: every limit answers with its status code and says what to fix, and the OpenAPI
document states it (docs/API.md, "Limits").

Revenue has a maximum and a report survives any revenue already stored; a reused client_event_id with another
payload is a 409; event times outside [now − retention, now + 5 min] are 422; bodies are bounded (413); each
client key has a token bucket (429 with Retry-After); generation has bounded concurrency (503 with
Retry-After); any string as an image id is a 404 or a PNG, never a 5xx.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.settings import Settings
from engine.experiments import Experiment, ExperimentRegistry, Variant
from engine.experiments.eventstore import Event, ExposureIn

NOW = datetime.now(UTC)


def app_client(root, tmp_path, **overrides) -> TestClient:
    settings = Settings(artifacts=root, database_url=f"sqlite:///{tmp_path}/events.db", **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(trained_artifacts, tmp_path):
    with app_client(trained_artifacts[0], tmp_path) as c:
        yield c


def purchase(cid: str, revenue: float, **fields) -> dict:
    return {"client_event_id": cid, "kind": "purchase", "user_id": "u1", "item_id": "i1", "revenue": revenue, **fields}


def test_absurd_revenue_is_422_and_the_schema_states_the_maximum(client):
    r = client.post("/v1/events", json={"events": [purchase("p1", 1.7e308), purchase("p2", 1.7e308)]})
    assert r.status_code == 422, r.text
    assert "above the largest this service accepts (1e+06)" in r.json()["detail"]
    assert client.post("/v1/events", json={"events": [purchase("p3", 999_999.0)]}).status_code == 200
    revenue = client.get("/openapi.json").json()["components"]["schemas"]["PurchaseIn"]["properties"]["revenue"]
    assert (revenue["minimum"], revenue["maximum"]) == (0, 1e6)


def test_a_report_survives_revenue_stored_before_the_limit(client):
    store = client.app.state.events
    exp = Experiment(
        name="rich",
        start=NOW - timedelta(days=2),
        stop=NOW + timedelta(days=2),
        variants=(Variant(name="control", strategy="popular"), Variant(name="treatment")),
    )
    ExperimentRegistry(store).create(exp)
    t0 = (NOW - timedelta(days=1)).timestamp()
    for arm in ("control", "treatment"):
        units = [f"{arm}-{i}" for i in range(3)]
        store.record_exposures("rich", [ExposureIn(unit_id=u, ts=t0, user_id=u) for u in units], lambda u, a=arm: a)
    rich = [
        Event(
            client_event_id=f"old-{k}", kind="purchase", ts=t0 + 60, user_id="treatment-0", item_id="i", revenue=1.7e308
        )
        for k in range(2)
    ]
    store.add_events(rich)  # as an older version of the service accepted them
    r = client.get("/v1/experiments/rich/report")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variants"][1]["revenue"] is None
    assert any("too large to add up" in w for w in body["warnings"])


def test_a_reused_event_id_with_another_payload_is_409_and_a_true_resend_a_duplicate(client):
    view = {"client_event_id": "e1", "kind": "view", "user_id": "u1", "item_id": "i1", "ts": NOW.isoformat()}
    assert client.post("/v1/events", json={"events": [view]}).json()["results"][0]["status"] == "stored"
    again = client.post("/v1/events", json={"events": [view]})
    assert again.status_code == 200 and again.json()["results"] == [{"client_event_id": "e1", "status": "duplicate"}]
    other = client.post("/v1/events", json={"events": [{**view, "client_event_id": "e2"}, {**view, "item_id": "i2"}]})
    assert other.status_code == 409, other.text
    assert other.json()["errors"] == [
        {"index": 1, "client_event_id": "e1", "msg": "client_event_id 'e1' was sent before with another item_id"}
    ]
    # all or nothing: e2, valid, was not stored either
    assert client.post("/v1/events", json={"events": [{**view, "client_event_id": "e2"}]}).json()["stored"] == 1


@pytest.mark.parametrize(
    ("ts", "fragment"),
    [
        ((NOW - timedelta(days=366)).isoformat(), "the oldest time this service accepts"),
        ((NOW + timedelta(minutes=10)).isoformat(), "in the future"),
        ("1970-01-01T00:00:00Z", "the oldest time"),
        (0, "must be an ISO 8601 date-time"),
        ("1714567890", "must be an ISO 8601 date-time"),
    ],
)
def test_event_times_outside_the_window_are_422(client, ts, fragment):
    view = {"client_event_id": uuid.uuid4().hex, "kind": "view", "user_id": "u1", "item_id": "i1", "ts": ts}
    r = client.post("/v1/events", json={"events": [view]})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    future = {"item_id": "x", "event_type": "view", "timestamp": (NOW + timedelta(hours=1)).isoformat()}
    s = client.post("/v1/sessions/s1/events", json={"events": [future]})
    assert s.status_code == 422 and "outside the accepted window" in s.json()["detail"]


def test_a_simulation_with_the_client_clock_may_post_any_time(trained_artifacts, tmp_path):
    with app_client(trained_artifacts[0], tmp_path, client_clock=True) as c:
        old = {"client_event_id": "sim", "kind": "view", "user_id": "u1", "item_id": "i1", "ts": "2024-05-01T00:00:00Z"}
        assert c.post("/v1/events", json={"events": [old]}).status_code == 200
        schema = c.get("/openapi.json").json()
        assert (
            "VITRINE_CLIENT_CLOCK" in schema["components"]["schemas"]["ItemEventIn"]["properties"]["ts"]["description"]
        )


def test_the_schema_says_which_kinds_need_what(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"item_id", "kind", "client_event_id"} <= set(schemas["ItemEventIn"]["required"])
    assert {"item_id", "revenue"} <= set(schemas["PurchaseIn"]["required"])
    assert "item_id" not in schemas.get("ClickIn", {}).get("required", [])
    events = schemas["EventsIn"]["properties"]["events"]
    assert events["maxItems"] == 1000 and events["items"]["discriminator"]["propertyName"] == "kind"
    view_without_item = {"client_event_id": "v", "kind": "view", "user_id": "u1"}
    assert client.post("/v1/events", json={"events": [view_without_item]}).status_code == 422


def test_the_image_set_limits_are_stated_and_at_is_absent_without_the_client_clock(client):
    op = client.get("/openapi.json").json()["paths"]["/v1/users/{user_id}/image-set"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["n"]["schema"]["maximum"] == 32 and params["neighbours"]["schema"]["maximum"] == 20
    assert "at" not in params
    assert {"429", "503"} <= set(op["responses"])
    assert op["responses"]["429"]["headers"]["Retry-After"]["required"] is True


def test_as_of_must_be_a_date_time(client):
    r = client.get("/v1/experiments/any/report", params={"as_of": "0.5"})
    assert r.status_code == 422 and "as_of" in r.json()["detail"]


def test_a_body_over_the_limit_is_413_whether_or_not_it_says_its_length(trained_artifacts, tmp_path):
    with app_client(trained_artifacts[0], tmp_path, max_body_bytes=2048) as c:
        events = [purchase(f"p{i}", 1.0) for i in range(40)]
        r = c.post("/v1/events", json={"events": events})
        assert r.status_code == 413
        assert "larger than the 2048 bytes this service accepts (VITRINE_MAX_BODY_BYTES)" in r.json()["detail"]
        body = json.dumps({"events": events}).encode()
        chunked = c.post(
            "/v1/events", content=iter([body[:1500], body[1500:]]), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413 and "VITRINE_MAX_BODY_BYTES" in chunked.json()["detail"]
        assert c.post("/v1/events", json={"events": events[:2]}).status_code == 200
        assert "413" in c.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["responses"]


def test_each_client_key_has_its_own_bucket(trained_artifacts, tmp_path):
    with app_client(trained_artifacts[0], tmp_path, rate_limit_per_second=0.01, rate_limit_burst=2) as c:
        assert [c.get("/v1/experiments").status_code for _ in range(2)] == [200, 200]
        r = c.get("/v1/experiments")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "too many requests" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200  # health checks never use up tokens
        other = {"Authorization": "Bearer another-client-credential-0123"}  # another key: a bucket of its own
        assert c.get("/openapi.json", headers=other).status_code == 200


def test_generation_beyond_its_capacity_is_503_with_retry_after(trained_artifacts, tmp_path, shopper_ids):
    settings = {"max_concurrent_generations": 1, "max_queued_generations": 0}
    with app_client(trained_artifacts[0], tmp_path, **settings) as c:
        gate = c.app.state.service.gate
        with gate.admit():  # the one place is taken, and no one may wait
            r = c.get(f"/v1/users/{shopper_ids[1]}/image-set", params={"n": 2})
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == str(gate.retry_after) and "retry in" in r.json()["detail"]
        assert c.get(f"/v1/users/{shopper_ids[1]}/image-set", params={"n": 2}).status_code == 200


@pytest.fixture(scope="module")
def image_client(trained_artifacts, tmp_path_factory):
    with app_client(trained_artifacts[0], tmp_path_factory.mktemp("ids")) as c:
        yield c


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=120) | st.from_regex(r"[A-Za-z0-9_-]{8}\.[0-9]{1,25}\.[0-9a-f]{16}\.[A-Za-z0-9_-]{22}"))
def test_any_string_as_an_image_id_is_404_or_a_png_never_5xx(image_client, text):
    r = image_client.get(f"/v1/images/{quote(text, safe='')}.png")
    assert r.status_code in (200, 404), (text, r.status_code, r.text[:200])
    if r.status_code == 200:
        assert r.headers["content-type"] == "image/png"
