"""Precomputed-set benchmark: what serving a stored set costs against making it, and whether they are equal.

For the first ``requests`` shoppers the batch job renders (in its order), one :class:`Service` reads the
precomputed store first and another makes every set afresh; both ask for the same sets, interleaved so that both
see the same machine load. The report counts the stored sets served, those equal to the fresh ones (ids,
conditions, scores, explanations, items), and the latency of each path.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.serving.precomputed import PrecomputedSets, known_shoppers
from engine.serving.precomputed_store import PrecomputedStore
from engine.serving.service import Service, SharedState
from engine.serving.types import ImageSet


@dataclass(frozen=True, kw_only=True)
class PrecomputedBench:
    bundle: str
    store: str
    requests: int
    hits: int  # stored sets served
    equal: int  # of those, equal to the set made afresh
    stored_ms: np.ndarray
    fresh_ms: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        def stats(x: np.ndarray) -> dict[str, float]:
            return {"p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99))}

        return {
            "bundle": self.bundle,
            "store": self.store,
            "requests": self.requests,
            "hits": self.hits,
            "equal_to_fresh": self.equal,
            "stored": stats(self.stored_ms),
            "fresh": stats(self.fresh_ms),
        }

    def render(self) -> str:
        d = self.to_dict()
        return "\n".join(
            [
                f"bundle {self.bundle}, {self.store}: {self.requests} known shoppers' sets",
                f"  served from the store: {self.hits}/{self.requests}; equal to the fresh set: "
                f"{self.equal}/{self.hits}",
                f"  from the store  p50 {d['stored']['p50_ms']:8.2f} ms   p99 {d['stored']['p99_ms']:8.2f} ms",
                f"  made afresh     p50 {d['fresh']['p50_ms']:8.2f} ms   p99 {d['fresh']['p99_ms']:8.2f} ms",
            ]
        )


def run_precomputed_benchmark(
    artifacts: Path, *, store: PrecomputedStore, key: bytes, requests: int = 30, n: int = 8, neighbours: int = 4
) -> PrecomputedBench:
    """Serve the first ``requests`` known shoppers' sets from ``store`` and afresh (one torch thread each)."""
    torch.set_num_threads(1)
    served = Service(artifacts, shared=SharedState(precomputed=store, image_key=key), watch_seconds=None)
    fresh = Service(artifacts, shared=SharedState(image_key=key), watch_seconds=None)
    if served.load_current() is None or fresh.load_current() is None:
        raise ValueError(f"no serving bundle under {artifacts}: {served.last_error}")
    fresh.precomputed = PrecomputedSets(None, fresh.config)  # every set made afresh
    shoppers = known_shoppers(served.personaliser)[:requests]
    stored_ms, fresh_ms, hits, equal = [], [], 0, 0
    for shopper in shoppers:
        started = time.perf_counter()
        a = served.image_set(shopper, n, neighbours=neighbours).images
        stored_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        b = fresh.image_set(shopper, n, neighbours=neighbours).images
        fresh_ms.append(1000 * (time.perf_counter() - started))
        if isinstance(a, ImageSet) and a.precomputed:
            hits += 1
            equal += dataclasses.replace(a, precomputed=False) == b
    return PrecomputedBench(
        bundle=served.personaliser.version,
        store=getattr(store, "where", type(store).__name__),
        requests=len(shoppers),
        hits=hits,
        equal=equal,
        stored_ms=np.array(stored_ms),
        fresh_ms=np.array(fresh_ms),
    )
