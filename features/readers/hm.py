"""Reader for the H&M Personalized Fashion Recommendations layout.

Expected files (as in ``../shared/datasets/hm_fashion``): ``articles.parquet`` (the competition's
articles table), one or more ``transactions*.parquet`` (t_dat, customer_id, article_id, price,
sales_channel_id), ``images/<first 3 digits>/<article_id>.jpg`` and optionally ``images_manifest.csv``.
The competition's own CSV files (``articles.csv``, ``transactions_train.csv``) are read too, when there are
no Parquet files. Article ids are 10-digit strings; an id stored as a number (which loses the leading zero,
as ``valid_split.parquet`` did) is zero-padded back, so logs, attributes and images still join.

Mapping to the common schema: a customer is a user; each purchase row is a ``purchase`` event at
midnight UTC of ``t_dat`` (H&M logs have no views or carts, and no time of day); a customer's
purchases on one day form one session; the conditioning attributes are
``class`` = product_type_name, ``colour`` = colour_group_name, ``pattern`` = graphical_appearance_name.
An article's price is the median price it was bought at (NaN if never bought in the loaded logs); each
event also keeps the price paid, so that a time-split evaluation can take prices from its training period
alone (``features.split.prices_as_of``), and its channel (``online`` or ``store``). An article's product
family (``group``) is its product_code (the same garment in other colours).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import EVENT_TYPES, StoreData
from features.validation import validate_catalogue, validate_events

logger = logging.getLogger(__name__)

HM_ATTRIBUTE_COLUMNS: dict[str, str] = {
    "class": "product_type_name",
    "colour": "colour_group_name",
    "pattern": "graphical_appearance_name",
}
HM_CHANNELS = {1: "store", 2: "online"}  # sales_channel_id; 1 = store, 2 = online, as in SOURCE.md


def _image_names(path: Path) -> set[str]:
    manifest = path / "images_manifest.csv"
    if manifest.is_file():
        return set(pd.read_csv(manifest, usecols=["article_id"], dtype=str)["article_id"])
    images = path / "images"
    return {p.stem for p in images.glob("*/*.jpg")} if images.is_dir() else set()


def _article_ids(values: pd.Series) -> pd.Series:
    """Article ids as the 10-character strings the images are named by, zero-padding numeric ones."""
    ids = values.astype("string").str.strip()
    short = (ids.str.len() < 10).fillna(False)
    if not short.any():  # the usual case, and the cheap one
        return ids
    pad = short & ids.str.fullmatch(r"\d+").fillna(False)
    return ids.where(~pad, ids.str.zfill(10))


def _read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if path.suffix == ".csv":
        ids = {"article_id": "string", "customer_id": "string", "product_code": "string", "t_dat": "string"}
        return pd.read_csv(path, usecols=columns, dtype=ids)
    return pd.read_parquet(path, columns=columns)


def read_hm(path: Path, *, transactions: str = "transactions*") -> StoreData:
    """Read the H&M layout at ``path``; bad rows are counted in ``StoreData.reports``, the rest loads."""
    path = Path(path)
    articles_path = next((p for p in (path / "articles.parquet", path / "articles.csv") if p.is_file()), None)
    tx_paths = sorted(path.glob(f"{transactions}.parquet")) or sorted(path.glob(f"{transactions}.csv"))
    if articles_path is None or not tx_paths:
        raise FileNotFoundError(
            f"{path} is not an H&M data folder: it needs articles.parquet (or .csv) and {transactions}.parquet "
            "(or .csv) (see ../shared/datasets/hm_fashion/SOURCE.md)."
        )
    articles = _read_table(articles_path, ["article_id", "product_code", *HM_ATTRIBUTE_COLUMNS.values()])
    articles["article_id"] = _article_ids(articles["article_id"])
    tx = pd.concat([_read_table(p) for p in tx_paths], ignore_index=True)
    missing = {"t_dat", "customer_id", "article_id"} - set(tx.columns)
    if missing:
        raise ValueError(f"{tx_paths[0]}: transactions lack columns {sorted(missing)}")
    tx["article_id"] = _article_ids(tx["article_id"])

    raw_cat = pd.DataFrame({"item_id": articles["article_id"].astype("string")})
    for role, column in HM_ATTRIBUTE_COLUMNS.items():
        raw_cat[role] = articles[column].astype("string")
    raw_cat["group"] = articles["product_code"].astype("string")
    if "price" in tx:
        raw_cat["price"] = raw_cat["item_id"].map(tx.groupby("article_id")["price"].median().astype(float))
    have_image = _image_names(path)
    ids = raw_cat["item_id"].astype(str)
    raw_cat["image"] = np.where(ids.isin(have_image), "images/" + ids.str.slice(0, 3) + "/" + ids + ".jpg", "")
    attributes = tuple(HM_ATTRIBUTE_COLUMNS)
    catalogue, cat_report = validate_catalogue(raw_cat, source=str(articles_path), attributes=attributes, first_line=1)

    day = pd.to_datetime(tx["t_dat"].astype("string"), errors="coerce", utc=True)
    raw_ev = pd.DataFrame(
        {
            "user_id": tx["customer_id"].astype("string"),
            "session_id": tx["customer_id"].astype("string") + ":" + day.dt.strftime("%Y-%m-%d").astype("string"),
            "item_id": tx["article_id"].astype("string"),
            "event_type": "purchase",
            "timestamp": day,
        }
    )
    if "price" in tx:
        raw_ev["price"] = tx["price"]
    if "sales_channel_id" in tx:
        raw_ev["channel"] = tx["sales_channel_id"].map(HM_CHANNELS).astype("string").fillna("")
    # An unparsable date leaves session_id empty too; report it under its real cause, the date.
    raw_ev.loc[day.isna(), "session_id"] = tx.loc[day.isna(), "customer_id"].astype("string") + ":?"
    events, ev_report = validate_events(
        raw_ev,
        source=", ".join(str(p) for p in tx_paths),
        event_types=EVENT_TYPES,
        known_items=pd.Index(catalogue["item_id"]),
        first_line=1,
    )
    for report in (cat_report, ev_report):
        report.log()
    return StoreData(
        name="hm_fashion",
        events=events,
        catalogue=catalogue,
        attributes=attributes,
        image_root=path,
        reports={"catalogue": cat_report, "events": ev_report},
    )
