"""Personalisation benchmark: in-process latency of image sets made by preference maximisation.

Each timed request is for a different known shopper, so the set cache never answers it: the figure is the
full cost (ranking, condition draw, pool generation, latent optimisation, MMR selection, FAISS grounding, PNG
encoding). Repeat requests are timed separately: those are answered by the set cache. What the bundle's
ranker adds is measured two ways on the same shoppers: its own call alone, and the same sets made again by a
Personaliser that ranks with the embeddings instead (``ranker=False``), interleaved so that both see the
same machine load.
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
    ranker_ms: np.ndarray | None = None  # the ranker's call alone, per fresh request (None: no ranker)
    without_ranker_ms: np.ndarray | None = None  # the same sets, ranked by the embeddings

    def to_dict(self) -> dict:
        def stats(x: np.ndarray) -> dict:
            return {
                "requests": len(x),
                "p50_ms": float(np.percentile(x, 50)),
                "p99_ms": float(np.percentile(x, 99)),
                "mean_ms": float(x.mean()),
            }

        out = {
            "bundle": self.bundle,
            "n": self.n,
            "torch_threads": self.threads,
            "optimised": self.optimised,
            "fresh": stats(self.fresh_ms),
            "cached": stats(self.cached_ms),
        }
        if self.ranker_ms is not None and self.without_ranker_ms is not None:
            out["ranker_alone"] = stats(self.ranker_ms)
            out["fresh_without_ranker"] = stats(self.without_ranker_ms)
            out["ranker_adds_p99_ms"] = out["fresh"]["p99_ms"] - out["fresh_without_ranker"]["p99_ms"]
        return out

    def render(self) -> str:
        d = self.to_dict()
        f, c = d["fresh"], d["cached"]
        text = (
            f"bundle {self.bundle}: image sets of {self.n}, torch threads {self.threads}, "
            f"preference maximisation {'on' if self.optimised else 'off'}\n"
            f"  new request   ({f['requests']:>4}): p50 {f['p50_ms']:7.1f} ms   p99 {f['p99_ms']:7.1f} ms   "
            f"mean {f['mean_ms']:7.1f} ms\n"
            f"  repeat (cache)({c['requests']:>4}): p50 {c['p50_ms']:7.3f} ms   p99 {c['p99_ms']:7.3f} ms"
        )
        if "ranker_alone" in d:
            r, w = d["ranker_alone"], d["fresh_without_ranker"]
            text += (
                f"\n  ranker alone  ({r['requests']:>4}): p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms"
                f"\n  without ranker({w['requests']:>4}): p50 {w['p50_ms']:7.1f} ms   p99 {w['p99_ms']:7.1f} ms   "
                f"→ the ranker adds {d['ranker_adds_p99_ms']:+.1f} ms to the p99"
            )
        else:
            text += "\n  (this bundle has no ranker: shoppers are ranked by the embeddings)"
        return text


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
    bundle = load_bundle(registry.path(version))
    personaliser = Personaliser(bundle, PersonaliserConfig(preference=optimise))
    without = Personaliser(bundle, PersonaliserConfig(preference=optimise, ranker=False))
    users = personaliser.bundle.embeddings.user_ids
    pick = np.random.default_rng(seed).choice(len(users), min(len(users), requests + warmup), replace=False)
    chosen = [str(users[i]) for i in pick]
    for user in chosen[:warmup]:
        personaliser.image_set(user, n)
        without.image_set(user, n)
    fresh, cached, ranker, plain = [], [], [], []

    def timed(call) -> float:
        t = time.perf_counter()
        call()
        return (time.perf_counter() - t) * 1000

    for user in chosen[warmup:]:
        fresh.append(timed(lambda: personaliser.image_set(user, n)))  # noqa: B023 - called at once
        cached.append(timed(lambda: personaliser.image_set(user, n)))  # noqa: B023
        if personaliser.ranker is not None:
            ranker.append(timed(lambda: personaliser.rank(user)))  # noqa: B023
            plain.append(timed(lambda: without.image_set(user, n)))  # noqa: B023
    return PersonaliseBench(
        bundle=version,
        n=n,
        threads=threads,
        optimised=personaliser.preference.available and optimise,
        fresh_ms=np.asarray(fresh),
        cached_ms=np.asarray(cached),
        ranker_ms=np.asarray(ranker) if ranker else None,
        without_ranker_ms=np.asarray(plain) if plain else None,
    )
