"""The embedded demo store: a seeded synthetic shop written to disk (``vitrine data demo``).

Layout of a store folder::

    store.json              schema_version, name, seed, resolved config, attributes, counts, start, end
    catalogue.csv           item_id,class,colour,pattern,price,image
    images/<item_id>.png    image_size × image_size RGB drawings
    events.csv              user_id,session_id,item_id,event_type,timestamp   (ISO 8601 UTC, sorted by time)
    hidden/tastes.json      {"schema_version": 1, "users": {user_id: Taste.to_dict()}}: evaluation only
    hidden/README.md

The store is built in a temporary sibling folder, with ``store.json`` written last, and renamed into
place: a crash never leaves a folder that looks like a complete store. Randomness: the seed's
:class:`numpy.random.SeedSequence` is split into independent streams for the catalogue, the drawings,
the tastes and the logs, so each step is reproducible on its own and the same seed gives byte-identical
files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from engine.world.art import CLASSES, COLOURS, PATTERNS, draw_item
from engine.world.behaviour import EVENT_COLUMNS, EVENT_TYPES, simulate_events
from engine.world.tastes import ATTRIBUTES, Taste, draw_tastes

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STORE_NAME = "vitrine-demo"
CATALOGUE_COLUMNS: tuple[str, ...] = ("item_id", "class", "colour", "pattern", "price", "image")
#: Typical price of each class (EUR); an item's price is this × LogNormal(0, PRICE_SIGMA).
BASE_PRICES: dict[str, float] = {
    "t-shirt": 19.0, "dress": 49.0, "trousers": 45.0, "skirt": 35.0,
    "coat": 119.0, "sneaker": 79.0, "handbag": 69.0, "cap": 17.0,
}  # fmt: skip
PRICE_SIGMA = 0.35
MIN_ITEMS = 100
_HIDDEN_README = """\
# hidden/

Evaluation-only ground truth: `tastes.json` holds the true preferences of every simulated shopper of this
demo store (class, colour and pattern weights, price sensitivity, activity), from which `events.csv` was
simulated. Training must never read this folder, or offline metrics stop meaning anything; only evaluation
(and the A/B simulator) may open it, through `engine.world.load_tastes`.
"""


@dataclass(frozen=True, kw_only=True)
class DemoStoreConfig:
    """Size and seed of a demo store; logs cover ``weeks`` from ``start`` (a timezone-aware UTC datetime)."""

    n_items: int = 2000
    n_users: int = 3000
    weeks: int = 8
    image_size: int = 64
    start: datetime = datetime(2026, 9, 7, tzinfo=UTC)
    seed: int = 0

    def __post_init__(self) -> None:
        limits = {
            "n_items": (MIN_ITEMS, 999_999),
            "n_users": (1, 999_999),
            "weeks": (1, 520),
            "image_size": (32, 256),
            "seed": (0, 2**63 - 1),
        }
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"DemoStoreConfig.{name} must be an integer; got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"DemoStoreConfig.{name} must be between {lo:,} and {hi:,}; got {value:,}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() != timedelta(0):
            raise ValueError(
                f"DemoStoreConfig.start must be a timezone-aware UTC datetime, e.g. "
                f"datetime(2026, 9, 7, tzinfo=UTC); got {self.start!r}"
            )

    @property
    def end(self) -> datetime:
        """The end of the logged period (exclusive)."""
        return self.start + timedelta(weeks=self.weeks)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = _iso(self.start)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoStoreConfig:
        """Strict inverse of :meth:`to_dict`: an unknown key is an error, not a new setting."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DemoStoreConfig keys {unknown}; known keys are {sorted(known)}")
        values = dict(data)
        if isinstance(values.get("start"), str):
            values["start"] = datetime.fromisoformat(values["start"].replace("Z", "+00:00"))
        return cls(**values)


def make_catalogue(n_items: int, rng: np.random.Generator) -> pd.DataFrame:
    """Item attributes and prices: columns item_id, class, colour, pattern, price, image.

    With ``n_items`` ≥ 320 every (class, colour, pattern) combination appears at least once; the other
    items are drawn with a mild skew (some classes, colours and patterns more common). Row order is
    shuffled, so an item id says nothing about its attributes.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be ≥ 1; got {n_items}")
    colours = tuple(COLOURS)
    sizes = (len(CLASSES), len(colours), len(PATTERNS))
    combos = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)  # (320, 3)
    skew = [
        rng.dirichlet(np.full(len(CLASSES), 12.0)),
        rng.dirichlet(np.full(len(colours), 12.0)),
        np.array([0.4, 0.2, 0.2, 0.2]),
    ]
    n_extra = n_items - len(combos) if n_items >= len(combos) else n_items
    extra = np.stack([rng.choice(len(p), size=n_extra, p=p) for p in skew], axis=1)
    codes = np.concatenate([combos, extra]) if n_items >= len(combos) else extra
    codes = codes[rng.permutation(len(codes))]
    classes = np.array(CLASSES)[codes[:, 0]]
    base = np.array([BASE_PRICES[c] for c in CLASSES])[codes[:, 0]]
    price = np.maximum(np.round(base * rng.lognormal(0.0, PRICE_SIGMA, size=n_items), 2), 1.0)
    width = max(5, len(str(n_items - 1)))
    ids = [f"I{i:0{width}d}" for i in range(n_items)]
    return pd.DataFrame(
        {
            "item_id": ids,
            "class": classes,
            "colour": np.array(colours)[codes[:, 1]],
            "pattern": np.array(PATTERNS)[codes[:, 2]],
            "price": price,
            "image": [f"images/{i}.png" for i in ids],
        }
    )


def write_demo_store(out_dir: Path, config: DemoStoreConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Generate the demo store described by ``config`` into ``out_dir`` (which must not exist or be empty).

    Returns a summary: the folder, counts (items, users, active users, sessions, events by type) and the
    seconds each step took.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not an empty folder; remove it or choose another --out folder"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t_total = time.perf_counter()
    timings: dict[str, float] = {}
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(4)]
    catalogue_rng, art_rng, taste_rng, log_rng = streams

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the store is not
        t = time.perf_counter()
        catalogue = make_catalogue(config.n_items, catalogue_rng)
        (tmp / "images").mkdir()
        rows = zip(catalogue["class"], catalogue["colour"], catalogue["pattern"], catalogue["image"], strict=True)
        for kind, colour, pattern, rel in tqdm(
            rows, total=len(catalogue), desc="drawing items", unit="img", disable=not show_progress
        ):
            Image.fromarray(draw_item(kind, colour, pattern, art_rng, config.image_size)).save(tmp / rel)
        _write_csv(catalogue[list(CATALOGUE_COLUMNS)], tmp / "catalogue.csv")
        timings["catalogue"] = time.perf_counter() - t
        logger.info("drew %d catalogue items in %.1f s", len(catalogue), timings["catalogue"])

        t = time.perf_counter()
        width = max(5, len(str(config.n_users - 1)))
        user_ids = [f"U{u:0{width}d}" for u in range(config.n_users)]
        tastes = dict(zip(user_ids, draw_tastes(config.n_users, taste_rng), strict=True))
        (tmp / "hidden").mkdir()
        users = {u: taste.to_dict() for u, taste in tastes.items()}
        (tmp / "hidden" / "tastes.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "users": users}))
        (tmp / "hidden" / "README.md").write_text(_HIDDEN_README)
        timings["tastes"] = time.perf_counter() - t

        t = time.perf_counter()
        events = simulate_events(
            catalogue,
            tastes,
            start=pd.Timestamp(config.start),
            weeks=config.weeks,
            rng=log_rng,
            show_progress=show_progress,
        )
        timings["simulate"] = time.perf_counter() - t
        t = time.perf_counter()
        out = events[list(EVENT_COLUMNS)].copy()
        out["timestamp"] = np.datetime_as_string(
            events["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[s]"), unit="s"
        )
        out["timestamp"] += "Z"
        _write_csv(out, tmp / "events.csv")
        timings["write_events"] = time.perf_counter() - t

        by_type = events["event_type"].value_counts()
        counts = {
            "items": len(catalogue),
            "users": config.n_users,
            "active_users": int(events["user_id"].nunique()),
            "sessions": int(events["session_id"].nunique()),
            "events": len(events),
            **{k: int(by_type.get(k, 0)) for k in EVENT_TYPES},
        }
        meta = {
            "schema_version": SCHEMA_VERSION,
            "name": STORE_NAME,
            "seed": config.seed,
            "config": config.to_dict(),
            "attributes": list(ATTRIBUTES),
            "counts": counts,
            "start": _iso(config.start),
            "end": _iso(config.end),
        }
        (tmp / "store.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks the store complete
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    timings["total"] = time.perf_counter() - t_total
    logger.info("demo store written to %s in %.1f s: %s", out_dir, timings["total"], counts)
    return {
        "path": str(out_dir),
        "counts": counts,
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
    }


def load_tastes(store_dir: Path) -> dict[str, Taste]:
    """The hidden tastes of a demo store (user_id → :class:`Taste`): for evaluation, never for training."""
    path = Path(store_dir) / "hidden" / "tastes.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: hidden tastes exist only in a demo store made by `vitrine data demo`"
        )
    data = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {data.get('schema_version')!r}; this code reads "
            f"version {SCHEMA_VERSION}. Regenerate the store with `vitrine data demo`."
        )
    return {user: Taste.from_dict(taste) for user, taste in data["users"].items()}


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.2f", lineterminator="\n")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
