"""The re-ranker's candidate sources and the features of each (shopper, candidate) pair.

Candidates for a shopper seen in training come from
  * repurchase — the shopper's own items (fashion shoppers buy the same article again, or in another size);
  * item-kNN — BM25-weighted item-item neighbours of the shopper's items (implicit's BM25Recommender);
  * product family — other variants (``group``, e.g. H&M's product_code) of the shopper's items;
  * ALS — the shopper's top items by the implicit ALS model's score;
  * recent best sellers — the last day's most bought items;
  * class best sellers — the week's best sellers of the shopper's favourite classes (with item attributes).
Each (shopper, candidate) pair gets features from every source plus ALS's score, cosine item-kNN and
same-session co-occurrence with the shopper's items, recency, popularity, the shopper's activity; for the
shopper's own items, the size of the session they were last bought in and — where the log says where each
purchase happened (online, in store) — how often that channel's purchases were bought again; when the
catalogue has them, how much of the shopper's history shares the candidate's class, colour and pattern, its
price and how it compares with what the shopper pays; and when the log has the price paid, whether the item
is on sale (its last-day and lowest price over its highest). Where the log has prices paid, an item's price
is their median over the sources' own log (so a training window never sees its label days' prices);
otherwise the catalogue's listed price.

:class:`CandidateSources` fits every source on one training log; :mod:`engine.recommend.reranker` fits one
per labelling window and a learned model on their features.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from engine.recommend.baselines import Interactions, PopularityRecommender, item_knn_similarity
from engine.recommend.factors import fit_embeddings
from engine.recommend.histories import Histories, stored_histories, with_sessions
from engine.recommend.rows import group_max, nonzero, onehot, relative, row_ranks, row_top, session_cooccurrence

if TYPE_CHECKING:
    from engine.recommend.reranker import RerankerConfig

# Per-shopper relative scores travel between training windows of different history lengths; absolute
# counts (all-time popularity, a shopper's number of items) did not, and made the ranker worse on H&M.
FEATURES = (
    "own_rel",
    "knn_rel",
    "family_rel",
    "als_rel",
    "blend",
    "own_days_since",
    "is_own",
    "knn_rank",
    "pop_1d",
    "own_purchases",
    "user_days_since",
    "user_items",
    "price_gap",
    "class_share",
    "colour_share",
    "pattern_share",
    "class_colour_share",
    "class_sales_rank",
    "discount_1d",
    "discount_min",
    "log_price",
    "own_session_items",
    "own_channel_rebuy",
    "basket_rel",
    "cosine_rel",
)
ATTRIBUTE_COLUMNS = ("class", "colour", "pattern")


class CandidateSources:
    """Every candidate source, fitted on one training log; :meth:`candidates` gives warm shoppers' candidates and
    each pair's :data:`FEATURES`."""

    def __init__(
        self,
        data: Interactions,
        groups: np.ndarray | None,
        attributes: pd.DataFrame | None,
        config: RerankerConfig,
        seed: int,
    ) -> None:
        self.config = config
        self.user_ids, self.item_ids = data.users.ids_, data.items.ids_
        ev = data.events
        ref_day = data.reference_time.floor("D")
        n_users, n_items = data.matrix.shape
        self.strength = data.matrix
        ones = np.ones(len(ev), dtype=np.float32)
        purchase = (ev["event_type"].astype(str) == "purchase").to_numpy()
        self.purchases = sp.csr_matrix(
            (ones[purchase], (ev["user_row"][purchase], ev["item_row"][purchase])), shape=(n_users, n_items)
        )
        age = ((ref_day - ev["timestamp"].dt.floor("D")).dt.days.to_numpy() + 1).astype(np.float32)
        last = pd.DataFrame({"u": ev["user_row"], "i": ev["item_row"], "age": age}).groupby(["u", "i"])["age"].min()
        self.own_age = sp.csr_matrix(
            (last.to_numpy(), (last.index.get_level_values(0), last.index.get_level_values(1))),
            shape=(n_users, n_items),
        )
        sold = ev[purchase] if purchase.any() else ev
        sold_age = age[purchase] if purchase.any() else age
        rows = sold["item_row"].to_numpy()
        self.pop = {
            "pop_1d": np.bincount(rows[sold_age <= 1], minlength=n_items).astype(np.float32),
            "pop_7d": np.bincount(rows[sold_age <= 7], minlength=n_items).astype(np.float32),
        }
        self.popular = PopularityRecommender(window_days=1).fit(data).ranking_
        self._fit_discounts(ev, age, n_items)
        self._fit_own_context(ev, purchase, n_users, n_items)

        knn = item_knn_similarity("bm25", data.matrix, config.knn_neighbours)
        self.similarity = knn.similarity.tocsr().astype(np.float32)
        self.cosine = item_knn_similarity("cosine", data.matrix, config.knn_neighbours).similarity.tocsr()
        self.basket = session_cooccurrence(ev, n_items)
        self.family = None
        if groups is not None:
            codes = pd.factorize(pd.Series(groups))[0]
            known = np.flatnonzero(np.asarray(groups) != "")
            g = sp.csr_matrix(
                (np.ones(len(known), np.float32), (known, codes[known])), shape=(n_items, codes.max() + 1)
            )
            same = (g @ g.T).tocsr()
            same.setdiag(0)
            same.eliminate_zeros()
            # a sibling's weight grows with how well it sells, so popular variants come first
            self.family = (same @ sp.diags(1.0 + np.log1p(self.pop["pop_7d"]))).tocsr()
        self.als = fit_embeddings(
            data.matrix, data.users.ids_, data.items.ids_, config.embeddings, seed=seed, show_progress=False
        )
        self._fit_attributes(attributes, n_items)

    def _fit_discounts(self, ev: pd.DataFrame, age: np.ndarray, n_items: int) -> None:
        """Where the log has the price paid: an item's mean price on the last day, and its lowest price, each
        over its highest price in the log (a sale shows as < 1; NaN where unknown)."""
        self.discount_1d = np.full(n_items, np.nan, np.float32)
        self.discount_min = np.full(n_items, np.nan, np.float32)
        self.paid_price = None
        if "price" not in ev or ev["price"].isna().all():
            return
        paid = pd.DataFrame({"i": ev["item_row"].to_numpy(), "p": ev["price"].to_numpy(), "age": age}).dropna()
        span = paid.groupby("i")["p"].agg(["min", "max", "median"])
        self.paid_price = np.full(n_items, np.nan)
        self.paid_price[span.index] = span["median"].to_numpy()
        last = paid[paid["age"] <= 1].groupby("i")["p"].mean()
        self.discount_1d[last.index] = (last / span["max"].reindex(last.index)).to_numpy()
        self.discount_min[span.index] = (span["min"] / span["max"]).to_numpy()

    def _fit_own_context(self, ev: pd.DataFrame, purchase: np.ndarray, n_users: int, n_items: int) -> None:
        """Per (shopper, own item): how many items the session of its last event held (one find among many is
        re-bought less often), and — where the log says where purchases happened — how often a purchase in
        that channel was bought again later in this log (an online order is re-bought in another size more
        often than a purchase tried on in a store)."""
        ev = ev.reset_index(drop=True)
        u, i = ev["user_row"].to_numpy(), ev["item_row"].to_numpy()
        session_items = ev.groupby("session_id", observed=True)["item_row"].transform("nunique").to_numpy()
        last = ev.groupby(["user_row", "item_row"])["timestamp"].idxmax().to_numpy()
        self.own_session = sp.csr_matrix(
            (session_items[last].astype(np.float32), (u[last], i[last])), shape=(n_users, n_items)
        )
        self.own_rebuy = None
        if "channel" not in ev or not purchase.any():
            return
        bought = ev[purchase].assign(day=ev["timestamp"][purchase].dt.floor("D"))
        bought = bought[bought["channel"].astype(str) != ""]
        last_day = bought.groupby(["user_row", "item_row"])["day"].transform("max")
        open_ = bought["day"] < bought["day"].max()  # a later day exists, so a re-buy could have been seen
        rebought = (bought["day"] < last_day)[open_]
        counts = rebought.groupby(bought["channel"][open_].astype(str)).agg(["mean", "size"])
        rate = counts["mean"][counts["size"] >= 100]  # too few purchases in a channel: leave it unknown
        if rate.empty:
            return
        per_event = bought["channel"].astype(str).map(rate).astype(float)
        pair = per_event.groupby([bought["user_row"], bought["item_row"]]).mean().dropna()
        # stored + 1, so that a measured rate of 0 is kept apart from "no own purchase" in the sparse matrix
        self.own_rebuy = sp.csr_matrix(
            (pair.to_numpy(np.float32) + 1, (pair.index.get_level_values(0), pair.index.get_level_values(1))),
            shape=(n_users, n_items),
        )

    def _fit_attributes(self, attributes: pd.DataFrame | None, n_items: int) -> None:
        """Per item: codes of its class, colour, pattern and (class, colour), -1 where unknown; its log price
        (the median paid in this log where it has prices paid, else the catalogue's); its sales rank within its
        class."""
        self.codes: dict[str, np.ndarray] = {}
        self.onehots: dict[str, sp.csr_matrix] = {}  # (items, values) per attribute
        self.log_price = np.full(n_items, np.nan, np.float32)
        if self.paid_price is not None:  # prices paid in this log beat the catalogue's: no later days in them
            self.log_price = np.log(self.paid_price).astype(np.float32)
        self.class_rank = np.full(n_items, np.nan, np.float32)
        if attributes is None:
            return
        cols = [c for c in ATTRIBUTE_COLUMNS if c in attributes]
        if {"class", "colour"} <= set(cols):
            attributes = attributes.assign(
                class_colour=attributes["class"].astype(str) + "|" + attributes["colour"].astype(str)
            )
            cols.append("class_colour")
        for col in cols:
            values = attributes[col].where(attributes[col].notna() & (attributes[col].astype(str) != ""))
            codes = pd.factorize(values)[0]
            self.codes[col] = codes
            self.onehots[col] = onehot(codes, n_items)
        if "price" in attributes and self.paid_price is None:
            price = pd.to_numeric(attributes["price"], errors="coerce").to_numpy(dtype=np.float64)
            self.log_price = np.log(np.where(price > 0, price, np.nan)).astype(np.float32)
        if "class" in self.codes:
            sales = pd.Series(self.pop["pop_7d"] + 1e-3 * self.pop["pop_1d"])
            self.class_rank = (
                sales.groupby(self.codes["class"]).rank(ascending=False, method="first").to_numpy(np.float32)
            )

    def _shares(self, hist: sp.csr_matrix) -> dict[str, np.ndarray]:
        """Per attribute, (shoppers, values): the share of each shopper's history strength in each value."""
        out = {}
        for col, values in self.onehots.items():
            per_user = (hist @ values).toarray()
            per_user /= np.maximum(per_user.sum(axis=1, keepdims=True), 1e-12)
            out[col] = per_user
        return out

    def _share(self, shares: dict[str, np.ndarray], col: str, pu: np.ndarray, pi: np.ndarray) -> np.ndarray:
        """Each pair's shopper's share in the candidate's value of ``col`` (NaN when the catalogue lacks it)."""
        if col not in shares:
            return np.full(len(pu), np.nan, np.float32)
        codes = self.codes[col][pi]
        out = np.zeros(len(pu), np.float32)
        ok = codes >= 0
        out[ok] = shares[col][pu[ok], codes[ok]]
        return out

    # ---- per-item lookups the features read for every shopper, made once (serving ranks one shopper a call)
    @functools.cached_property
    def best_by_class(self) -> dict[int, np.ndarray]:
        """Class code → its ``class_candidates`` best sellers (item rows)."""
        codes = self.codes["class"]
        best = self.class_rank <= self.config.class_candidates
        return {int(k): np.flatnonzero(best & (codes == k)) for k in np.unique(codes[best & (codes >= 0)])}

    @functools.cached_property
    def priced_items(self) -> tuple[sp.dia_matrix, np.ndarray]:
        """(diagonal 1 for items with a known price, log prices with 0 where unknown)."""
        priced = ~np.isnan(self.log_price)
        return sp.diags(priced.astype(np.float32)), np.nan_to_num(self.log_price)

    def _class_best_sellers(self, class_share: np.ndarray | None, shape: tuple[int, int]) -> sp.csr_matrix | None:
        """Candidates: the week's best sellers of each shopper's ``top_classes`` classes."""
        c = self.config
        if class_share is None or not c.class_candidates:
            return None
        by_class = self.best_by_class
        rows, cols = [], []
        for r in range(class_share.shape[0]):
            top = np.argsort(-class_share[r])[: c.top_classes]
            for k in top[class_share[r, top] > 0]:
                items = by_class.get(k, np.empty(0, np.int64))
                rows.append(np.full(len(items), r))
                cols.append(items)
        if not rows:
            return None
        r_, c_ = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.ones(len(r_), np.float32), (r_, c_)), shape=shape)

    def histories(self, user_rows: np.ndarray) -> Histories:
        """The stored histories of shoppers seen in training (``user_rows`` ≥ 0)."""
        return stored_histories(self, user_rows)

    def session_histories(
        self, user_rows: np.ndarray, sessions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> Histories:
        """Stored histories (none for user row -1) plus sessions; see :func:`with_sessions`."""
        return with_sessions(self, user_rows, sessions)

    def candidates(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair user positions, pair item rows, (pairs, len(FEATURES)) features) for warm users."""
        return self.pairs(self.histories(user_rows))

    def pairs(self, h: Histories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair shopper positions, pair item rows, (pairs, len(FEATURES)) features) for the shoppers of ``h``."""
        c = self.config
        hist = h.strength
        knn_full = (hist @ self.similarity).tocsr()
        fam_full = (hist @ self.family).tocsr() if self.family is not None else None
        shares = self._shares(hist)
        knn = row_top(knn_full, c.knn_candidates) if c.knn_candidates else None
        fam = row_top(fam_full, c.family_candidates) if (fam_full is not None and c.family_candidates) else None
        n = hist.shape[0]
        pop_top = self.popular[: c.popular_candidates]
        pop_m = sp.csr_matrix(
            (np.ones(n * len(pop_top), np.float32), (np.repeat(np.arange(n), len(pop_top)), np.tile(pop_top, n))),
            shape=hist.shape,
        )
        union = nonzero(hist) + pop_m
        if knn is not None:
            union = union + nonzero(knn)
        if fam is not None:
            union = union + nonzero(fam)
        n_als = min(c.als_candidates, hist.shape[1])  # a catalogue can hold fewer items than that
        if n_als:
            scores = h.factors @ self.als.item_factors.T
            top = np.argpartition(-scores, n_als - 1, axis=1)[:, :n_als]
            union = union + sp.csr_matrix(
                (np.ones(top.size, np.float32), (np.repeat(np.arange(n), top.shape[1]), top.ravel())), shape=hist.shape
            )
        best = self._class_best_sellers(shares.get("class"), hist.shape)
        if best is not None:
            union = union + best
        pairs = union.tocoo()
        pu, pi = pairs.row, pairs.col

        def at(m: sp.csr_matrix | None) -> np.ndarray:
            if m is None:
                return np.zeros(len(pu), np.float32)
            return np.asarray(m[pu, pi]).ravel().astype(np.float32)

        rank = row_ranks(knn_full)
        knn_rank = at(rank)
        knn_rank[knn_rank == 0] = 9999
        ages = h.age.tocsr()
        own_age = at(ages)
        own_age[own_age == 0] = 999
        uvec = h.factors[pu]
        als = np.einsum("ij,ij->i", uvec, self.als.item_factors[pi])
        own = at(hist)
        user_age = np.array(
            [ages.data[s:e].min() if e > s else 999 for s, e in zip(ages.indptr[:-1], ages.indptr[1:], strict=True)]
        )  # days since the shopper's last event
        user_items = np.diff(hist.indptr).astype(np.float32)
        # the shopper's strength-weighted mean log price, over the items whose price is known
        priced, log_price = self.priced_items
        w = hist @ priced
        user_price = np.asarray(w @ log_price).ravel() / np.maximum(np.asarray(w.sum(axis=1)).ravel(), 1e-12)
        own_rel = relative(own, pu, n)
        rebuy = at(h.rebuy) - 1 if h.rebuy is not None else np.full(len(pu), -1.0)
        rebuy[rebuy < 0] = np.nan  # not an own item, or its channel's rate is unknown
        knn_rel = relative(at(knn_full), pu, n)
        fam_rel = relative(at(fam_full), pu, n) if fam_full is not None else np.zeros(len(pu))
        feats = np.column_stack(
            [
                own_rel,
                knn_rel,
                fam_rel,
                als - group_max(als, pu, n),
                own_rel + knn_rel + 0.3 * fam_rel,  # a hand-made blend of the sources, a strong single feature
                own_age,
                (own > 0),
                knn_rank,
                self.pop["pop_1d"][pi],
                at(h.purchases),
                user_age[pu],
                user_items[pu],
                self.log_price[pi] - user_price[pu],
                self._share(shares, "class", pu, pi),
                self._share(shares, "colour", pu, pi),
                self._share(shares, "pattern", pu, pi),
                self._share(shares, "class_colour", pu, pi),
                self.class_rank[pi],
                self.discount_1d[pi],
                self.discount_min[pi],
                self.log_price[pi],
                at(h.session_items),
                rebuy,
                relative(at((hist @ self.basket).tocsr()), pu, n),
                relative(at((hist @ self.cosine).tocsr()), pu, n),
            ]
        ).astype(np.float32)
        return pu, pi, feats
