"""A contract every ``PrecomputedStore`` (:mod:`engine.serving.precomputed_store`) meets: ``TestX(Contract)``.

The batch job writes entries in batches under a bundle version; serving reads one entry by (version, shopper,
parameters) and deletes every entry of a shopper on erasure or a session event; the job prunes the versions that
no longer serve. A store gives back exactly the bytes written, None for any key it does not hold (another version,
shopper or parameters), replaces an entry written again, and forgets a shopper in every version at once.
"""

from __future__ import annotations

from engine.serving.precomputed_store import PrecomputedStore

PARAMS = "n=8;k=4;classes=*;stock=1;g=abc"


class PrecomputedStoreContract:
    def make(self) -> PrecomputedStore:
        """An empty store."""
        raise NotImplementedError

    def test_an_entry_never_written_is_none(self):
        store = self.make()
        assert store.get("v1", "ps1-a", PARAMS) is None
        assert store.count() == 0 and store.delete_shoppers(["ps1-a"]) == 0

    def test_entries_come_back_byte_for_byte_under_their_own_key_only(self):
        store = self.make()
        assert store.put_many("v1", [("ps1-a", PARAMS, b"\x00set a"), ("ps1-b", PARAMS, b"set b")]) == 2
        assert store.get("v1", "ps1-a", PARAMS) == b"\x00set a" and store.get("v1", "ps1-b", PARAMS) == b"set b"
        assert store.get("v2", "ps1-a", PARAMS) is None  # another bundle: a promotion switches away from it
        assert store.get("v1", "ps1-a", PARAMS.replace("n=8", "n=4")) is None  # other parameters
        assert store.get("v1", "ps1-c", PARAMS) is None

    def test_writing_an_entry_again_replaces_it_and_an_empty_batch_is_harmless(self):
        store = self.make()
        store.put_many("v1", [("ps1-a", PARAMS, b"old")])
        store.put_many("v1", [("ps1-a", PARAMS, b"new")])
        assert store.put_many("v1", []) == 0
        assert store.get("v1", "ps1-a", PARAMS) == b"new" and store.count() == 1

    def test_deleting_a_shopper_removes_every_version_and_parameters_and_only_theirs(self):
        store = self.make()
        store.put_many("v1", [("ps1-a", PARAMS, b"1"), ("ps1-a", "other", b"2"), ("ps1-b", PARAMS, b"3")])
        store.put_many("v2", [("ps1-a", PARAMS, b"4")])
        assert store.count(shoppers=["ps1-a"]) == 3
        assert store.delete_shoppers(["ps1-a", "ps1-nobody"]) == 3
        assert store.get("v1", "ps1-a", PARAMS) is None and store.get("v2", "ps1-a", PARAMS) is None
        assert store.get("v1", "ps1-b", PARAMS) == b"3" and store.count(shoppers=["ps1-a"]) == 0

    def test_prune_keeps_only_the_named_versions(self):
        store = self.make()
        store.put_many("old", [("ps1-a", PARAMS, b"1"), ("ps1-b", PARAMS, b"2")])
        store.put_many("new", [("ps1-a", PARAMS, b"3")])
        assert store.count("old") == 2 and store.count("new") == 1
        assert store.prune({"new"}) == 2
        assert store.count() == 1 and store.get("new", "ps1-a", PARAMS) == b"3"
        assert store.get("old", "ps1-b", PARAMS) is None

    def test_count_and_prune_reach_every_shopper_of_a_large_store(self):
        store = self.make()
        store.put_many("old", [(f"ps1-{k:05d}", PARAMS, b"x") for k in range(2_005)])  # more than one read's keys
        store.put_many("new", [(f"ps1-{k:05d}", PARAMS, b"y") for k in range(0, 2_005, 2)])
        assert store.count() == 2_005 + 1_003 and store.count("new") == 1_003
        assert store.prune({"new"}) == 2_005
        assert store.count() == 1_003 and store.get("new", "ps1-02004", PARAMS) == b"y"
