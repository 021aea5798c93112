"""The /demo storefront page end to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
choose a shopper, see their variant's set, click and buy, and watch the experiment report count it.

Twice: on the tiny test bundle, and on a bundle of the demo preset's real sizes (z_dim 64, 64×64 images, only
its training shortened), whose personalised image ids are the longest the demo serves (a shopper of the
personalised arm clicks one, puts an item in the cart and buys it). Skipped, saying why, where Playwright or
Chromium is missing. ``VITRINE_DEMO_SCREENSHOT=path`` keeps the final screenshot there (docs/demo.png was made so).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.app import create_app
from api.settings import Settings
from engine.experiments.assignment import assign
from engine.experiments.definition import experiment_from_dict
from engine.experiments.eventstore import EventStore
from engine.serving.privacy import shoppers_known_to
from features.ids import MAX_ID_LENGTH
from features.pseudonyms import load_or_create_keyring
from tests.api.experiment_fixture import running_window

CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
TOKEN = "demo-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EXPERIMENT = {
    "name": "storefront-demo",
    **running_window(),
    "variants": [{"name": "control", "strategy": "popular"}, {"name": "treatment", "strategy": "personalised"}],
}


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -e '.[dev]' (it drives Debian's chromium)"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (or set VITRINE_CHROMIUM)"
    return None


# decided before any fixture runs, so a machine without a browser does not train a bundle for nothing
pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@contextmanager
def serving(root: Path, database_url: str, demo_data: Path) -> Iterator[str]:
    """The real app on a free local port, in a uvicorn thread (a browser needs a real socket), with the demo on
    and no open access (the page reads and writes with its shopper token, as in `make demo`); yields its URL."""
    import uvicorn

    settings = Settings(
        artifacts=root,
        admin_token=TOKEN,
        database_url=database_url,
        demo=True,
        demo_data=demo_data,
        open_access=False,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline, "the API did not start within 60 s"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def server(trained_artifacts, tmp_path, demo_store):
    with serving(trained_artifacts[0], f"sqlite:///{tmp_path}/events.db", demo_store) as url:
        yield url


@pytest.fixture(scope="module")
def demo_sized_artifacts(demo_store, tmp_path_factory) -> tuple[Path, str]:
    """A bundle of the demo preset (z_dim 64, 64×64 images, full-width networks) on the small demo store; only
    its training is cut short (4 GAN steps, 50 upscaler steps, one classifier epoch, 100 visual-encoder steps),
    since the sizes are what this test needs."""
    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle

    overrides = {
        "seed": 1,
        "gan": {"upscaler_steps": 50},
        "gan_training": {"steps": 4},
        "classifier_training": {"epochs": 1},
        "visual": {"steps": 100},
    }
    root = tmp_path_factory.mktemp("demo-sized")
    version = train_bundle(
        demo_store, root, load_train_config("demo", overrides=overrides), show_progress=False, promote=True
    )
    return root, version


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def _users(artifacts: tuple[Path, str], store: Path, k: int) -> list[str]:
    """Shoppers the bundle knows, by the store's ids (the bundle holds their pseudonyms)."""
    root, version = artifacts
    with np.load(root / version / "embeddings" / "factors.npz") as f:
        known = set(f["user_ids"].astype(str))
    return shoppers_known_to(store, load_or_create_keyring(root), known.__contains__, k)


def _variant_row(page, variant: str) -> tuple[int, int]:
    row = page.locator(f"#variants tr[data-variant='{variant}']")
    return int(row.locator("td.exposures").inner_text()), int(row.locator("td.conversions").inner_text())


def test_demo_page_shows_the_variant_sends_events_and_updates_the_report(
    server, trained_artifacts, demo_store, tmp_path
):
    from playwright.sync_api import sync_playwright

    r = httpx.post(f"{server}/v1/admin/experiments", json=EXPERIMENT, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    user = _users(trained_artifacts, demo_store, 1)[0]
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # a resource that fails to load (a 404 favicon, an image) is a console error too
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{server}/demo")
            page.wait_for_function("document.querySelectorAll('#users option').length > 0")
            page.fill("#user", user)
            page.click("#show")
            page.wait_for_selector(".card img.main")
            assert page.locator(".card").count() == 8
            variant = page.inner_text("[data-testid=variant]").removeprefix("variant ").strip()
            assert variant in ("control", "treatment")
            expected = "popular" if variant == "control" else "personalised"
            assert page.inner_text("[data-testid=strategy]").strip() == expected
            assert page.inner_text("[data-testid=experiment]").strip() == "experiment storefront-demo"
            page.wait_for_selector("#variants")
            assert _variant_row(page, variant) == (1, 0)  # this shopper's exposure is in the report

            page.locator(".card img.main").first.click()  # a click event
            page.wait_for_selector("#log .entry")
            page.locator(".card .similar .buy").first.click()  # a purchase: the experiment's conversion
            cell = f"#variants tr[data-variant='{variant}'] td.conversions"
            page.wait_for_function(f"document.querySelector(\"{cell}\")?.textContent === '1'")
            assert _variant_row(page, variant) == (1, 1)
            log = page.inner_text("#log")
            assert "click" in log and "purchase" in log and "stored" in log
            page.wait_for_load_state("networkidle")
            page.wait_for_function(
                "document.querySelector('#chart').complete && !document.querySelector('#chart').hidden"
            )
            shot = Path(os.environ.get("VITRINE_DEMO_SCREENSHOT") or tmp_path / "demo.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert not errors, errors
        finally:
            browser.close()
    # the page's events reached the store: the API's report says the same
    report = httpx.get(f"{server}/v1/experiments/storefront-demo/report", headers=ADMIN).json()
    row = next(v for v in report["variants"] if v["name"] == variant)
    assert (row["exposures"], row["conversions"], row["clicks"]) == (1, 1, 1)


def test_a_personalised_shopper_clicks_carts_and_buys_on_a_demo_sized_bundle(
    demo_sized_artifacts, demo_store, tmp_path
):
    """The demo preset's personalised ids are the longest the demo serves (z_dim 64): every one must be
    accepted as a click, and the click, cart and purchase must reach the experiment's report and store."""
    from playwright.sync_api import sync_playwright

    root, version = demo_sized_artifacts
    generator = json.loads((root / version / "generator" / "config.json").read_text())
    # the demo preset's cascade: a 32 px GAN whose upscaler serves 64 px (the images checked below)
    assert (generator["z_dim"], generator["image_size"]) == (64, 32)
    assert (root / version / "generator" / "upscaler").is_dir()
    experiment = experiment_from_dict(EXPERIMENT)
    pseudonyms = load_or_create_keyring(root)  # experiments assign shoppers by their pseudonyms
    users = _users(demo_sized_artifacts, demo_store, 100)
    user = next(u for u in users if assign(experiment, pseudonyms(u)) == "treatment")
    database_url = f"sqlite:///{tmp_path}/events.db"
    with serving(root, database_url, demo_store) as server, sync_playwright() as p:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{server}/v1/admin/experiments", json=EXPERIMENT, headers=headers).status_code == 201
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            with page.expect_response(lambda r: "/image-set" in r.url) as response:
                page.goto(f"{server}/demo")
                page.wait_for_function("document.querySelectorAll('#users option').length > 0")
                page.fill("#user", user)
                page.click("#show")
            shown = response.value.json()
            assert (shown["variant"], shown["strategy"]) == ("treatment", "personalised")
            assert all(img["explanation"]["optimised"] for img in shown["images"])
            assert max(len(img["image_id"]) for img in shown["images"]) <= MAX_ID_LENGTH
            # every generated image rendered from its id, at the preset's 64×64
            page.wait_for_function(
                "[...document.querySelectorAll('.card img.main')]"
                ".every((i) => i.complete && i.naturalWidth === 64 && i.naturalHeight === 64)"
            )
            page.wait_for_selector("#variants")
            assert _variant_row(page, "treatment") == (1, 0)

            page.locator(".card img.main").first.click()
            page.wait_for_function("document.querySelectorAll('#log .entry').length === 1")
            page.locator(".card .similar .cart").first.click()
            page.wait_for_function("document.querySelectorAll('#log .entry').length === 2")
            page.locator(".card .similar .buy").first.click()
            cell = "#variants tr[data-variant='treatment'] td.conversions"
            page.wait_for_function(f"document.querySelector(\"{cell}\")?.textContent === '1'")
            log = page.inner_text("#log")  # newest first
            sent = re.findall(r"(click|add_to_cart|purchase) \S+ → (\w+)", log)
            assert sent == [("purchase", "stored"), ("add_to_cart", "stored"), ("click", "stored")], log
            assert not errors, errors
        finally:
            browser.close()
        report = httpx.get(f"{server}/v1/experiments/{EXPERIMENT['name']}/report", headers=ADMIN).json()
    row = next(v for v in report["variants"] if v["name"] == "treatment")
    price = shown["images"][0]["nearest_items"][0]["price"] or 0
    assert (row["exposures"], row["clicks"], row["conversions"]) == (1, 1, 1)
    assert row["revenue"] == pytest.approx(price)
    # the report counts purchases (the conversion) and clicks, not carts: the cart is in the event store
    with EventStore(database_url) as store:
        assert {k: store.count_events(k) for k in ("click", "add_to_cart", "purchase")} == {
            "click": 1,
            "add_to_cart": 1,
            "purchase": 1,
        }
