"""Vitrine's default recommender: several candidate sources, re-ranked by a learned model.

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
A bag of LightGBM models scores the pairs (a binary "bought" objective by default, lambdarank as an option).
They are trained without touching the evaluation period: the sources are fitted on the training log minus
its last ``label_days``, and the labels are the purchases in those days, for several such windows (a sparse
log adds older windows until it has enough labels; with too few even then, the sources' hand-made blend
ranks instead of a model that would fit noise). For prediction, the sources are refitted on the whole
training log. Shoppers unseen in training get the recent best sellers.

The sources weight events with their own recency half-life (``RerankerConfig.half_life_days``, 3 days):
chosen on validation days cut from the H&M training week (2020-09-20 and -21), never on the test day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from engine.recommend.baselines import Interactions, PopularityRecommender, build_interactions, item_knn_similarity
from engine.recommend.factors import fit_embeddings
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig

logger = logging.getLogger(__name__)

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


def _group_max(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, values)
    return top[groups]


def _relative(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Each value divided by the largest value of its group (its shopper): scale-free per shopper."""
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, values)
    top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    return values / top[groups]


@dataclass(frozen=True, kw_only=True)
class RerankerConfig:
    label_days: int = 1  # length of one labelling window (the horizon being predicted)
    label_windows: int = 5  # consecutive windows at the end of the training log, each with its own sources
    # A learned ranker needs labels. On H&M validation days a ranker trained on about 240 purchases scored
    # below the sources' hand-made blend on one day, and on 570-740 it beat the blend on both. A sparse log
    # adds older windows until it has ``min_positives`` purchases among the candidates (at most
    # ``max_label_windows``); with fewer still, it ranks by the blend.
    min_positives: int = 500
    max_label_windows: int = 30
    knn_neighbours: int = 100
    knn_candidates: int = 40
    family_candidates: int = 20
    popular_candidates: int = 20
    als_candidates: int = 40
    class_candidates: int = 10  # best sellers of each of the shopper's top classes
    top_classes: int = 3
    max_train_users: int = 20_000
    half_life_days: float | None = 3.0  # the sources' recency weighting (None: keep the caller's)
    embeddings: EmbeddingConfig = field(default_factory=lambda: EmbeddingConfig(factors=64, iterations=15))
    model: str = "binary"  # LightGBM objective: "binary" (bought or not) or "lambdarank" (NDCG per shopper)
    bag: int = 5  # models on row/feature subsamples, averaged
    max_iter: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 7  # small trees and large leaves: a week of logs gives a few thousand labelled shoppers
    min_child_samples: int = 200

    def __post_init__(self) -> None:
        if self.model not in ("lambdarank", "binary"):
            raise ValueError(f"model must be 'lambdarank' or 'binary'; got {self.model!r}")
        if self.bag < 1:
            raise ValueError(f"bag must be >= 1; got {self.bag}")
        if self.label_days < 1 or min(self.knn_candidates, self.family_candidates, self.popular_candidates) < 0:
            raise ValueError("label_days must be >= 1 and candidate counts >= 0")
        if not 1 <= self.label_windows <= self.max_label_windows or self.min_positives < 1:
            raise ValueError(
                f"need 1 <= label_windows <= max_label_windows and min_positives >= 1; got {self.label_windows}, "
                f"{self.max_label_windows}, {self.min_positives}"
            )


def _session_cooccurrence(ev: pd.DataFrame, n_items: int, max_items: int = 50) -> sp.csr_matrix:
    """Item-item cosine over sessions (H&M: a shopper's purchases of one day): items that share baskets.

    Sessions with more than ``max_items`` distinct items are left out: a session of n items adds n² pairs,
    and a browsing spree says little about which items go together (none in H&M's week or the demo store).
    """
    sessions = pd.factorize(ev["session_id"])[0]
    s_i = sp.csr_matrix(
        (np.ones(len(ev), np.float32), (sessions, ev["item_row"].to_numpy())), shape=(sessions.max() + 1, n_items)
    )
    s_i.data[:] = 1.0  # an item counts once per session
    s_i = s_i[np.diff(s_i.indptr) <= max_items]
    co = (s_i.T @ s_i).tocsr()
    inv = sp.diags(1.0 / np.sqrt(np.maximum(co.diagonal(), 1)))
    co.setdiag(0)
    co.eliminate_zeros()
    return (inv @ co @ inv).tocsr().astype(np.float32)


def _row_top(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep each row's n largest entries."""
    matrix = matrix.tocsr()
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if end == start:
            continue
        d, c = matrix.data[start:end], matrix.indices[start:end]
        if len(d) > n:
            keep = np.argpartition(-d, n - 1)[:n]
            d, c = d[keep], c[keep]
        rows.append(np.full(len(d), r))
        cols.append(c)
        vals.append(d)
    if not rows:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape)


def _row_ranks(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Same pattern, values replaced by the 1-based rank of each entry within its row (largest = 1)."""
    matrix = matrix.tocsr().copy()
    for r in range(matrix.shape[0]):
        s, e = matrix.indptr[r], matrix.indptr[r + 1]
        if e > s:
            order = np.argsort(-matrix.data[s:e], kind="stable")
            ranks = np.empty(e - s)
            ranks[order] = np.arange(1, e - s + 1)
            matrix.data[s:e] = ranks
    return matrix


class _Sources:
    """Candidate sources and features, fitted on one training log."""

    def __init__(
        self,
        data: Interactions,
        groups: np.ndarray | None,
        attributes: pd.DataFrame | None,
        config: RerankerConfig,
        seed: int,
    ) -> None:
        self.data = data
        self.config = config
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
        self.basket = _session_cooccurrence(ev, n_items)
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
            known = np.flatnonzero(codes >= 0)
            self.codes[col] = codes
            self.onehots[col] = sp.csr_matrix(
                (np.ones(len(known), np.float32), (known, codes[known])), shape=(n_items, max(codes.max() + 1, 1))
            )
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
        for col, onehot in self.onehots.items():
            per_user = (hist @ onehot).toarray()
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

    def _class_best_sellers(self, class_share: np.ndarray | None, shape: tuple[int, int]) -> sp.csr_matrix | None:
        """Candidates: the week's best sellers of each shopper's ``top_classes`` classes."""
        c = self.config
        if class_share is None or not c.class_candidates:
            return None
        codes = self.codes["class"]
        best = self.class_rank <= c.class_candidates
        by_class = {k: np.flatnonzero(best & (codes == k)) for k in np.unique(codes[best & (codes >= 0)])}
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

    def candidates(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair user positions, pair item rows, (pairs, len(FEATURES)) features) for warm users."""
        c = self.config
        hist = self.strength[user_rows]
        knn_full = (hist @ self.similarity).tocsr()
        fam_full = (hist @ self.family).tocsr() if self.family is not None else None
        shares = self._shares(hist)
        knn = _row_top(knn_full, c.knn_candidates) if c.knn_candidates else None
        fam = _row_top(fam_full, c.family_candidates) if (fam_full is not None and c.family_candidates) else None
        n = len(user_rows)
        pop_top = self.popular[: c.popular_candidates]
        pop_m = sp.csr_matrix(
            (np.ones(n * len(pop_top), np.float32), (np.repeat(np.arange(n), len(pop_top)), np.tile(pop_top, n))),
            shape=hist.shape,
        )
        union = (hist != 0).astype(np.float32) + pop_m
        if knn is not None:
            union = union + (knn != 0).astype(np.float32)
        if fam is not None:
            union = union + (fam != 0).astype(np.float32)
        n_als = min(c.als_candidates, hist.shape[1])  # a catalogue can hold fewer items than that
        if n_als:
            scores = self.als.user_factors[user_rows] @ self.als.item_factors.T
            top = np.argpartition(-scores, n_als - 1, axis=1)[:, :n_als]
            union = union + sp.csr_matrix(
                (np.ones(top.size, np.float32), (np.repeat(np.arange(n), top.shape[1]), top.ravel())), shape=hist.shape
            )
        best = self._class_best_sellers(shares.get("class"), hist.shape)
        if best is not None:
            union = union + best
        union = union.tocoo()
        pu, pi = union.row, union.col

        def at(m: sp.csr_matrix | None) -> np.ndarray:
            if m is None:
                return np.zeros(len(pu), np.float32)
            return np.asarray(m[pu, pi]).ravel().astype(np.float32)

        rank = _row_ranks(knn_full)
        knn_rank = at(rank)
        knn_rank[knn_rank == 0] = 9999
        ages = self.own_age[user_rows].tocsr()
        own_age = at(ages)
        own_age[own_age == 0] = 999
        uvec = self.als.user_factors[user_rows[pu]]
        als = np.einsum("ij,ij->i", uvec, self.als.item_factors[pi])
        own = at(hist)
        user_age = np.array(
            [ages.data[s:e].min() if e > s else 999 for s, e in zip(ages.indptr[:-1], ages.indptr[1:], strict=True)]
        )  # days since the shopper's last event
        user_items = np.diff(hist.indptr).astype(np.float32)
        # the shopper's strength-weighted mean log price, over the items whose price is known
        priced = ~np.isnan(self.log_price)
        w = hist @ sp.diags(priced.astype(np.float32))
        user_price = np.asarray(w @ np.nan_to_num(self.log_price)).ravel() / np.maximum(
            np.asarray(w.sum(axis=1)).ravel(), 1e-12
        )
        own_rel = _relative(own, pu, n)
        rebuy = at(self.own_rebuy[user_rows]) - 1 if self.own_rebuy is not None else np.full(len(pu), -1.0)
        rebuy[rebuy < 0] = np.nan  # not an own item, or its channel's rate is unknown
        knn_rel = _relative(at(knn_full), pu, n)
        fam_rel = _relative(at(fam_full), pu, n) if fam_full is not None else np.zeros(len(pu))
        feats = np.column_stack(
            [
                own_rel,
                knn_rel,
                fam_rel,
                als - _group_max(als, pu, n),
                own_rel + knn_rel + 0.3 * fam_rel,  # a hand-made blend of the sources, a strong single feature
                own_age,
                (own > 0),
                knn_rank,
                self.pop["pop_1d"][pi],
                at(self.purchases[user_rows]),
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
                at(self.own_session[user_rows]),
                rebuy,
                _relative(at((hist @ self.basket).tocsr()), pu, n),
                _relative(at((hist @ self.cosine).tocsr()), pu, n),
            ]
        ).astype(np.float32)
        return pu, pi, feats


class _Bag:
    """LightGBM models trained on different row and feature subsamples; their scores averaged."""

    def __init__(self, models: list) -> None:
        self.models = models

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.predict(x) for m in self.models], axis=0)


class RerankRecommender:
    """Candidate sources + a learned re-ranker; see the module docstring."""

    name = "vitrine (candidates + re-ranker)"

    def __init__(
        self,
        config: RerankerConfig | None = None,
        *,
        catalogue: pd.DataFrame | None = None,
        weighting: WeightingConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or RerankerConfig()
        # indexed by item_id; any of group (product family, "" when unknown), class, colour, pattern and price
        self.catalogue = catalogue
        weighting = weighting or WeightingConfig()
        if self.config.half_life_days is not None:
            weighting = replace(weighting, half_life_days=self.config.half_life_days)
        self.weighting = weighting  # the caller's event-type weights, with the sources' own half-life
        self.seed = seed

    def _groups(self, data: Interactions) -> np.ndarray | None:
        if self.catalogue is None or "group" not in self.catalogue:
            return None
        g = self.catalogue["group"].reindex(data.items.ids_).fillna("").astype(str).to_numpy()
        return g if (g != "").any() else None

    def _attributes(self, data: Interactions) -> pd.DataFrame | None:
        if self.catalogue is None:
            return None
        return self.catalogue.reindex(data.items.ids_)

    def _sources(self, data: Interactions) -> _Sources:
        return _Sources(data, self._groups(data), self._attributes(data), self.config, self.seed)

    def _window(self, events: pd.DataFrame, cut: pd.Timestamp, end: pd.Timestamp, rng: np.random.Generator):
        """Labelled pairs of one window: sources fitted before ``cut``, purchases in [cut, end) as labels."""
        fit_ev = events[events["timestamp"] < cut]
        label_ev = events[(events["timestamp"] >= cut) & (events["timestamp"] < end)]
        label_ev = label_ev[label_ev["event_type"].astype(str) == "purchase"]
        if fit_ev.empty or label_ev.empty:
            return None
        fit_data = build_interactions(fit_ev, self.weighting)
        src = self._sources(fit_data)
        users = fit_data.users.transform(label_ev["user_id"].unique())
        users = users[users >= 0]
        if len(users) > self.config.max_train_users:
            users = rng.choice(users, self.config.max_train_users, replace=False)
        if len(users) == 0:
            return None
        pu, pi, x = src.candidates(users)
        bought = set(
            zip(
                fit_data.users.transform(label_ev["user_id"]),
                fit_data.items.transform(label_ev["item_id"]),
                strict=True,
            )
        )
        y = np.fromiter(((int(users[u]), int(i)) in bought for u, i in zip(pu, pi, strict=True)), bool, len(pu))
        return x, y, pu

    def fit(self, data: Interactions) -> RerankRecommender:
        c = self.config
        events = data.events.drop(columns=["user_row", "item_row", "weight"])
        rng = np.random.default_rng(self.seed)
        end = data.reference_time.floor("D") + pd.Timedelta(days=1)
        first = events["timestamp"].min()
        parts, positives, windows = [], 0, 0
        # the default windows, then older ones while the labels are too few to learn from
        while windows < c.label_windows or (positives < c.min_positives and windows < c.max_label_windows):
            window_end = end - pd.Timedelta(days=windows * c.label_days)
            cut = window_end - pd.Timedelta(days=c.label_days)
            if cut <= first:  # nothing left to fit sources on
                break
            windows += 1
            part = self._window(events, cut, window_end, rng)
            if part is not None:
                parts.append(part)
                positives += int(part[1].sum())
        pairs = sum(len(p[1]) for p in parts)
        self.model_ = None
        if positives >= c.min_positives and positives < pairs:
            self.model_ = self._train(parts)
            logger.info("re-ranker trained on %d pairs (%d positives) from %d windows", pairs, positives, windows)
        else:
            logger.warning(
                "re-ranker: %d purchases among the candidates of %d label windows (need %d); ranking by the "
                "sources' blend instead of a learned model",
                positives,
                windows,
                c.min_positives,
            )
        self.training_ = {
            "windows": windows,
            "pairs": pairs,
            "positives": positives,
            "ranker": "lightgbm" if self.model_ is not None else "blend (too few labels)",
        }
        # the same events under the sources' own weighting: same shoppers and items, so the same rows
        reweighted = build_interactions(events, self.weighting)
        if not (
            np.array_equal(reweighted.users.ids_, data.users.ids_)
            and np.array_equal(reweighted.items.ids_, data.items.ids_)
        ):
            raise RuntimeError("re-weighting the training events changed the user or item rows")
        self.sources_ = self._sources(reweighted)
        return self

    def _train(self, parts: list) -> _Bag:
        import lightgbm

        # one query per (window, shopper); queries without a purchase teach a ranker nothing
        keep_x, keep_y, sizes = [], [], []
        for px, py, pu in parts:
            bounds = np.flatnonzero(np.diff(pu)) + 1
            for xs, ys in zip(np.split(px, bounds), np.split(py, bounds), strict=True):
                if ys.any():
                    keep_x.append(xs)
                    keep_y.append(ys)
                    sizes.append(len(ys))
        x, y = np.concatenate(keep_x), np.concatenate(keep_y).astype(int)
        c = self.config
        subsample = 0.8 if c.bag > 1 else 1.0
        models = []
        for b in range(c.bag):
            model = lightgbm.LGBMRanker(
                objective=c.model,
                n_estimators=c.max_iter,
                learning_rate=c.learning_rate,
                num_leaves=c.num_leaves,
                min_child_samples=c.min_child_samples,
                subsample=subsample,
                subsample_freq=1,
                colsample_bytree=subsample,
                random_state=self.seed + b,
                n_jobs=2,
                verbose=-1,
            )
            models.append(model.fit(x, y, group=sizes))  # the binary objective ignores the groups
        return _Bag(models)

    @staticmethod
    def _blend(x: np.ndarray) -> np.ndarray:
        """The sources' hand-made blend, ties broken by recent sales."""
        return x[:, FEATURES.index("blend")] + 1e-6 * x[:, FEATURES.index("pop_1d")]

    def _score(self, x: np.ndarray) -> np.ndarray:
        if self.model_ is not None:
            return self.model_.predict(x)
        return self._blend(x)  # too few labels to learn from (a short or sparse log)

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        src = self.sources_
        out = np.tile(src.popular[:k], (len(user_rows), 1))
        warm = np.flatnonzero(user_rows >= 0)
        if len(warm) == 0:
            return out
        pu, pi, x = src.candidates(user_rows[warm])
        score = self._score(x)
        order = np.lexsort((-self._blend(x), -score, pu))  # the model's ties (if it learned little) by the blend
        pu, pi = pu[order], pi[order]
        starts = np.searchsorted(pu, np.arange(len(warm)))
        ends = np.searchsorted(pu, np.arange(len(warm)), side="right")
        for j, (s, e) in enumerate(zip(starts, ends, strict=True)):
            items = pi[s:e][:k]
            if len(items) < k:
                extra = src.popular[~np.isin(src.popular, items)][: k - len(items)]
                items = np.concatenate([items, extra])
            out[warm[j]] = items
        return out
