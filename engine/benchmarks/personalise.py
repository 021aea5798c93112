"""Personalisation benchmark: in-process latency of image sets made by preference maximisation.

Each timed request is for a different known shopper, so the set cache never answers it: the figure is the
full cost (condition draw, pool generation, latent optimisation, MMR selection, FAISS grounding, PNG
encoding). Repeat requests are timed separately: those are answered by the set cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.serving.config import PersonaliserConfig
from engine.serving.personaliser import Personaliser


@dataclass(frozen=True, kw_only=True)
class PersonaliseBench:
    bundle: str
    n: int
    threads: int
    optimised: bool
    fresh_ms: np.ndarray
    cached_ms: np.ndarray

    def to_dict(self) -> dict:
        def stats(x: np.ndarray) -> dict:
            return {
                "requests": len(x),
                "p50_ms": float(np.percentile(x, 50)),
                "p99_ms": float(np.percentile(x, 99)),
                "mean_ms": float(x.mean()),
            }

        return {
            "bundle": self.bundle,
            "n": self.n,
            "torch_threads": self.threads,
            "optimised": self.optimised,
            "fresh": stats(self.fresh_ms),
            "cached": stats(self.cached_ms),
        }

    def render(self) -> str:
        d = self.to_dict()
        f, c = d["fresh"], d["cached"]
        return (
            f"bundle {self.bundle}: image sets of {self.n}, torch threads {self.threads}, "
            f"preference maximisation {'on' if self.optimised else 'off'}\n"
            f"  new request   ({f['requests']:>4}): p50 {f['p50_ms']:7.1f} ms   p99 {f['p99_ms']:7.1f} ms   "
            f"mean {f['mean_ms']:7.1f} ms\n"
            f"  repeat (cache)({c['requests']:>4}): p50 {c['p50_ms']:7.3f} ms   p99 {c['p99_ms']:7.3f} ms"
        )


def run_personalise_benchmark(
    artifacts: Path,
    *,
    version: str | None = None,
    requests: int = 100,
    n: int = 8,
    threads: int = 1,
    warmup: int = 3,
    optimise: bool = True,
    seed: int = 0,
) -> PersonaliseBench:
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"no serving bundle under {artifacts}; pass --version or promote one")
    torch.set_num_threads(threads)
    personaliser = Personaliser(load_bundle(registry.path(version)), PersonaliserConfig(preference=optimise))
    users = personaliser.bundle.embeddings.user_ids
    pick = np.random.default_rng(seed).choice(len(users), min(len(users), requests + warmup), replace=False)
    chosen = [str(users[i]) for i in pick]
    for user in chosen[:warmup]:
        personaliser.image_set(user, n)
    fresh, cached = [], []
    for user in chosen[warmup:]:
        t = time.perf_counter()
        personaliser.image_set(user, n)
        fresh.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        personaliser.image_set(user, n)
        cached.append((time.perf_counter() - t) * 1000)
    return PersonaliseBench(
        bundle=version,
        n=n,
        threads=threads,
        optimised=personaliser.preference.available and optimise,
        fresh_ms=np.asarray(fresh),
        cached_ms=np.asarray(cached),
    )
