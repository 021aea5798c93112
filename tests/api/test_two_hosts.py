"""Two API hosts, one state: two real ``vitrine serve`` processes on one Redis (a key prefix of the test's own), one
PostgreSQL database (the test's own) and one artifacts folder, as N hosts behind a load balancer run them
(docs/OPERATIONS.md, "Several hosts").

What one host does, the other sees: an image id renders the same PNG bytes on both; a session posted to one shapes
the other's next set; a promotion reaches both without one failed request while a storefront fetches each set's
images from the host that did not make it; exposures and events sent to both, and resent across them, are stored
once; and an erasure on one masks the shopper on the other.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from engine.artifacts.promotion import promote_bundle
from engine.artifacts.registry import CHECKSUMS, ArtifactRegistry
from engine.experiments.http_api import serve_subprocess
from models.io import read_json
from tests.api.experiment_fixture import ADMIN, EXPERIMENT, TOKEN, running_window

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def database_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped afterwards; skips, saying why, when PostgreSQL does not
    answer."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (database 'test', user postgres) does not answer: {exc}"[:300])
    name = f"vitrine_hosts_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def artifacts(trained_artifacts, tmp_path) -> tuple[Path, str]:
    """The trained registry copied (bundle, pointer, keyring), so that this test's promotion and erasure leave
    the shared one alone: the one folder both hosts read, as shared storage would be."""
    root, version = trained_artifacts
    local = tmp_path / "artifacts"
    shutil.copytree(root, local)
    return local, version


@pytest.fixture
def hosts(artifacts, redis_url, redis_prefix, database_url) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of two `vitrine serve` processes with the settings every host of a deployment shares, started
    together (both migrate the new database at once: the migration takes a lock)."""
    root, _ = artifacts
    env = {
        "VITRINE_REDIS_URL": redis_url,
        "VITRINE_REDIS_PREFIX": redis_prefix,
        "VITRINE_DATABASE_URL": database_url,
        "VITRINE_IMAGE_KEY": f"two-hosts-{uuid.uuid4().hex}",
        "VITRINE_ADMIN_TOKEN": TOKEN,
        "VITRINE_RATE_LIMIT_PER_SECOND": "0",  # one test client sends every shopper's requests
    }
    with ExitStack() as stack:
        servers: list[AbstractContextManager[str]] = [serve_subprocess(root, env) for _ in range(2)]
        with ThreadPoolExecutor(2) as pool:
            starts = [pool.submit(server.__enter__) for server in servers]
            for server, start in zip(servers, starts, strict=True):
                if start.exception() is None:
                    stack.push(server.__exit__)  # stopped at the end, whether or not the other one started
        a, b = (stack.enter_context(httpx.Client(base_url=start.result(), timeout=60)) for start in starts)
        yield a, b


def items(root: Path, version: str, k: int) -> list[str]:
    return pd.read_parquet(root / version / "catalogue" / "items.parquet")["item_id"].iloc[:k].tolist()


def copy_of_bundle(root: Path, version: str) -> str:
    """A second bundle to promote: the first one's files under a new version."""
    registry = ArtifactRegistry(root)
    new = registry.new_version("copy")
    staging = registry.staging(new)
    shutil.copytree(root / version, staging, dirs_exist_ok=True)
    manifest = read_json(staging / "manifest.json")
    manifest.pop(CHECKSUMS, None)
    registry.commit(staging, new, {**manifest, "parents": [version]})
    return new


def ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
    return r.json()


def test_two_hosts_share_one_state(database_url, redis_prefix, artifacts, hosts, shopper_ids):  # skips come first
    root, version = artifacts
    a, b = hosts

    # an image id renders the same PNG bytes on both: A from the set it made, B from the id alone and the latent
    # code that A left in Redis
    made = ok(a.get(f"/v1/users/{shopper_ids[0]}/image-set", params={"n": 4}))
    assert made["strategy"] == "personalised"
    ids = [img["image_id"] for img in made["images"]]
    assert any(i.count(".") == 4 for i in ids)  # tuned to the shopper: its optimised z is kept in Redis
    for image_id in ids:
        pngs = [h.get(f"/v1/images/{image_id}.png") for h in (a, b)]
        assert [p.status_code for p in pngs] == [200, 200]
        assert pngs[0].content == pngs[1].content

    # a session posted to A shapes B's next set, though B made (and cached) the set without it a moment before
    sid = f"s-{uuid.uuid4().hex[:8]}"
    path, query = f"/v1/users/anon-{sid}/image-set", {"n": 4, "session_id": sid}
    before = [ok(b.get(path, params=query)) for _ in range(2)]
    assert [s["strategy"] for s in before] == ["cold_start", "cold_start"] and before[0] == before[1]
    views = {"events": [{"item_id": i, "event_type": "view"} for i in items(root, version, 3)]}
    assert ok(a.post(f"/v1/sessions/{sid}/events", json=views))["session_events"] == 3
    after = ok(b.get(path, params=query))
    assert after["strategy"] == "session"
    assert [i["image_id"] for i in after["images"]] != [i["image_id"] for i in before[0]["images"]]
    same = [i["image_id"] for i in ok(a.get(path, params=query))["images"]]
    assert same == [i["image_id"] for i in after["images"]]  # A folds in the same views: the very same images

    # a promotion reaches both without a failed request, while each set's images are fetched from the other host
    # (as a balancer may send a page's image requests anywhere); a host follows the pointer within 5 s
    new = copy_of_bundle(root, version)
    answers: list[tuple[str, int, str]] = []  # (what, status, detail)
    versions: set[str] = set()
    stop = threading.Event()

    def storefront(k: int) -> None:
        maker, other = (a, b) if k == 0 else (b, a)
        j = 0
        while not stop.is_set():
            r = maker.get(f"/v1/users/{shopper_ids[10 + 2 * (j % 10) + k]}/image-set", params={"n": 2})
            answers.append(("set", r.status_code, r.text[:200]))
            if r.status_code == 200:
                versions.add(r.json()["bundle_version"])
                for img in r.json()["images"]:
                    p = other.get(httpx.URL(img["url"]).path)
                    answers.append(("png", p.status_code, "" if p.status_code == 200 else p.text[:200]))
            j += 1

    threads = [threading.Thread(target=storefront, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        promote_bundle(ArtifactRegistry(root), new, force=True)
        deadline = time.time() + 60
        while time.time() < deadline and any(ok(h.get("/healthz"))["bundle_version"] != new for h in (a, b)):
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [x for x in answers if x[1] != 200]
    assert not failed, f"{len(failed)} of {len(answers)} failed: {failed[:3]}"
    assert versions == {version, new}  # the storefront was served through the promotion
    assert [ok(h.get("/healthz"))["bundle_version"] for h in (a, b)] == [new, new]

    # an erasure on A masks the shopper on B at once: the register is in the shared artifacts folder
    erased = shopper_ids[40]
    assert ok(b.get(f"/v1/users/{erased}/image-set", params={"n": 2}))["strategy"] == "personalised"
    assert a.delete(f"/v1/users/{erased}").status_code == 200
    assert ok(b.get(f"/v1/users/{erased}/image-set", params={"n": 2}))["strategy"] == "cold_start"

    # exposures and events sent to both hosts, each resent to the other, are stored once
    assert a.post("/v1/admin/experiments", json={**EXPERIMENT, **running_window()}, headers=ADMIN).status_code == 201
    time.sleep(1.1)  # B reuses its list of experiments for up to VITRINE_EXPERIMENTS_REFRESH_SECONDS (1 s); A not
    users = shopper_ids[1:7]
    for k, user in enumerate(users):
        first, second = (a, b) if k % 2 == 0 else (b, a)
        shown = [
            ok(h.get(f"/v1/users/{user}/image-set", params={"n": 2, "exposure_id": f"x-{user}"}))
            for h in (first, second)
        ]
        assert shown[0]["variant"] == shown[1]["variant"] is not None
    purchases = [
        {"client_event_id": f"p-{user}", "kind": "purchase", "user_id": user, "item_id": item, "revenue": 10.0}
        for user, item in zip(users, items(root, version, len(users)), strict=True)
    ]
    half = len(purchases) // 2
    assert ok(a.post("/v1/events", json={"events": purchases[:half]}))["stored"] == half
    assert ok(b.post("/v1/events", json={"events": purchases[half:]}))["stored"] == len(purchases) - half
    again = ok(b.post("/v1/events", json={"events": purchases}))  # every event resent, to B
    assert (again["stored"], again["duplicates"]) == (0, len(purchases))
    report = ok(b.get(f"/v1/experiments/{EXPERIMENT['name']}/report"))
    assert sum(v["exposures"] for v in report["variants"]) == len(users)
    assert sum(v["exposure_events"] for v in report["variants"]) == len(users)  # each resent exposure once
    assert sum(v["conversions"] for v in report["variants"]) == len(users)
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = [conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one() for t in ("exposures", "events")]
    finally:
        engine.dispose()
    assert rows == [len(users), len(purchases)]
