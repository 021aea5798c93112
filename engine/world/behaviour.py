"""Browsing logs of simulated shoppers: sessions of views, carts and purchases driven by hidden tastes.

The model, per shopper ``u`` with taste ``T_u`` over a period of ``weeks``:

1. ``Poisson(T_u.activity * weeks)`` sessions, each starting on a day chosen with a weekly rhythm
   (weekends busier) at an hour chosen with a daily rhythm (lunch and evening peaks, quiet nights).
2. A session browses a pool of up to ``pool_size`` distinct items: with probability ``category_share``
   from one category page (a class drawn from the shopper's class weights), otherwise from the whole
   catalogue (home page, search). Items are exposed in proportion to their latent ``appeal``
   (heavy-tailed, lognormal: shops show what sells), which makes item popularity skewed as in real shops.
   The shopper views ``1 + NegBin`` pool items, drawn without replacement with probability
   ∝ ``exp(utility_u(i)) * appeal_i ** appeal_in_choice`` (Gumbel top-k sampling), so tastes show in the
   logs, with noise.
3. A view becomes ``add_to_cart`` with probability ``cart_max * sigmoid(cart_bias + cart_slope * r)``,
   where ``r = utility - best utility`` (≤ 0 at the median price) measures how close the item is to the
   shopper's favourite; a cart becomes a ``purchase`` at checkout with probability ``purchase_probability``.
4. Events follow each other seconds to minutes apart (lognormal gaps); purchases come at the end.

Everything is vectorised over chunks of shoppers; only the chunk loop is in Python.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from engine.world.tastes import Taste, attribute_codes, best_utility, class_median_prices, utilities

logger = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase")
EVENT_COLUMNS: tuple[str, ...] = ("user_id", "session_id", "item_id", "event_type", "timestamp")

# Relative traffic per hour of the day (UTC: the shop is imagined in one time zone) and weekday (Mon..Sun).
HOURLY_RHYTHM = np.array(
    [0.3, 0.2, 0.12, 0.08, 0.08, 0.12, 0.3, 0.6, 0.8, 0.9, 1.0, 1.1,
     1.4, 1.3, 1.0, 0.95, 1.0, 1.1, 1.3, 1.6, 1.8, 1.7, 1.2, 0.6]
)  # fmt: skip
WEEKLY_RHYTHM = np.array([0.95, 0.9, 0.95, 1.0, 1.05, 1.2, 1.25])

_CHUNK = 512  # shoppers per vectorised step


@dataclass(frozen=True, kw_only=True)
class ShopperBehaviour:
    """Parameters of the browsing model (see the module docstring); the defaults give a plausible shop."""

    pool_size: int = 60
    category_share: float = 0.5  # share of sessions that browse a single class
    mean_extra_views: float = 4.5  # views per session = 1 + NegBin(mean_extra_views, views_dispersion)
    views_dispersion: float = 1.5
    max_views: int = 30
    appeal_sigma: float = 1.0  # σ of the lognormal item appeal, when the caller gives none
    appeal_in_choice: float = 0.5  # exponent of appeal in the choice among the pool (exposure has exponent 1)
    cart_max: float = 0.5
    cart_bias: float = 1.0
    cart_slope: float = 0.8
    purchase_probability: float = 0.45
    view_gap_median_s: float = 35.0
    view_gap_sigma: float = 0.8

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.max_views < 1:
            raise ValueError("ShopperBehaviour.pool_size and max_views must be ≥ 1")
        for name in (
            "mean_extra_views",
            "views_dispersion",
            "appeal_sigma",
            "cart_slope",
            "view_gap_median_s",
            "view_gap_sigma",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"ShopperBehaviour.{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("category_share", "cart_max", "purchase_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ShopperBehaviour.{name} must be a probability; got {getattr(self, name)!r}")

    def cart_probability(self, relative_utility: np.ndarray) -> np.ndarray:
        """P(add_to_cart | view) for items at ``relative_utility`` = utility - best utility (≤ 0 mostly)."""
        z = self.cart_bias + self.cart_slope * np.asarray(relative_utility, dtype=np.float64)
        return self.cart_max / (1.0 + np.exp(-z))


def draw_appeal(n_items: int, rng: np.random.Generator, sigma: float = 1.0) -> np.ndarray:
    """Latent item appeal: lognormal with median 1 and shape ``sigma`` (heavy-tailed popularity)."""
    return rng.lognormal(0.0, sigma, size=n_items)


def simulate_events(
    catalogue: pd.DataFrame,
    tastes: Mapping[str, Taste],
    *,
    start: pd.Timestamp,
    weeks: int,
    rng: np.random.Generator,
    show_progress: bool = True,
    appeal: np.ndarray | None = None,
    behaviour: ShopperBehaviour | None = None,
) -> pd.DataFrame:
    """Simulate ``weeks`` of browsing by the shoppers in ``tastes`` (user_id → taste) on ``catalogue``.

    ``catalogue`` needs the columns item_id, class, colour, pattern and price. ``appeal`` (one positive
    value per catalogue row) is drawn with :func:`draw_appeal` when not given. Returns one row per event
    with the columns user_id, session_id, item_id, event_type ("view" | "add_to_cart" | "purchase") and
    timestamp (UTC, whole seconds, within ``[start, start + weeks)``), sorted by timestamp. Session ids
    ("S0000000", ...) are unique and numbered in order of session start.
    """
    behaviour = behaviour or ShopperBehaviour()
    missing = [c for c in ("item_id", "class", "colour", "pattern", "price") if c not in catalogue.columns]
    if missing:
        raise ValueError(f"catalogue lacks the columns {missing}")
    if weeks < 1:
        raise ValueError(f"weeks must be ≥ 1; got {weeks}")
    start = pd.Timestamp(start)
    if start.tzinfo is None:
        raise ValueError(f"start must be timezone-aware (UTC); got {start}")
    n_items = len(catalogue)
    if n_items == 0:
        raise ValueError("the catalogue is empty")
    if appeal is None:
        appeal = draw_appeal(n_items, rng, behaviour.appeal_sigma)
    appeal = np.asarray(appeal, dtype=np.float64)
    if appeal.shape != (n_items,) or not (appeal > 0).all():
        raise ValueError(f"appeal must hold one positive value per catalogue item ({n_items}); got {appeal.shape}")
    log_appeal = np.log(appeal)
    reference = class_median_prices(catalogue)
    class_codes = attribute_codes(catalogue, "class")
    user_ids = list(tastes)
    horizon = weeks * 7 * 86400
    # Rhythms indexed from ``start``: day d of the period is weekday (start's weekday + d) % 7, and hour h
    # of a day begins at clock hour (start's hour + h) % 24.
    day_p = WEEKLY_RHYTHM[(start.weekday() + np.arange(7 * weeks)) % 7]
    hour_p = HOURLY_RHYTHM[(start.hour + np.arange(24)) % 24]

    parts: list[dict[str, np.ndarray]] = []
    n_sessions = 0
    with tqdm(total=len(user_ids), desc="shoppers", unit="user", disable=not show_progress) as bar:
        for lo in range(0, len(user_ids), _CHUNK):
            chunk = [tastes[u] for u in user_ids[lo : lo + _CHUNK]]
            util = utilities(chunk, catalogue, reference_prices=reference)  # (U, n_items)
            part, chunk_sessions = _simulate_chunk(
                util,
                best_utility(chunk),
                np.stack([t.weights("class") for t in chunk]),
                np.array([t.activity for t in chunk]),
                class_codes,
                log_appeal,
                weeks=weeks,
                day_p=day_p / day_p.sum(),
                hour_p=hour_p / hour_p.sum(),
                horizon=horizon,
                rng=rng,
                behaviour=behaviour,
            )
            part["user"] += lo
            part["session"] += n_sessions
            n_sessions += chunk_sessions
            parts.append(part)
            bar.update(len(chunk))

    ev = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else _empty()
    # Number the sessions that have events by start time (ties by user, then by key) across the store.
    session_keys, first = np.unique(ev["session"], return_index=True)  # events are in session order here
    rank = np.empty(len(session_keys), dtype=np.int64)
    rank[np.lexsort((session_keys, ev["user"][first], ev["time"][first]))] = np.arange(len(session_keys))
    session_rank = rank[np.searchsorted(session_keys, ev["session"])]
    order = np.lexsort((ev["seq"], session_rank, ev["time"]))

    width = max(7, len(str(max(len(session_keys) - 1, 0))))
    session_names = np.array([f"S{i:0{width}d}" for i in range(len(session_keys))], dtype=object)
    users = np.array(user_ids, dtype=object)
    items = catalogue["item_id"].to_numpy(dtype=object)
    events = pd.DataFrame(
        {
            "user_id": users[ev["user"][order]],
            "session_id": session_names[session_rank[order]],
            "item_id": items[ev["item"][order]],
            "event_type": np.array(EVENT_TYPES, dtype=object)[ev["kind"][order]],
            "timestamp": start + pd.to_timedelta(ev["time"][order], unit="s"),
        }
    )
    events["timestamp"] = events["timestamp"].dt.tz_convert("UTC")
    counts = events["event_type"].value_counts()
    logger.info(
        "simulated %d sessions of %d shoppers: %d views, %d carts, %d purchases",
        len(session_keys),
        events["user_id"].nunique(),
        counts.get("view", 0),
        counts.get("add_to_cart", 0),
        counts.get("purchase", 0),
    )
    return events


def _empty() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=np.int64) for k in ("user", "session", "item", "kind", "time", "seq")}


def _simulate_chunk(
    util: np.ndarray,  # (U, n_items)
    best: np.ndarray,  # (U,)
    class_weights: np.ndarray,  # (U, n_classes)
    activity: np.ndarray,  # (U,) sessions per week
    class_codes: np.ndarray,  # (n_items,)
    log_appeal: np.ndarray,  # (n_items,)
    *,
    weeks: int,
    day_p: np.ndarray,  # (7 * weeks,) probability of each day of the period
    hour_p: np.ndarray,  # (24,) probability of each hour of a day
    horizon: int,
    rng: np.random.Generator,
    behaviour: ShopperBehaviour,
) -> tuple[dict[str, np.ndarray], int]:
    """Events of one chunk of shoppers, and its number of sessions.

    Events are integer arrays in session order: user (row in the chunk), session (index in the chunk),
    item (catalogue row), kind (index in EVENT_TYPES), time (seconds after start), seq (order in session).
    """
    n_users, n_items = util.shape
    b = behaviour
    n_sessions = rng.poisson(activity * weeks)
    owner = np.repeat(np.arange(n_users), n_sessions)  # (S,)
    s = len(owner)
    if s == 0:
        return _empty(), 0

    # Browse pool: distinct items per session (duplicates from sampling with replacement are masked out),
    # from one class's page or from the whole catalogue.
    pool_size = min(b.pool_size, n_items)
    by_class = np.argsort(class_codes, kind="stable")
    class_count = np.bincount(class_codes, minlength=class_weights.shape[1])
    class_start = np.r_[0, np.cumsum(class_count)[:-1]]
    cum = np.cumsum(class_weights[owner], axis=1)
    page = np.minimum((rng.random((s, 1)) * cum[:, -1:] > cum).sum(axis=1), class_weights.shape[1] - 1)
    on_page = (rng.random(s) < b.category_share) & (class_count[page] > 0)
    lo = np.where(on_page, class_start[page], 0)
    hi = np.where(on_page, class_start[page] + class_count[page], n_items)
    # Exposure ∝ appeal: inverse-CDF sampling on the appeal accumulated over the items sorted by class.
    cum_appeal = np.cumsum(np.exp(log_appeal[by_class]))
    below = np.r_[0.0, cum_appeal][lo][:, None]
    total = cum_appeal[hi - 1][:, None] - below
    target = below + rng.random((s, pool_size)) * total
    rank = np.clip(np.searchsorted(cum_appeal, target, side="right"), lo[:, None], hi[:, None] - 1)
    pool = np.sort(by_class[rank], axis=1)
    duplicate = np.zeros_like(pool, dtype=bool)
    duplicate[:, 1:] = pool[:, 1:] == pool[:, :-1]
    # Gumbel top-k: the first k of the keys sorted descending are a draw without replacement ∝ exp(score).
    score = util[owner[:, None], pool] + b.appeal_in_choice * log_appeal[pool]
    keys = np.where(duplicate, -np.inf, score + rng.gumbel(size=pool.shape))
    n_views = 1 + rng.poisson(rng.gamma(b.views_dispersion, b.mean_extra_views / b.views_dispersion, size=s))
    n_views = np.minimum(n_views, min(b.max_views, pool_size))
    width = int(n_views.max())
    pick = np.argsort(-keys, axis=1, kind="stable")[:, :width]  # (S, width)
    viewed = np.take_along_axis(pool, pick, axis=1)
    valid = (np.arange(width)[None, :] < n_views[:, None]) & np.isfinite(np.take_along_axis(keys, pick, axis=1))

    relative = util[owner[:, None], viewed] - best[owner][:, None]
    carted = valid & (rng.random(viewed.shape) < b.cart_probability(relative))
    bought = carted & (rng.random(viewed.shape) < b.purchase_probability)

    # Event table: a view, then its cart; purchases at checkout after the last browsing event.
    slot = np.broadcast_to(np.arange(width), viewed.shape)
    sess = np.broadcast_to(np.arange(s)[:, None], viewed.shape)
    kinds = [(valid, 0, 2 * slot), (carted, 1, 2 * slot + 1), (bought, 2, 2 * width + slot)]
    sess_e = np.concatenate([sess[m] for m, _, _ in kinds])
    item_e = np.concatenate([viewed[m] for m, _, _ in kinds])
    kind_e = np.concatenate([np.full(int(m.sum()), k) for m, k, _ in kinds])
    seq_e = np.concatenate([q[m] for m, _, q in kinds])
    order = np.lexsort((seq_e, sess_e))
    sess_e, item_e, kind_e, seq_e = sess_e[order], item_e[order], kind_e[order], seq_e[order]

    # Gaps (whole seconds) before each event; the first event of a session starts it.
    n = len(sess_e)
    view_gap = np.exp(rng.normal(math.log(b.view_gap_median_s), b.view_gap_sigma, size=n))
    gap = np.clip(np.round(view_gap), 2, 900)
    gap = np.where(kind_e == 1, rng.integers(3, 45, size=n), gap)
    first_purchase = (kind_e == 2) & np.r_[True, (kind_e[:-1] != 2) | (sess_e[:-1] != sess_e[1:])]
    gap = np.where(
        kind_e == 2, np.where(first_purchase, rng.integers(30, 240, size=n), rng.integers(2, 10, size=n)), gap
    )
    new_session = np.r_[True, sess_e[1:] != sess_e[:-1]]
    gap = np.where(new_session, 0, gap).astype(np.int64)
    elapsed = np.cumsum(gap)
    elapsed -= np.repeat(elapsed[new_session], np.diff(np.r_[np.flatnonzero(new_session), n]))
    duration = np.zeros(s, dtype=np.int64)
    np.maximum.at(duration, sess_e, elapsed)

    # Session starts: a day with the weekly rhythm, an hour with the daily rhythm, a uniform second in it.
    day = rng.choice(len(day_p), size=s, p=day_p)
    hour = rng.choice(24, size=s, p=hour_p)
    begin = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=s)
    begin = np.minimum(begin, horizon - 1 - duration)  # a late session is moved earlier to end in the period
    time_e = begin[sess_e] + elapsed

    events = {
        "user": owner[sess_e],
        "session": sess_e,
        "item": item_e,
        "kind": kind_e,
        "time": time_e,
        "seq": seq_e,
    }
    return events, s
