"""The H&M reader on a tiny folder in its layout, and prices taken from a training period alone."""

import pandas as pd
import pytest

from features.readers import read_store
from features.readers.hm import read_hm
from features.split import prices_as_of, time_split


@pytest.fixture
def hm_folder(tmp_path):
    articles = pd.DataFrame(
        {
            "article_id": ["0108775015", "0108775044", "0110065001"],
            "product_code": ["0108775", "0108775", "0110065"],
            "product_type_name": ["Vest top", "Vest top", "Bra"],
            "colour_group_name": ["Black", "White", "Black"],
            "graphical_appearance_name": ["Solid", "Solid", "Solid"],
        }
    )
    articles.to_parquet(tmp_path / "articles.parquet")
    pd.DataFrame(
        {
            "t_dat": ["2020-09-20", "2020-09-20", "2020-09-21", "2020-09-22", "2020-09-22", "not a date"],
            "customer_id": ["a", "b", "a", "b", "c", "c"],
            "article_id": ["0108775015", "0108775044", "0108775015", "0108775015", "0999999999", "0110065001"],
            "price": [0.02, 0.03, 0.012, 0.01, 0.05, 0.04],
            "sales_channel_id": [2, 2, 1, 2, 1, 1],
        }
    ).to_parquet(tmp_path / "transactions_2020-09-20_to_2020-09-22.parquet")
    return tmp_path


def test_reader_maps_the_layout_and_counts_bad_rows(hm_folder):
    store = read_hm(hm_folder)
    assert store.attributes == ("class", "colour", "pattern")
    cat = store.catalogue.set_index("item_id")
    assert cat.loc["0108775044", "group"] == cat.loc["0108775015", "group"] == "0108775"
    assert cat.loc["0108775015", "class"] == "Vest top"
    # the unknown article and the unparsable date are rejected and counted; the other four rows load
    assert len(store.events) == 4
    assert store.reports["events"].rows_read == 6
    assert set(store.events["event_type"].astype(str)) == {"purchase"}
    assert store.events["price"].tolist() == pytest.approx([0.02, 0.03, 0.012, 0.01])
    assert store.events["channel"].astype(str).tolist() == ["online", "online", "store", "online"]


def test_the_competitions_csv_files_with_numeric_ids_read_the_same(hm_folder, tmp_path_factory):
    csv_folder = tmp_path_factory.mktemp("hm_csv")
    articles = pd.read_parquet(hm_folder / "articles.parquet")
    # read as numbers, the ids lose their leading zero: 0108775015 -> 108775015
    articles.assign(article_id=articles["article_id"].astype(int)).to_csv(csv_folder / "articles.csv", index=False)
    tx = pd.read_parquet(hm_folder / "transactions_2020-09-20_to_2020-09-22.parquet")
    tx.assign(article_id=tx["article_id"].astype(int)).to_csv(csv_folder / "transactions_train.csv", index=False)
    from_csv, from_parquet = read_store(csv_folder), read_hm(hm_folder)
    assert set(from_csv.catalogue["item_id"]) == {"0108775015", "0108775044", "0110065001"}
    pd.testing.assert_frame_equal(
        from_csv.events[["user_id", "item_id", "timestamp", "channel"]].astype(str),
        from_parquet.events[["user_id", "item_id", "timestamp", "channel"]].astype(str),
    )
    assert from_csv.reports["events"].rows_read == 6


def test_prices_come_from_the_training_period_only(hm_folder):
    store = read_hm(hm_folder)
    # the catalogue's price has seen the last day's sale price of 0108775015 (median of 0.02, 0.012, 0.01)
    assert store.catalogue.set_index("item_id").loc["0108775015", "price"] == pytest.approx(0.012)
    split = time_split(store.events, test_days=1)
    as_of = prices_as_of(store.catalogue, split.train).set_index("item_id")["price"]
    assert as_of["0108775015"] == pytest.approx(0.016)  # median of the two earlier prices
    assert as_of["0108775044"] == pytest.approx(0.03)
    assert pd.isna(as_of["0110065001"])  # never bought before the cutoff: no price known then


def test_logs_without_prices_keep_the_listed_prices():
    catalogue = pd.DataFrame({"item_id": ["x"], "price": [9.5]})
    events = pd.DataFrame({"item_id": ["x"]})
    assert prices_as_of(catalogue, events) is catalogue
