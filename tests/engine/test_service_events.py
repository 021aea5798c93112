"""Training on the service's own events: an event store filled through its public API, read, validated and
merged into the base logs, and a tiny bundle whose embeddings know a shopper seen only by the service."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from engine.artifacts.registry import ArtifactRegistry
from engine.experiments.database import without_credentials
from engine.experiments.eventstore import Event, EventStore, read_event_log
from engine.training.data import read_training_data
from features.pseudonyms import load_or_create_keyring
from features.readers import read_store, service_events
from features.readers.service import BAD_TS
from models.embeddings import EmbeddingModel

NEW_SHOPPER = "svc-only-shopper"


def _fill(url: str, items: list[str], t0: float) -> None:
    """Good and bad events through the store's public API (every one is a valid ``Event``)."""
    good = [
        Event(client_event_id=f"v{k}", kind="view", ts=t0 + k, user_id=NEW_SHOPPER, session_id="svc-s1", item_id=i)
        for k, i in enumerate(items)
    ]
    good += [
        Event(client_event_id="c1", kind="add_to_cart", ts=t0 + 50, user_id=NEW_SHOPPER, item_id=items[0]),
        Event(
            client_event_id="p1",
            kind="purchase",
            ts=t0 + 60,
            user_id=NEW_SHOPPER,
            session_id="svc-s1",
            item_id=items[0],
            revenue=12.5,
        ),
        # a click naming its item is a view of it; an event without a user belongs to anon:<session>
        Event(client_event_id="k1", kind="click", ts=t0 + 70, session_id="svc-s2", item_id=items[1], image_id="img-a"),
    ]
    bad = [
        Event(client_event_id="b1", kind="view", ts=t0, user_id=NEW_SHOPPER, session_id="svc-s1", item_id="NOT-SOLD"),
        Event(client_event_id="b2", kind="view", ts=1e15, user_id=NEW_SHOPPER, session_id="svc-s1", item_id=items[2]),
        Event(client_event_id="b3", kind="view", ts=t0, user_id="bad\tuser", session_id="svc-s1", item_id=items[2]),
    ]
    image_clicks = [
        Event(client_event_id=f"g{k}", kind="click", ts=t0 + k, user_id=NEW_SHOPPER, image_id=f"img-{k}")
        for k in range(2)
    ]
    with EventStore(url) as store:
        result = store.add_events([*good, *bad, *image_clicks, good[0]])  # the last is a resend
        assert result.duplicates == 1


@pytest.fixture
def service_store(demo_store, tmp_path):
    data = read_store(demo_store)
    items = list(data.catalogue["item_id"][:8])
    t0 = data.events["timestamp"].max().timestamp() - 3 * 86400
    url = f"sqlite:///{tmp_path / 'events.db'}"
    _fill(url, items, t0)
    return url, items


def test_event_log_is_the_stored_events_as_a_plain_frame(service_store):
    url, _ = service_store
    log = read_event_log(url)
    assert len(log) == 8 + 3 + 3 + 2  # the resend was not stored
    assert list(log["client_event_id"][:2]) == ["v0", "v1"]
    assert log["ts"].dtype == np.float64
    assert log.loc[log["client_event_id"] == "c1", "session_id"].isna().all()


def test_service_events_keep_the_good_rows_and_report_the_bad(service_store):
    url, items = service_store
    log = read_event_log(url)
    service = service_events(log, source="svc", known_items=pd.Index(items))
    ev = service.events
    assert len(ev) == 8 + 3
    assert service.image_clicks == 2  # not used yet: never mapped to an item
    assert service.report.rows_read == 8 + 3 + 3 and service.report.rows_rejected == 3
    reasons = service.report.reasons
    assert reasons["item_id is not in the catalogue"] == 1
    assert reasons[BAD_TS] == 1
    assert reasons["user_id is empty, too long or has control characters"] == 1
    row_of = dict(zip(log["client_event_id"], log["row_id"], strict=True))
    assert {e.line for e in service.report.examples} == {row_of["b1"], row_of["b2"], row_of["b3"]}
    # the click with an item is a view of it, by the session's anonymous shopper
    click = ev[ev["user_id"] == "anon:svc-s2"]
    assert list(click["event_type"]) == ["view"] and list(click["item_id"]) == [items[1]]
    # an event without a session belongs to the shopper's session of that day
    cart = ev[ev["event_type"] == "add_to_cart"]
    assert cart["session_id"].iloc[0].startswith(f"{NEW_SHOPPER}:")
    assert service.counts() == {
        "rows_read": 16,
        "events_loaded": 11,
        "rows_rejected": 3,
        "duplicates": 0,
        "image_clicks_not_used": 2,
    }


def test_the_same_client_event_id_in_two_stores_counts_once(service_store, demo_store, tmp_path):
    url, _ = service_store
    copy = tmp_path / "copy.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    base = read_store(demo_store)
    one, record_one = read_training_data(demo_store, [url])
    two, record_two = read_training_data(demo_store, [url, f"sqlite:///{copy}"])
    assert len(one.events) == len(base.events) + 11 == len(two.events)
    assert record_two["duplicates"] == 16 and record_one["duplicates"] == 0
    assert record_one["new_users"] == 2  # the new shopper and anon:svc-s2
    assert one.reports["service_events"].rows_rejected == 3
    assert one.fingerprint() != base.fingerprint()


def test_without_events_the_data_is_the_store_unchanged(demo_store):
    store, record = read_training_data(demo_store)
    assert record is None
    assert store.fingerprint() == read_store(demo_store).fingerprint()


def test_a_missing_sqlite_file_is_an_error_not_a_new_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no event store"):
        read_event_log(f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_sources_are_recorded_without_credentials():
    shown = without_credentials("postgresql+psycopg://shop:s3cret@db.internal:5432/vitrine?password=s3cret")
    assert "s3cret" not in shown and "shop" not in shown
    assert shown == "postgresql+psycopg://db.internal:5432/vitrine"


def test_tiny_train_with_events_knows_a_shopper_only_the_service_saw(service_store, demo_store, tmp_path):
    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle

    url, _ = service_store
    root = tmp_path / "artifacts"
    config = load_train_config("tiny", overrides={"seed": 1, "visual": {"enabled": False}})
    version = train_bundle(demo_store, root, config, show_progress=False, events=[url])
    embeddings = EmbeddingModel.load(root / version / "embeddings")
    assert load_or_create_keyring(root)(NEW_SHOPPER) in set(embeddings.user_ids)  # known by its pseudonym
    record = json.loads((root / version / "manifest.json").read_text())["data"]["service_events"]
    assert record["sources"] == [url] and record["events_loaded"] == 11 and record["image_clicks_not_used"] == 2


def test_cli_retrains_embeddings_from_service_events(service_store, trained_artifacts, tmp_path):
    from engine.cli import main

    url, _ = service_store
    root, version = trained_artifacts
    artifacts = tmp_path / "artifacts"
    shutil.copytree(root, artifacts)
    data = json.loads((root / version / "manifest.json").read_text())["data"]["path"]
    argv = ["train", "embeddings", "--data", data, "--artifacts", str(artifacts), "--events", url, "--no-progress"]
    assert main(argv) == 0
    new = [info.version for info in ArtifactRegistry(artifacts).versions() if info.version != version]
    assert len(new) == 1
    known = set(EmbeddingModel.load(artifacts / new[0] / "embeddings").user_ids)
    assert load_or_create_keyring(artifacts)(NEW_SHOPPER) in known
    manifest = json.loads((artifacts / new[0] / "manifest.json").read_text())
    assert manifest["data"]["service_events"]["sources"] == [url]


def test_events_given_before_the_embeddings_subcommand_are_kept():
    """`vitrine train --events X embeddings` must not lose X to the subcommand's own default."""
    from engine.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--events", "A", "embeddings", "--data", "d"]).events == ["A"]
    assert parser.parse_args(["train", "embeddings", "--data", "d", "--events", "B"]).events == ["B"]
    assert parser.parse_args(["train", "embeddings", "--data", "d"]).events is None
