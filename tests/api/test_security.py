"""Who may ask what: service keys, shopper tokens scoped to one shopper, admin-only salts, demo routes off by
default; and what the server keeps of a shopper's id: only its pseudonym, in the store and the logs."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from features.pseudonyms import load_or_create_keyring
from tests.api.experiment_fixture import running_window

SERVICE = "service-key-for-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-tests"
AS_SERVICE = {"Authorization": f"Bearer {SERVICE}"}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXPERIMENT = {
    "name": "security-test",
    "salt": "a-secret-salt",
    **running_window(),
    "variants": [{"name": "control", "strategy": "popular"}, {"name": "treatment", "strategy": "personalised"}],
}


@pytest.fixture
def settings(trained_artifacts, tmp_path):
    return Settings(
        artifacts=trained_artifacts[0],
        service_keys=SERVICE,
        admin_token=ADMIN_TOKEN,
        open_access=False,
        database_url=f"sqlite:///{tmp_path}/events.db",
    )


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def token_for(client, user: str) -> dict[str, str]:
    r = client.post("/v1/tokens", json={"user_id": user}, headers=AS_SERVICE)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_without_a_credential_shopper_data_is_401_and_with_a_wrong_one_too(client, shopper_ids):
    user = shopper_ids[0]
    for method, path, body in [
        ("get", f"/v1/users/{user}/image-set", None),
        ("get", f"/v1/users/{user}/recommendations", None),
        ("post", "/v1/events", {"events": [{"client_event_id": "e1", "kind": "view", "item_id": "x"}]}),
        ("post", "/v1/sessions/s1/events", {"events": [{"item_id": "x", "event_type": "view"}]}),
        ("get", "/v1/experiments", None),
        ("delete", f"/v1/users/{user}", None),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 401 and "Bearer" in r.json()["detail"], (path, r.text)
        r = client.request(method, path, json=body, headers={"Authorization": "Bearer not-a-key"})
        assert r.status_code == 401, (path, r.text)
    assert client.get("/healthz").status_code == 200  # liveness stays open


def test_a_shopper_token_reads_only_its_own_shopper(client, shopper_ids):
    me, other = shopper_ids[:2]
    mine = token_for(client, me)
    r = client.get(f"/v1/users/{me}/image-set", params={"n": 2}, headers=mine)
    assert r.status_code == 200 and r.json()["user_id"] == me and r.json()["strategy"] == "personalised"
    assert client.get(f"/v1/users/{me}/recommendations", headers=mine).status_code == 200
    for path in (f"/v1/users/{other}/image-set", f"/v1/users/{other}/recommendations"):
        r = client.get(path, headers=mine)
        assert r.status_code == 403 and "only its own" in r.json()["detail"]
    # back-end routes are not for browsers
    assert client.get("/v1/experiments", headers=mine).status_code == 403
    assert client.delete(f"/v1/users/{me}", headers=mine).status_code == 403
    assert client.post("/v1/tokens", json={"user_id": other}, headers=mine).status_code == 403


def test_a_shopper_token_writes_only_its_own_events(client, settings, shopper_ids, trained_artifacts):
    me, other = shopper_ids[:2]
    mine = token_for(client, me)
    theirs = {"client_event_id": "e-other", "kind": "click", "user_id": other, "image_id": "img"}
    assert client.post("/v1/events", json={"events": [theirs]}, headers=mine).status_code == 403
    own = [
        {"client_event_id": "e-own", "kind": "click", "user_id": me, "image_id": "img"},
        {"client_event_id": "e-anon", "kind": "click", "session_id": "s9", "image_id": "img"},  # no user: the token's
    ]
    r = client.post("/v1/events", json={"events": own}, headers=mine)
    assert r.status_code == 200 and r.json()["stored"] == 2
    pseudonym = load_or_create_keyring(trained_artifacts[0])(me)
    db = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        users = {row[0] for row in conn.execute("SELECT user_id FROM events")}
    assert users == {pseudonym}


def test_forged_expired_and_other_servers_tokens_are_refused(client, shopper_ids, trained_artifacts):
    from api.auth import ShopperTokens

    me = shopper_ids[0]
    pseudonym = load_or_create_keyring(trained_artifacts[0])(me)
    path = f"/v1/users/{me}/image-set"
    elsewhere, _ = ShopperTokens(b"another server's image key!").issue(pseudonym, 600)
    expired, _ = client.app.state.tokens.issue(pseudonym, 600, now=0.0)
    valid = client.post("/v1/tokens", json={"user_id": me}, headers=AS_SERVICE).json()["token"]
    forged = valid[:-2] + ("AA" if not valid.endswith("AA") else "BB")
    for token in (elsewhere, expired, forged, "st1.garbage", "st1."):
        r = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "expired" in r.json()["detail"], token


def test_experiment_salts_are_for_the_admin_only(client):
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=AS_ADMIN).status_code == 201
    listed = client.get("/v1/experiments", headers=AS_SERVICE).json()
    assert listed and all("salt" not in e for e in listed)
    report = client.get("/v1/experiments/security-test/report", headers=AS_SERVICE).json()
    assert "salt" not in report["experiment"] and "a-secret-salt" not in json.dumps(report)
    assert client.get("/v1/experiments", headers=AS_ADMIN).json()[0]["salt"] == "a-secret-salt"


def test_demo_routes_are_off_unless_the_server_runs_with_demo(client, settings, demo_store, shopper_ids):
    for path in ("/demo", "/demo/users.json", "/demo/experiments"):
        assert client.get(path).status_code == 404, path
    assert client.post("/demo/token", json={"user_id": "U1"}).status_code == 404
    demo = settings.model_copy(update={"demo": True, "demo_data": demo_store})
    with TestClient(create_app(demo)) as c:
        users = c.get("/demo/users.json", params={"k": 5}).json()
        assert users == shopper_ids[:5]  # the store's own ids, which the page shows; never pseudonyms
        token = c.post("/demo/token", json={"user_id": users[0]}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert c.get(f"/v1/users/{users[0]}/image-set", params={"n": 2}, headers=headers).status_code == 200
        assert c.get(f"/v1/users/{users[1]}/image-set", params={"n": 2}, headers=headers).status_code == 403


def test_an_email_address_is_not_a_shopper_id(client):
    r = client.get("/v1/users/jane.doe@example.com/image-set", headers=AS_SERVICE)
    assert r.status_code == 422 and "e-mail" in r.json()["detail"]


def test_the_store_and_the_access_log_hold_pseudonyms_never_the_shops_ids(
    client, settings, shopper_ids, trained_artifacts, caplog
):
    user = shopper_ids[3]
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=AS_ADMIN).status_code == 201
    with caplog.at_level(logging.INFO):
        r = client.get(f"/v1/users/{user}/image-set", params={"n": 2, "session_id": "sess-1"}, headers=AS_SERVICE)
        assert r.status_code == 200 and r.json()["experiment"] == "security-test"
        event = {"client_event_id": "p1", "kind": "purchase", "user_id": user, "item_id": "x", "revenue": 3.0}
        client.post("/v1/events", json={"events": [event]}, headers=AS_SERVICE)
    served = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")  # httpx: the test's client
    assert user not in served
    assert "GET /v1/users/{user_id}/image-set 200" in served  # the route's template, not its path
    db = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert user not in dump
    assert load_or_create_keyring(trained_artifacts[0])(user) in dump


def test_sql_errors_carry_no_parameters(tmp_path):
    import sqlalchemy as sa

    from engine.experiments.eventstore import EventStore
    from engine.experiments.tables import events_t

    secret = "jane-doe-customer-4711"
    with EventStore(f"sqlite:///{tmp_path}/e.db") as store:
        row = {"client_event_id": "dup", "kind": "view", "user_id": secret, "ts": 1.0, "received_at": 1.0}
        with store._engine.begin() as conn:
            conn.execute(sa.insert(events_t), row)
            with pytest.raises(sa.exc.IntegrityError) as caught:
                conn.execute(sa.insert(events_t), row)
    assert secret not in str(caught.value)
