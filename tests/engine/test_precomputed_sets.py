"""Precomputed image sets in serving: a stored set is served only while valid, and it is the very set that
fresh generation gives (the same ids, conditions, items and explanations), on the tiny trained bundle."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime

import pytest

from engine.artifacts.bundle import load_bundle
from engine.batch.image_sets import job_config, render_sets
from engine.serving.config import PersonaliserConfig
from engine.serving.personaliser import Personaliser
from engine.serving.precomputed import SetParams, decode_set, encode_set, known_shoppers, recipe
from engine.serving.precomputed_store import SqlitePrecomputedStore
from engine.serving.service import Service, SharedState
from engine.serving.sessions import SessionEvent
from features.pseudonyms import load_or_create_keyring

KEY = b"precomputed-test-key-0123456789"
PARAMS = SetParams(n=4, neighbours=3)


@pytest.fixture(scope="module")
def root(trained_artifacts, tmp_path_factory):
    """A copy of the trained artifacts: erasures write its register."""
    dst = tmp_path_factory.mktemp("precomputed") / "artifacts"
    shutil.copytree(trained_artifacts[0], dst)
    return dst


@pytest.fixture(scope="module")
def job(root) -> Personaliser:
    """The Personaliser a render worker holds."""
    version = (root / "CURRENT").read_text().strip()
    return Personaliser(load_bundle(root / version), job_config(PARAMS), key=KEY)


@pytest.fixture(scope="module")
def shoppers(job, shopper_ids, root) -> list[str]:
    """Pseudonyms of four known shoppers, in the demo store's order (so that erasure tests can name them)."""
    ring = load_or_create_keyring(root)
    return [ring(u) for u in shopper_ids[:4]]


@pytest.fixture(scope="module")
def entries(job, shoppers) -> list[tuple[str, bytes]]:
    return render_sets(job, shoppers, PARAMS)


@pytest.fixture
def store(tmp_path, job, entries) -> SqlitePrecomputedStore:
    store = SqlitePrecomputedStore(tmp_path / "sets.sqlite")
    store.put_many(job.version, [(s, PARAMS.key(job_config(PARAMS)), e) for s, e in entries])
    return store


def _service(root, store) -> Service:
    service = Service(root, shared=SharedState(image_key=KEY, precomputed=store), watch_seconds=None)
    service.load_current()
    return service


def _set(service: Service, shopper: str, **kw):
    return service.image_set(shopper, kw.pop("n", PARAMS.n), neighbours=PARAMS.neighbours, **kw).images


def test_the_job_renders_every_known_shopper(job):
    users = known_shoppers(job)
    assert len(users) == len(set(users)) >= len(job.bundle.embeddings.user_ids)
    assert all(job.knows(u) for u in users)


def test_a_served_precomputed_set_is_the_set_fresh_generation_gives(root, store, shoppers, tmp_path):
    served = _service(root, store)
    fresh = _service(root, SqlitePrecomputedStore(tmp_path / "empty.sqlite"))
    for shopper in shoppers:
        a, b = _set(served, shopper), _set(fresh, shopper)
        assert a.precomputed and not b.precomputed and a.strategy == "personalised"
        assert dataclasses.replace(a, precomputed=False) == b  # ids, conditions, items, scores, explanations
        assert any(img.explanation and img.explanation.optimised for img in a.images)  # tuned: latent codes kept
    # its ids render on the serving worker from the latent codes the entry carried, as fresh ones do
    image_id = _set(served, shoppers[0]).images[0].image_id
    assert served.render_png(image_id) == fresh.render_png(image_id)
    hits = served.metrics.registry.get_sample_value("vitrine_precomputed_set_hits_total")
    misses = fresh.metrics.registry.get_sample_value("vitrine_precomputed_set_misses_total")
    assert hits == len(shoppers) + 1 and misses == len(shoppers)


def test_an_entry_with_pngs_serves_its_images_from_them(root, job, shoppers, tmp_path):
    store = SqlitePrecomputedStore(tmp_path / "with-pngs.sqlite")
    ((shopper, entry),) = render_sets(job, shoppers[:1], PARAMS, pngs=True)
    store.put_many(job.version, [(shopper, PARAMS.key(job_config(PARAMS)), entry)])
    service = _service(root, store)
    shown = _set(service, shopper)
    stored = decode_set(entry)
    assert shown.precomputed and len(stored.pngs) == PARAMS.n
    service.latents.delete_many(list(stored.latents))  # so the images can only come from the entry's PNGs
    for img in shown.images:
        assert service.render_png(img.image_id) == stored.pngs[img.image_id]


def test_a_session_with_events_is_made_afresh_and_drops_the_stored_sets(root, store, shoppers, job):
    service = _service(root, store)
    shopper = shoppers[0]
    item = str(job.catalogue.item_ids[0])
    service.add_session_events("s-precomputed", [SessionEvent(item_id=item, event_type="view", timestamp=_now())])
    with_session = _set(service, shopper, session_id="s-precomputed")
    assert with_session.strategy == "session" and not with_session.precomputed
    assert store.count(shoppers=[shopper]) == 0
    assert not _set(service, shopper).precomputed  # the next set without the session is fresh too
    assert _set(service, shoppers[1]).precomputed  # other shoppers keep theirs


def test_a_session_event_under_the_shoppers_token_drops_their_stored_sets(root, store, shoppers, job):
    service = _service(root, store)
    item = str(job.catalogue.item_ids[0])
    event = SessionEvent(item_id=item, event_type="view", timestamp=_now())
    service.add_session_events("s-token", [event], owner=shoppers[1])
    assert store.count(shoppers=[shoppers[1]]) == 0 and store.count(shoppers=[shoppers[2]]) == 1
    assert "s-token" in service.owners.sessions(shoppers[1])


def test_erasure_deletes_the_stored_sets_and_the_shopper_is_served_as_new(root, store, shoppers, shopper_ids):
    service = _service(root, store)
    erasure = service.forget(shopper_ids[3])
    assert erasure.removed["precomputed_sets"] == 1 and store.count(shoppers=[shoppers[3]]) == 0
    after = _set(service, service.pseudonym(shopper_ids[3]))
    assert not after.precomputed and after.strategy == "cold_start"


def test_sets_of_another_bundle_other_parameters_or_another_key_are_not_served(root, store, shoppers, job, entries):
    service = _service(root, store)
    config = job_config(PARAMS)
    other_version = "20990101T000000Z-abcdef"
    store.delete_shoppers([shoppers[0]])
    store.put_many(other_version, [(shoppers[0], PARAMS.key(config), entries[0][1])])
    assert not _set(service, shoppers[0]).precomputed  # a promotion switched away from that version
    assert not _set(service, shoppers[1], n=3).precomputed  # stored for n=4
    a_class = str(job.bundle.encoder.values_[job.catalogue.attributes[0]][0])
    assert not _set(service, shoppers[1], classes=(a_class,)).precomputed  # stored without a class filter
    other_key = Personaliser(job.bundle, config, key=b"another-deployments-key-000")
    forged = render_sets(other_key, [shoppers[1]], PARAMS)
    store.put_many(job.version, [(shoppers[1], PARAMS.key(config), forged[0][1])])
    assert not _set(service, shoppers[1]).precomputed  # ids that do not verify under the serving key
    assert _set(service, shoppers[2]).precomputed


def test_an_entry_round_trips_and_the_key_follows_the_generation_settings(entries):
    stored = decode_set(entries[0][1])
    assert encode_set(stored.image_set, stored.latents) == entries[0][1]
    assert stored.latents and not stored.pngs
    assert recipe(PersonaliserConfig()) == recipe(PersonaliserConfig(max_set_size=64, cache_size=8))
    assert PARAMS.key(PersonaliserConfig()) != PARAMS.key(PersonaliserConfig(steps=3))
    with pytest.raises(ValueError, match="not a stored image set"):
        decode_set(b'{"schema_version": 1}')
    with pytest.raises(ValueError, match="layout 2, this version reads 1"):
        decode_set(b'{"schema_version": 2}')


def _now() -> datetime:
    return datetime.now(UTC)


def test_the_job_renders_no_png_it_does_not_store(root, shoppers):
    """Without ``--pngs`` a render worker skips the per-image forward pass and PNG encoding; with it, it keeps
    them: the entries are the same sets either way (the set does not depend on its PNGs)."""
    version = (root / "CURRENT").read_text().strip()
    lean = Personaliser(load_bundle(root / version), job_config(PARAMS), key=KEY)
    full = Personaliser(load_bundle(root / version), job_config(PARAMS, pngs=True), key=KEY)
    a, b = (
        lean.image_set(shoppers[0], PARAMS.n, neighbours=PARAMS.neighbours),
        full.image_set(shoppers[0], PARAMS.n, neighbours=PARAMS.neighbours),
    )
    assert a == b
    assert [lean._pngs.get(img.image_id) for img in a.images] == [None] * PARAMS.n
    assert all(full._pngs.get(img.image_id) for img in b.images)
    assert recipe(lean.config) == recipe(full.config)  # a set stored by either is served under both
