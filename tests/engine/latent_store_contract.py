"""A contract every :class:`engine.serving.latents.LatentStore` meets (``TestX(LatentStoreContract)``).

Serving writes a set's latent codes in one batch when it makes (or serves again) the set, and reads one code
back per image it renders, possibly from another thread (or, with a shared store such as Redis, another
worker). A store gives back exactly the bytes written under a key, None for a key it does not hold, keeps keys
apart, accepts a key written again (the same bytes: keys are content digests) and an empty batch, and loses no
code to concurrent writers.
"""

from __future__ import annotations

import threading

import numpy as np

from engine.serving.latents import LatentStore, latent_bytes, latent_from_bytes


def code(seed: int, z_dim: int = 64) -> bytes:
    return latent_bytes(np.random.default_rng(seed).standard_normal(z_dim).astype(np.float32))


class LatentStoreContract:
    def make(self) -> LatentStore:
        """An empty store."""
        raise NotImplementedError

    def test_a_key_never_written_is_none(self):
        assert self.make().get("never-written") is None

    def test_codes_come_back_byte_for_byte(self):
        store = self.make()
        store.put_many({"a": code(1), "b": code(2, z_dim=16)})
        assert store.get("a") == code(1) and store.get("b") == code(2, z_dim=16)
        z = latent_from_bytes(store.get("a") or b"", 64)
        assert z is not None and np.array_equal(z, np.frombuffer(code(1), "<f2").astype(np.float32))

    def test_writing_a_key_again_and_an_empty_batch_are_harmless(self):
        store = self.make()
        store.put_many({"a": code(1)})
        store.put_many({"a": code(1)})
        store.put_many({})
        assert store.get("a") == code(1) and store.get("b") is None

    def test_concurrent_writers_lose_no_code(self):
        store = self.make()
        writers, per_writer = 8, 50
        start = threading.Barrier(writers)

        def write(w: int) -> None:
            start.wait()
            for m in range(per_writer):
                store.put_many({f"w{w}-{m}": code(w * per_writer + m, z_dim=8)})

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in range(writers):
            for m in range(per_writer):
                assert store.get(f"w{w}-{m}") == code(w * per_writer + m, z_dim=8)
