"""The demo-store world: drawings, tastes, simulated logs and the store layout, with known answers."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.world import (
    CLASSES,
    COLOURS,
    PATTERNS,
    DemoStoreConfig,
    Taste,
    draw_item,
    draw_tastes,
    load_tastes,
    make_catalogue,
    simulate_events,
    taste_popularity,
    write_demo_store,
)
from engine.world.art import pattern_shade

CONFIG = DemoStoreConfig(n_items=320, n_users=200, weeks=2, seed=3)
TINY = {"n_items": 100, "n_users": 40, "weeks": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "store"
    write_demo_store(out, CONFIG, show_progress=False)
    return out


@pytest.fixture(scope="module")
def events(store) -> pd.DataFrame:
    return pd.read_csv(store / "events.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def catalogue(store) -> pd.DataFrame:
    return pd.read_csv(store / "catalogue.csv", dtype={"price": float}, keep_default_na=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_demo_store(a, DemoStoreConfig(**TINY, seed=11), show_progress=False)
    write_demo_store(b, DemoStoreConfig(**TINY, seed=11), show_progress=False)
    write_demo_store(c, DemoStoreConfig(**TINY, seed=12), show_progress=False)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b  # every CSV, JSON and PNG byte for byte
    for name in ("events.csv", "catalogue.csv", "hidden/tastes.json", "images/I00000.png"):
        assert files_a[name] != files_c[name], name


# --- drawings ---------------------------------------------------------------------------------------------


def _flat_item_pixels(img: np.ndarray) -> np.ndarray:
    """Item pixels (not the corner's background colour) inside flat regions: equal, within 3, to their four
    neighbours. This leaves out anti-aliased edges, whose mixed colours would blur a count of colours."""
    a = img.astype(int)
    flat = np.ones(a.shape[:2], dtype=bool)
    for shift in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        flat &= np.abs(a - np.roll(a, shift, axis=(0, 1))).max(axis=2) <= 3
    item = np.abs(a - a[0, 0]).max(axis=2) > 6
    return a[flat & item]


def _near(pixels: np.ndarray, rgb, tol: int = 5) -> float:
    return float((np.abs(pixels - np.asarray(rgb)).max(axis=1) <= tol).mean())


@pytest.mark.parametrize("kind", CLASSES)
def test_two_items_of_one_condition_are_different_pictures(kind):
    rng = np.random.default_rng(0)
    first, second = (draw_item(kind, "red", "solid", rng) for _ in range(2))
    assert first.shape == second.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - second.astype(int)).sum(axis=2).astype(bool).mean() > 0.05


def test_the_named_colour_dominates_solid_and_patterned_items():
    rng = np.random.default_rng(1)
    for kind in CLASSES:
        for name, rgb in COLOURS.items():
            pixels = _flat_item_pixels(draw_item(kind, name, "solid", rng))
            values, counts = np.unique(pixels, axis=0, return_counts=True)
            dominant = values[counts.argmax()]
            assert np.abs(dominant - np.array(rgb)).max() <= 4, (kind, name, dominant)  # jitter is ≤ 4 units
            for pattern in PATTERNS[1:]:
                pixels = _flat_item_pixels(draw_item(kind, name, pattern, rng))
                assert _near(pixels, rgb) > _near(pixels, pattern_shade(rgb)), (kind, name, pattern)


def test_patterns_mark_a_clear_share_of_the_item():
    # The same generator state draws the same shape, so a patterned drawing and its solid twin differ
    # only by the pattern marks (and a few units of colour jitter).
    for kind in CLASSES:
        for name in COLOURS:
            solid = draw_item(kind, name, "solid", np.random.default_rng(9)).astype(int)
            item = np.abs(solid - solid[0, 0]).max(axis=2) > 6
            for pattern in PATTERNS[1:]:
                patterned = draw_item(kind, name, pattern, np.random.default_rng(9)).astype(int)
                marked = (np.abs(patterned - solid).max(axis=2) > 30) & item
                assert marked.sum() / item.sum() > 0.07, (kind, name, pattern)


def test_white_item_stands_out_from_the_background():
    img = draw_item("t-shirt", "white", "solid", np.random.default_rng(3)).astype(int)
    dark = (img.max(axis=2) < 90).sum()  # the outline
    assert dark > 60


def test_draw_item_rejects_unknown_values():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown class 'hat'"):
        draw_item("hat", "red", "solid", rng)
    with pytest.raises(ValueError, match="unknown colour 'beige'"):
        draw_item("cap", "beige", "solid", rng)


# --- tastes -----------------------------------------------------------------------------------------------


def _taste(**kw) -> Taste:
    cls = np.full(8, 0.3 / 7)
    cls[CLASSES.index("dress")] = 0.7
    colour = np.full(10, 0.1)
    pattern = np.array([0.4, 0.3, 0.2, 0.1])
    return Taste(class_=cls, colour=colour, pattern=pattern, **{"price_sensitivity": 1.0, "activity": 2.0, **kw})


def test_taste_known_answers():
    taste = _taste()
    assert taste.top("class", 1) == ["dress"]
    assert taste.top("pattern", 4) == ["solid", "stripes", "dots", "check"]
    assert taste.affinity({"class": "dress", "colour": "red", "pattern": "solid"}) == pytest.approx(1.0)
    assert taste.affinity({"class": "cap"}) == pytest.approx((0.3 / 7) / 0.7)
    assert taste.affinity({"class": "dress", "pattern": "check"}) == pytest.approx(0.25)
    items = pd.DataFrame(
        {
            "class": ["dress", "dress", "cap"],
            "colour": ["red", "blue", "red"],
            "pattern": ["solid", "check", "dots"],
            "price": [40.0, 80.0, 10.0],
        }
    )
    median = {"dress": 60.0, "cap": 10.0}
    expected = [
        np.log(0.7) + np.log(0.1) + np.log(0.4) - np.log(40 / 60),
        np.log(0.7) + np.log(0.1) + np.log(0.1) - np.log(80 / 60),
        np.log(0.3 / 7) + np.log(0.1) + np.log(0.2),
    ]
    np.testing.assert_allclose(taste.utility(items, reference_prices=median), expected)
    with pytest.raises(ValueError, match="unknown colour 'beige'"):
        taste.affinity({"colour": "beige"})
    with pytest.raises(ValueError, match="unknown attribute 'size'"):
        taste.top("size", 1)


def test_taste_round_trips_through_json():
    for taste in draw_tastes(20, np.random.default_rng(4)):
        back = Taste.from_dict(json.loads(json.dumps(taste.to_dict())))
        assert back == taste
        assert back.top("colour", 3) == taste.top("colour", 3)


def test_taste_rejects_bad_weights_and_keys():
    with pytest.raises(ValueError, match="sum to 1"):
        Taste(
            class_=np.full(8, 0.2),
            colour=np.full(10, 0.1),
            pattern=np.full(4, 0.25),
            price_sensitivity=1.0,
            activity=1.0,
        )
    with pytest.raises(ValueError, match="price_sensitivity"):
        _taste(price_sensitivity=-1.0)
    bad = _taste().to_dict() | {"colours": {}}
    with pytest.raises(ValueError, match="unknown \\['colours'\\]"):
        Taste.from_dict(bad)


def test_drawn_tastes_have_few_favourites_and_a_shared_skew():
    tastes = draw_tastes(3000, np.random.default_rng(5))
    cls = np.stack([t.weights("class") for t in tastes])
    top3 = np.sort(cls, axis=1)[:, -3:].sum(axis=1)
    assert np.median(cls.max(axis=1)) > 0.4  # a clear favourite class
    assert (top3 > 0.75).mean() > 0.7  # most shoppers: one to three favourites
    popularity = cls.mean(axis=0)
    assert popularity.max() / popularity.min() > 1.5  # some classes more popular overall
    assert min(t.price_sensitivity for t in tastes) >= 0


def test_new_tastes_drawn_with_a_population_s_popularity_share_its_skew():
    store_like = draw_tastes(3000, np.random.default_rng(5))
    popularity = taste_popularity(store_like)
    new = draw_tastes(3000, np.random.default_rng(6), popularity=popularity)
    for attribute in ("class", "colour", "pattern"):
        assert popularity[attribute].sum() == pytest.approx(1.0)
        again = taste_popularity(new)[attribute]
        assert np.abs(again - popularity[attribute]).max() < 0.02, attribute
    other = taste_popularity(draw_tastes(3000, np.random.default_rng(6)))  # its own popularity: another shop
    assert np.abs(other["class"] - popularity["class"]).max() > 0.02
    with pytest.raises(ValueError, match="popularity\\['colour'\\]"):
        draw_tastes(2, np.random.default_rng(0), popularity={**popularity, "colour": np.ones(3)})


# --- the simulated logs -----------------------------------------------------------------------------------


def test_shoppers_view_and_buy_their_favourite_class_far_more_than_chance(store, events, catalogue):
    tastes = load_tastes(store)
    merged = events.merge(catalogue[["item_id", "class", "colour"]], on="item_id")
    top_class = merged["user_id"].map({u: t.top("class", 1)[0] for u, t in tastes.items()})
    top_colour = merged["user_id"].map({u: t.top("colour", 1)[0] for u, t in tastes.items()})
    in_top = merged["class"] == top_class
    views, buys = merged["event_type"] == "view", merged["event_type"] == "purchase"
    assert views.sum() > 1000 and buys.sum() > 50
    assert in_top[views].mean() > 2 / len(CLASSES)
    assert in_top[buys].mean() > 3 / len(CLASSES)
    assert (merged["colour"] == top_colour)[views].mean() > 2 / len(COLOURS)


def _top_decile_share(events: pd.DataFrame, n_items: int) -> float:
    counts = np.sort(events.loc[events["event_type"] == "view", "item_id"].value_counts().to_numpy())[::-1]
    return counts[: int(np.ceil(0.1 * n_items))].sum() / counts.sum()


def test_item_popularity_is_skewed_and_not_with_flat_appeal_and_tastes():
    catalogue = make_catalogue(500, np.random.default_rng(6))
    ids = [f"U{u:05d}" for u in range(600)]
    start = pd.Timestamp("2026-09-07", tz="UTC")
    tastes = dict(zip(ids, draw_tastes(600, np.random.default_rng(7)), strict=True))
    skewed = simulate_events(catalogue, tastes, start=start, weeks=3, rng=np.random.default_rng(8), show_progress=False)
    assert _top_decile_share(skewed, len(catalogue)) > 0.3

    flat = Taste(
        class_=np.full(8, 1 / 8),
        colour=np.full(10, 0.1),
        pattern=np.full(4, 0.25),
        price_sensitivity=0.0,
        activity=1.0,
    )
    uniform = simulate_events(
        catalogue,
        dict.fromkeys(ids, flat),
        start=start,
        weeks=3,
        rng=np.random.default_rng(8),
        show_progress=False,
        appeal=np.ones(len(catalogue)),
    )
    assert _top_decile_share(uniform, len(catalogue)) < 0.2


def test_timestamps_lie_in_the_period_and_increase_within_a_session(events):
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in events["timestamp"])
    ts = pd.to_datetime(events["timestamp"], utc=True)
    start = pd.Timestamp(CONFIG.start)
    assert ts.min() >= start and ts.max() < start + pd.Timedelta(weeks=CONFIG.weeks)
    assert ts.is_monotonic_increasing  # the file is sorted by time
    frame = events.assign(ts=ts)
    assert (frame.groupby("session_id")["ts"].diff().dropna() > pd.Timedelta(0)).all()
    assert (frame.groupby("session_id")["user_id"].nunique() == 1).all()
    assert (frame.groupby("session_id")["event_type"].first() == "view").all()
    assert frame["session_id"].str.fullmatch(r"S\d{7}").all() and frame["user_id"].str.fullmatch(r"U\d{5}").all()


def test_every_purchase_follows_a_cart_and_every_cart_a_view(events):
    seen: dict[str, set[str]] = {"view": set(), "add_to_cart": set()}
    for row in events.itertuples(index=False):
        key = f"{row.session_id}/{row.item_id}"
        if row.event_type == "add_to_cart":
            assert key in seen["view"]
        elif row.event_type == "purchase":
            assert key in seen["add_to_cart"]
        if row.event_type in seen:
            seen[row.event_type].add(key)


# --- the store on disk ------------------------------------------------------------------------------------


def test_layout_and_columns_are_exactly_as_documented(store, events, catalogue):
    assert sorted(p.name for p in store.iterdir()) == [
        "catalogue.csv",
        "events.csv",
        "hidden",
        "images",
        "store.json",
    ]
    assert sorted(p.name for p in (store / "hidden").iterdir()) == ["README.md", "tastes.json"]
    assert "never" in (store / "hidden" / "README.md").read_text()
    assert list(catalogue.columns) == ["item_id", "class", "colour", "pattern", "price", "image"]
    assert list(events.columns) == ["user_id", "session_id", "item_id", "event_type", "timestamp"]
    assert set(events["event_type"]) == {"view", "add_to_cart", "purchase"}
    assert set(events["item_id"]) <= set(catalogue["item_id"])

    assert len(catalogue) == CONFIG.n_items and catalogue["item_id"].is_unique
    assert len(catalogue.groupby(["class", "colour", "pattern"])) == 8 * 10 * 4  # every combination
    assert (catalogue["image"] == "images/" + catalogue["item_id"] + ".png").all()
    assert (catalogue["price"] > 0).all()
    raw_prices = (store / "catalogue.csv").read_text().splitlines()[1:]
    assert all(re.search(r",\d+\.\d\d,images/", line) for line in raw_prices)
    assert sorted(p.name for p in (store / "images").iterdir()) == sorted(catalogue["item_id"] + ".png")
    with Image.open(store / catalogue["image"].iloc[0]) as im:
        assert im.mode == "RGB" and im.size == (64, 64)

    meta = json.loads((store / "store.json").read_text())
    assert set(meta) == {"schema_version", "name", "seed", "config", "attributes", "counts", "start", "end"}
    assert meta["schema_version"] == 1 and meta["name"] == "vitrine-demo" and meta["seed"] == CONFIG.seed
    assert DemoStoreConfig.from_dict(meta["config"]) == CONFIG
    assert meta["attributes"] == ["class", "colour", "pattern"]
    assert meta["start"] == "2026-09-07T00:00:00Z" and meta["end"] == "2026-09-21T00:00:00Z"
    assert meta["counts"]["events"] == len(events) and meta["counts"]["items"] == CONFIG.n_items
    assert meta["counts"]["sessions"] == events["session_id"].nunique()

    tastes = load_tastes(store)
    assert sorted(tastes) == [f"U{u:05d}" for u in range(CONFIG.n_users)]
    assert set(events["user_id"]) <= set(tastes)


def test_a_failed_run_leaves_no_store_and_a_full_folder_is_refused(tmp_path, monkeypatch):
    import engine.world.demo_store as demo_store

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(demo_store, "simulate_events", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_demo_store(tmp_path / "store", DemoStoreConfig(**TINY), show_progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary folder

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="remove it or choose another"):
        write_demo_store(tmp_path / "full", DemoStoreConfig(**TINY), show_progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_items": 99}, "n_items must be between 100"),
        ({"n_users": 0}, "n_users must be between 1"),
        ({"weeks": 0}, "weeks must be between 1"),
        ({"image_size": 16}, "image_size must be between 32"),
        ({"seed": -1}, "seed must be between 0"),
        ({"n_items": 2000.0}, "n_items must be an integer"),
        ({"weeks": True}, "weeks must be an integer"),
        ({"start": datetime(2026, 9, 7)}, "timezone-aware UTC"),
        ({"start": datetime(2026, 9, 7, tzinfo=timezone(timedelta(hours=2)))}, "timezone-aware UTC"),
    ],
)
def test_config_rejects_bad_values_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemoStoreConfig(**kwargs)


def test_config_loader_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown DemoStoreConfig keys \\['n_itmes'\\]"):
        DemoStoreConfig.from_dict({"n_itmes": 500})
    assert DemoStoreConfig.from_dict(DemoStoreConfig(seed=4).to_dict()) == DemoStoreConfig(seed=4)
