"""The right to erasure: a shopper's events, exposures, sessions and cached sets go at once, serving treats
them as new from that moment, the next training leaves them out, and the audit finds nothing left."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.experiments.eventstore import EventStore
from engine.serving.privacy_ops import audit_shopper, forget_shopper, retain
from features.pseudonyms import load_or_create_keyring, rotate_keyring
from tests.api.experiment_fixture import running_window

ADMIN = {"Authorization": "Bearer erasure-admin"}
EXPERIMENT = {
    "name": "erasure-test",
    **running_window(),
    "variants": [{"name": "a", "strategy": "personalised"}, {"name": "b", "strategy": "personalised"}],
}


@pytest.fixture
def root(trained_artifacts, tmp_path):
    """A copy of the trained artifacts (keyring included): erasures write its register."""
    dst = tmp_path / "artifacts"
    shutil.copytree(trained_artifacts[0], dst)
    return dst


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/events.db"


def _client(root, db_url):
    settings = Settings(artifacts=root, database_url=db_url, admin_token="erasure-admin")
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _shop(client, user: str, session: str) -> dict:
    """The shopper's set (exposure recorded), a session event, a purchase; returns the set."""
    shown = client.get(f"/v1/users/{user}/image-set", params={"n": 3, "session_id": session})
    assert shown.status_code == 200 and shown.json()["experiment"] == "erasure-test"
    item = shown.json()["images"][0]["nearest_items"][0]["item_id"]
    r = client.post(f"/v1/sessions/{session}/events", json={"events": [{"item_id": item, "event_type": "view"}]})
    assert r.status_code == 200
    purchase = {"client_event_id": f"buy-{user}", "kind": "purchase", "user_id": user, "item_id": item, "revenue": 5}
    assert client.post("/v1/events", json={"events": [purchase]}).json()["stored"] == 1
    return shown.json()


def _recommended(client, user: str) -> list[str]:
    return [it["item_id"] for it in client.get(f"/v1/users/{user}/recommendations", params={"k": 8}).json()["items"]]


def test_an_erased_shopper_leaves_no_trace_and_is_served_as_new(root, db_url, shopper_ids, demo_store):
    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle

    user, other = shopper_ids[2], shopper_ids[3]
    pseudonym = load_or_create_keyring(root)(user)
    with _client(root, db_url) as client:
        assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 201
        _shop(client, user, "sess-erase")
        _shop(client, other, "sess-keep")
        stranger = _recommended(client, "someone-never-seen")
        assert _recommended(client, user) != stranger  # known: ranked by their history
        service = client.app.state.service

        r = client.delete(f"/v1/users/{user}")
        assert r.status_code == 200, r.text
        removed = r.json()["removed"]
        assert removed["events"] == 1 and removed["exposures"] == 1 and removed["assignments"] == 1
        assert removed["sessions"] == 1 and removed["cached_sets"] >= 1

        with EventStore(db_url) as store:
            assert store.user_traces([pseudonym]) == {"events": 0, "exposures": 0, "assignments": 0}
            assert store.user_traces([load_or_create_keyring(root)(other)])["events"] == 1  # nobody else's
        assert service.sessions.get("sess-erase") == [] and service.sessions.get("sess-keep") != []
        assert _recommended(client, user) == stranger  # from this moment, a new shopper
        again = client.get(f"/v1/users/{user}/image-set", params={"n": 3}).json()  # they come back: new data
        assert again["strategy"] == "cold_start" and again["experiment"] == "erasure-test"

    before = audit_shopper(user, artifacts=root, database_url=db_url)
    assert not before.clean and any("bundle" in place for place, n in before.places.items() if n)
    assert "retrain" in " ".join(before.notes)

    config = load_train_config("tiny", overrides={"seed": 1})
    version = train_bundle(demo_store, root, config, show_progress=False, promote=True)
    with np.load(root / version / "embeddings" / "factors.npz") as f:
        users = set(f["user_ids"].astype(str))
    assert pseudonym not in users and load_or_create_keyring(root)(other) in users
    after = audit_shopper(user, artifacts=root, database_url=db_url)
    assert after.clean and after.bundle == version, after.places


def test_vitrine_privacy_forget_reaches_a_running_server(root, db_url, shopper_ids):
    user = shopper_ids[4]
    with _client(root, db_url) as client:
        stranger = _recommended(client, "someone-never-seen")
        known = _recommended(client, user)
        assert known != stranger
        shown = client.get(f"/v1/users/{user}/image-set", params={"n": 2, "session_id": "sess-cli"})
        item = shown.json()["images"][0]["nearest_items"][0]["item_id"]
        client.post("/v1/sessions/sess-cli/events", json={"events": [{"item_id": item, "event_type": "view"}]})
        service = client.app.state.service
        assert service.sessions.get("sess-cli")
        result = forget_shopper(user, artifacts=root, database_url=db_url)  # another process, the CLI
        assert result.pseudonyms == 1
        assert _recommended(client, user) == stranger  # the register masks them at the next request
        service.follow_erasures()  # what every worker does with the bundle pointer, every 5 s
        assert service.sessions.get("sess-cli") == []  # this process's own session of theirs is gone too


def test_after_a_key_rotation_known_shoppers_are_still_recognised_and_erased_under_both(root, db_url, shopper_ids):
    user = shopper_ids[5]
    old = load_or_create_keyring(root)(user)
    ring = rotate_keyring(root)
    with _client(root, db_url) as client:
        assert client.get(f"/v1/users/{user}/image-set", params={"n": 2}).json()["strategy"] == "personalised"
        buy = {"client_event_id": "rot-1", "kind": "purchase", "user_id": user, "item_id": "x", "revenue": 1}
        client.post("/v1/events", json={"events": [buy]})
        new_shopper = {"client_event_id": "rot-2", "kind": "click", "user_id": "brand-new", "image_id": "i"}
        client.post("/v1/events", json={"events": [new_shopper]})
        assert client.delete(f"/v1/users/{user}").status_code == 200
    with EventStore(db_url) as store:
        stored = set(store.event_log()["user_id"])
    assert stored == {ring("brand-new")}  # new shoppers get the new key; the erased one is gone under both
    assert ring("brand-new").startswith("ps2-") and old.startswith("ps1-")


def test_retention_deletes_old_events_only(db_url, tmp_path):
    from engine.experiments.eventstore import Event

    with EventStore(db_url) as store:
        store.add_events(
            [
                Event(client_event_id="old", kind="view", user_id="ps1-a", item_id="i", ts=1_000.0),
                Event(client_event_id="new", kind="view", user_id="ps1-a", item_id="i", ts=90 * 86_400.0),
            ]
        )
    assert retain(30, database_url=db_url, now=100 * 86_400.0) == {"events": 1, "exposures": 0}
    with pytest.raises(ValueError, match="positive"):
        retain(0, database_url=db_url)


@pytest.mark.redis
def test_with_redis_the_erasure_finds_sessions_any_host_linked(redis_url, redis_cleanup, tmp_path, db_url):
    """Two hosts share Redis: a session linked on one is erased from the other."""
    from engine.serving.privacy import Identities, SessionOwners, forget
    from engine.serving.sessions import RedisSessionStore, SessionEvent

    redis_cleanup.append("vitrine:owner:ps1-*")
    prefix = f"vitrine-test-erasure:{tmp_path.name}:"
    redis_cleanup.append(f"{prefix}*")
    identities = Identities(tmp_path)
    pseudonym = identities.pseudonyms("shopper-on-host-a")
    host_a, host_b = SessionOwners.open(redis_url), SessionOwners.open(redis_url)
    sessions = RedisSessionStore.from_url(redis_url, prefix=prefix)
    sessions.add("sess-a", [SessionEvent(item_id="i1", event_type="view", timestamp=pd.Timestamp.now(tz="UTC"))])
    host_a.link(pseudonym, "sess-a")
    assert host_b.sessions(pseudonym) == {"sess-a"}
    with EventStore(db_url) as events:
        result = forget([pseudonym], identities=identities, events=events, sessions=sessions, owners=host_b)
    assert result.removed["sessions"] == 1 and sessions.get("sess-a") == [] and host_a.sessions(pseudonym) == set()
