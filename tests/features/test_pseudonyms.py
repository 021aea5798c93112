"""Pseudonyms: keyed, stable, unlinkable without the key, and recognisable across a key rotation."""

import os
import stat

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.pseudonyms import (
    KEYRING_FILE,
    KeyringError,
    Pseudonymiser,
    load_keyring,
    load_or_create_keyring,
    pseudonymise_column,
    retire_key,
    rotate_keyring,
)

RING = Pseudonymiser({"1": b"k" * 32}, "1")


@given(st.text(min_size=1, max_size=128))
def test_a_pseudonym_is_stable_has_its_shape_and_never_holds_the_id(user):
    p = RING(user)
    assert p == RING(user) and Pseudonymiser.is_pseudonym(p) and len(p) <= 32
    assert user not in p.removeprefix("ps1-") or len(user) < 4


def test_another_key_gives_other_pseudonyms():
    other = Pseudonymiser({"1": b"x" * 32}, "1")
    assert RING("U00001") != other("U00001")
    assert len({RING(f"U{k:05d}") for k in range(2000)}) == 2000


def test_the_keyring_is_created_once_and_readable_by_its_owner_only(tmp_path):
    first = load_or_create_keyring(tmp_path)
    again = load_or_create_keyring(tmp_path)
    assert first("a") == again("a")
    assert stat.S_IMODE(os.stat(tmp_path / KEYRING_FILE).st_mode) == 0o600


def test_rotation_keeps_the_old_key_for_lookups_until_it_is_retired(tmp_path):
    old = load_or_create_keyring(tmp_path)
    rotated = rotate_keyring(tmp_path)
    assert rotated.active == "2" and rotated("a") != old("a")
    assert rotated.candidates("a") == [rotated("a"), old("a")]  # the active key's first
    assert load_keyring(tmp_path / KEYRING_FILE).candidates("a") == rotated.candidates("a")
    with pytest.raises(KeyringError, match="active key"):
        retire_key(tmp_path, "2")
    retired = retire_key(tmp_path, "1")
    assert retired.candidates("a") == [rotated("a")]


def test_a_broken_keyring_says_what_it_should_hold(tmp_path):
    (tmp_path / KEYRING_FILE).write_text("{}")
    with pytest.raises(KeyringError, match="active"):
        load_or_create_keyring(tmp_path)
    with pytest.raises(KeyringError, match="at least 16"):
        Pseudonymiser({"1": b"short"}, "1")


def test_a_column_is_pseudonymised_once():
    column = pd.Series(["a", "b", "a", RING("c")])
    out = pseudonymise_column(column, RING)
    assert list(out) == [RING("a"), RING("b"), RING("a"), RING("c")]
